"""Demo data for statestore: delivery status, patient records and shipments on compacted topics.

Run through ``scripts/seed-demo``. The records are a function of ``--seed`` alone,
so two runs with the same options produce the same topics' content (re-producing
is harmless: the topics are compacted).
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "schemas"
PATIENT_SCHEMA_V1 = SCHEMAS / "patient.v1.avsc"
PATIENT_SCHEMA_V2 = SCHEMAS / "patient.avsc"
SHIPMENT_PROTO = "logistics/v1/shipment.proto"  # imports logistics/v1/address.proto
DEFAULT_REGISTRY = "http://127.0.0.1:8081/apis/ccompat/v7"
REGISTRY_TIMEOUT_S = 10.0  # per schema registry request

DELIVERIES_TOPIC = "delivery.status"
PATIENTS_TOPIC = "patient.records"
SHIPMENTS_TOPIC = "shipment.state"
DELIVERY_PARTITIONS = 12
PATIENT_PARTITIONS = 3
SHIPMENT_PARTITIONS = 6

# A fixed clock keeps the values a function of the seed alone.
EPOCH = datetime(2025, 3, 3, 7, 0, tzinfo=UTC)

DELIVERY_STEPS = ("created", "picked_up", "in_transit", "out_for_delivery")
COURIERS = ("Amira Haddad", "Ben Okafor", "Chloe Martin", "Dev Patel", "Elena Rossi", "Finn Murphy")
CITIES = (
    ("London", "EC1A"), ("Manchester", "M1"), ("Leeds", "LS1"), ("Bristol", "BS1"),
    ("Glasgow", "G1"), ("Birmingham", "B1"), ("Edinburgh", "EH1"), ("Cardiff", "CF10"),
)  # fmt: skip
PATIENT_STEPS = ("admitted", "under_observation", "in_treatment", "recovering")
WARDS = ("Cardiology", "Oncology", "Maternity", "Orthopaedics", "Respiratory", "Acute Medicine")
FIRST_NAMES = (
    "Ada",
    "Bilal",
    "Carmen",
    "Dmitri",
    "Esther",
    "Farah",
    "Gustav",
    "Hana",
    "Idris",
    "Jun",
)
LAST_NAMES = ("Abbott", "Bello", "Castillo", "Dubois", "Eriksen", "Fischer", "Gomez", "Hughes")
ALLERGIES = ("penicillin", "latex", "peanuts", "aspirin", "ibuprofen", "shellfish", "codeine")
CARRIERS = ("Northway Freight", "Parcelfast", "Swift Courier Co", "Harbour Logistics")
HUBS = ("Daventry hub", "Warrington hub", "Bristol depot", "Motherwell hub", "Leeds depot")


@dataclass(frozen=True, slots=True)
class Event:
    """One record to produce: ``value`` None is a tombstone."""

    at: datetime
    key: str
    value: dict[str, Any] | None


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(prefix: str, i: int, n: int) -> str:
    return f"{prefix}-{i:0{max(4, len(str(n)))}d}"


def deliveries(n: int, rng: random.Random) -> Iterator[Event]:
    """Each delivery moves through its statuses; some fail, some are cancelled (deleted)."""
    for i in range(1, n + 1):
        key = _key("d", i, n)
        city, area = rng.choice(CITIES)
        postcode = f"{area} {rng.randint(1, 9)}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"
        t = EPOCH + timedelta(minutes=rng.randint(0, 8 * 60))
        eta = t + timedelta(hours=rng.randint(4, 48))
        courier = rng.choice(COURIERS)
        steps = list(DELIVERY_STEPS[: rng.randint(1, len(DELIVERY_STEPS))])
        roll = rng.random()
        if len(steps) == len(DELIVERY_STEPS):
            steps.append("failed" if roll < 0.1 else "delivered")
        for step in steps:
            if step == "failed":
                eta = t + timedelta(days=1)
            yield Event(t, key, {
                "status": step,
                "courier": courier,
                "address": {"city": city, "postcode": postcode},
                "eta": _iso(eta),
                "updated_at": _iso(t),
            })  # fmt: skip
            t += timedelta(minutes=rng.randint(5, 180))
        if steps[-1] in ("created", "picked_up") and roll < 0.25:
            yield Event(t, key, None)  # cancelled: the delivery is deleted


def patients(n: int, rng: random.Random) -> Iterator[Event]:
    """Each patient is updated as treatment goes on; some are discharged and erased."""
    for i in range(1, n + 1):
        key = _key("p", i, n)
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        admitted = EPOCH - timedelta(hours=rng.randint(0, 14 * 24))
        t = admitted
        ward = rng.choice(WARDS)
        allergies = sorted(rng.sample(ALLERGIES, rng.choice((0, 0, 1, 1, 2, 3))))
        steps = list(PATIENT_STEPS[: rng.randint(1, len(PATIENT_STEPS))])
        if len(steps) == len(PATIENT_STEPS):
            steps.append("discharged")
        for step in steps:
            if step == "in_treatment" and rng.random() < 0.3:
                ward = rng.choice(WARDS)  # moved to another ward
            if rng.random() < 0.1:
                allergies = sorted({*allergies, rng.choice(ALLERGIES)})  # newly recorded
            yield Event(t, key, {
                "name": name,
                "ward": ward,
                "admitted_at": _iso(admitted),
                "status": step,
                "allergies": allergies,
                "updated_at": _iso(t),
            })  # fmt: skip
            t += timedelta(hours=rng.randint(1, 48))
        if steps[-1] == "discharged" and rng.random() < 0.5:
            yield Event(t, key, None)  # discharged and erased


def shipments(n: int, rng: random.Random) -> Iterator[Event]:
    """Each shipment is scanned on its way and delivered; some are cancelled (deleted).

    Values use the Shipment message's field names (logistics/v1/shipment.proto)."""
    for i in range(1, n + 1):
        key = _key("s", i, n)
        city, area = rng.choice(CITIES)
        postcode = f"{area} {rng.randint(1, 9)}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"
        t = EPOCH + timedelta(minutes=rng.randint(0, 10 * 60))
        carrier = rng.choice(CARRIERS)
        weight = rng.randint(100, 30_000)
        steps = ["PICKED_UP"] + ["IN_TRANSIT"] * rng.randint(0, 3)
        if len(steps) > 1 and rng.random() < 0.7:
            steps.append("OUT_FOR_DELIVERY")
            if rng.random() < 0.8:
                steps.append("DELIVERED")
        scans: list[str] = []
        for step in steps:
            place = city if step in ("OUT_FOR_DELIVERY", "DELIVERED") else rng.choice(HUBS)
            scans.append(f"{_iso(t)} {step.lower()} {place}")
            yield Event(t, key, {
                "shipment_id": key,
                "status": step,
                "carrier": carrier,
                "weight_grams": weight,
                "updated_at": _iso(t),
                "destination": {"city": city, "postcode": postcode, "country": "GB"},
                "scans": list(scans),
            })  # fmt: skip
            t += timedelta(minutes=rng.randint(20, 600))
        if len(steps) == 1 and rng.random() < 0.3:
            yield Event(t, key, None)  # cancelled before it left the first depot


def in_time_order(events: Iterator[Event]) -> list[Event]:
    """Interleave the keys as they would happen; each key keeps its own order (stable sort)."""
    return sorted(events, key=lambda e: e.at)


@dataclass(frozen=True, slots=True)
class Summary:
    topic: str
    records: int
    keys: int
    tombstones: int
    live: int

    def line(self) -> str:
        return (
            f"{self.topic}: produced {self.records} records for {self.keys} keys "
            f"({self.tombstones} tombstones) -> {self.live} live keys"
        )


def summarise(topic: str, events: list[Event]) -> Summary:
    last: dict[str, bool] = {}
    for e in events:
        last[e.key] = e.value is not None
    tombstones = sum(1 for e in events if e.value is None)
    return Summary(topic, len(events), len(last), tombstones, sum(last.values()))


# -- Kafka ----------------------------------------------------------------------------------


def ensure_topics(admin: Any, wanted: dict[str, int], timeout: float) -> None:
    """Create the compacted topics that are missing; leave existing ones as they are."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    existing = admin.list_topics(timeout=timeout).topics
    missing = [t for t in wanted if t not in existing]
    for topic in wanted:
        if topic in existing:
            have = len(existing[topic].partitions)
            note = "" if have == wanted[topic] else f" (wanted {wanted[topic]}; left as is)"
            print(f"{topic}: exists with {have} partitions{note}")
    if not missing:
        return
    futures = admin.create_topics(
        [
            NewTopic(
                t,
                num_partitions=wanted[t],
                replication_factor=-1,
                config={"cleanup.policy": "compact"},
            )
            for t in missing
        ],
        request_timeout=timeout,
    )
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout)
            print(f"{topic}: created with {wanted[topic]} partitions (cleanup.policy=compact)")
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            print(f"{topic}: exists (created concurrently)")


def json_values(events: list[Event]) -> list[bytes | None]:
    return [
        None if e.value is None else json.dumps(e.value, separators=(",", ":")).encode()
        for e in events
    ]


def registry_client(registry_url: str, timeout: float) -> Any:
    """A schema registry client that gives up on a registry that does not answer."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    # Without a timeout the client waits forever on a registry that accepted the
    # connection but does not answer. A request that failed or timed out is retried once.
    return SchemaRegistryClient(
        {"url": registry_url, "timeout": min(timeout, REGISTRY_TIMEOUT_S), "max.retries": 1}
    )


def avro_values(
    events: list[Event], topic: str, registry_url: str, timeout: float
) -> list[bytes | None]:
    """Patients in Avro through the schema registry: version 1 (no ward) for the first half
    of the history, version 2 (adds ``ward``, default "unassigned") after it — a schema that
    evolved while the topic was live."""
    from confluent_kafka.schema_registry import Schema, topic_subject_name_strategy
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    client = registry_client(registry_url, timeout)
    v1, v2 = (
        AvroSerializer(
            client,
            Schema(path.read_text(), "AVRO"),
            # <topic>-value, without first asking for a topic association (an
            # endpoint Apicurio's ccompat API does not have: it answers 404, and
            # now and then not at all).
            conf={"subject.name.strategy": topic_subject_name_strategy},
        )
        for path in (PATIENT_SCHEMA_V1, PATIENT_SCHEMA_V2)
    )
    ctx = SerializationContext(topic, MessageField.VALUE)
    cut = len(events) // 2
    out: list[bytes | None] = []
    for i, e in enumerate(events):
        if e.value is None:
            out.append(None)
        elif i < cut:
            out.append(v1({k: v for k, v in e.value.items() if k != "ward"}, ctx))
        else:
            out.append(v2(e.value, ctx))
    return out


def shipment_class() -> Any:
    """The Shipment message class, generated from schemas/ by protoc (grpcio-tools)."""
    try:
        import google.protobuf  # noqa: F401
        import grpc_tools  # noqa: F401
    except ImportError as exc:
        raise SystemExit(
            f"seed-demo: the shipments topic needs protobuf and grpcio-tools ({exc}); "
            "install them with: pip install 'statestore[protobuf]'"
        ) from None
    with tempfile.TemporaryDirectory(prefix="seed-demo-proto-") as out:
        # `python -m grpc_tools.protoc` adds the well-known types (google/protobuf/*) itself.
        done = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{SCHEMAS}", f"--python_out={out}",
             SHIPMENT_PROTO, "logistics/v1/address.proto"],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"seed-demo: protoc failed on {SHIPMENT_PROTO}: {done.stderr.strip()}")
        sys.path.insert(0, out)
        try:
            return importlib.import_module("logistics.v1.shipment_pb2").Shipment
        finally:
            sys.path.remove(out)


def protobuf_values(
    events: list[Event], topic: str, registry_url: str, timeout: float
) -> list[bytes | None]:
    """Shipments in Protobuf through the schema registry: the Shipment schema under
    ``<topic>-value``, logistics/v1/address.proto registered as its reference."""
    from confluent_kafka.schema_registry import topic_subject_name_strategy
    from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    from google.protobuf import json_format

    shipment = shipment_class()
    serialize = ProtobufSerializer(
        shipment,
        registry_client(registry_url, timeout),
        # The same subject strategy as the Avro patients, for the same reason.
        conf={"use.deprecated.format": False, "subject.name.strategy": topic_subject_name_strategy},
    )
    ctx = SerializationContext(topic, MessageField.VALUE)
    return [
        None if e.value is None else serialize(json_format.ParseDict(e.value, shipment()), ctx)
        for e in events
    ]


def produce(producer: Any, topic: str, events: list[Event], values: list[bytes | None]) -> None:
    errors: list[str] = []

    def report(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(f"{msg.key()!r}: {err}")

    for e, value in zip(events, values, strict=True):
        while True:
            try:
                producer.produce(topic, key=e.key.encode(), value=value, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.5)  # the local queue is full: let deliveries drain
        producer.poll(0)
    left = producer.flush(60)
    if left or errors:
        raise SystemExit(f"{topic}: {left} records not delivered; first errors: {errors[:3]}")


def _http_errors() -> tuple[type[Exception], ...]:
    """The HTTP errors the registry client raises: httpx's, or httpx2's where
    confluent-kafka uses that (it does when both are installed)."""
    import httpx

    errors: list[type[Exception]] = [httpx.HTTPError]
    try:
        import httpx2

        errors.append(httpx2.HTTPError)
    except ImportError:
        pass
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="seed-demo", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--deliveries", type=int, default=1000, help="delivery keys (default 1000)")
    parser.add_argument("--patients", type=int, default=200, help="patient keys (default 200)")
    parser.add_argument(
        "--shipments", type=int, default=3000, help="shipment keys, in Protobuf (default 3000)"
    )
    parser.add_argument(
        "--bootstrap-servers", default="127.0.0.1:9092", help="Kafka (default 127.0.0.1:9092)"
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument(
        "--topic-prefix", default="", help="prepended to every topic name (for tests)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for Kafka, and (10 at most) for each schema registry answer (default 30)",
    )
    parser.add_argument(
        "--patients-format",
        choices=("avro", "json"),
        default="avro",
        help="patient records in Avro through the schema registry (default) or JSON",
    )
    parser.add_argument(
        "--registry-url",
        default=DEFAULT_REGISTRY,
        help=f"schema registry (default {DEFAULT_REGISTRY})",
    )
    args = parser.parse_args(argv)
    if args.deliveries < 0 or args.patients < 0 or args.shipments < 0:
        parser.error("--deliveries, --patients and --shipments must be 0 or more")

    from confluent_kafka import KafkaException, Producer
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    registry_errors = (SchemaRegistryError, *_http_errors())
    rng = random.Random(args.seed)
    topics = {
        args.topic_prefix + DELIVERIES_TOPIC: (
            DELIVERY_PARTITIONS,
            in_time_order(deliveries(args.deliveries, rng)),
        ),
        args.topic_prefix + PATIENTS_TOPIC: (
            PATIENT_PARTITIONS,
            in_time_order(patients(args.patients, rng)),
        ),
        args.topic_prefix + SHIPMENTS_TOPIC: (
            SHIPMENT_PARTITIONS,
            in_time_order(shipments(args.shipments, rng)),
        ),
    }
    conf = {"bootstrap.servers": args.bootstrap_servers}
    try:
        ensure_topics(AdminClient(conf), {t: n for t, (n, _) in topics.items()}, args.timeout)
        producer = Producer({
            **conf,
            "enable.idempotence": True,  # keeps each key's updates in order across retries
            "partitioner": "murmur2_random",  # the Java client's partitioning of keys
            "linger.ms": 20,
            "message.timeout.ms": int(args.timeout * 1000),
        })  # fmt: skip
        for topic, (_, events) in topics.items():
            if topic.endswith(SHIPMENTS_TOPIC):
                values = protobuf_values(events, topic, args.registry_url, args.timeout)
            elif topic.endswith(PATIENTS_TOPIC) and args.patients_format == "avro":
                values = avro_values(events, topic, args.registry_url, args.timeout)
            else:
                values = json_values(events)
            produce(producer, topic, events, values)
            print(summarise(topic, events).line())
    except KafkaException as exc:
        print(f"seed-demo: Kafka at {args.bootstrap_servers} failed: {exc}", file=sys.stderr)
        return 1
    except registry_errors as exc:
        # An HTTP client's error: the registry refused the connection or did not answer in time
        print(
            f"seed-demo: schema registry at {args.registry_url} failed: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
