"""scripts/seed-demo against the local broker."""

from __future__ import annotations

import re
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import status_json, view_status
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from statestore import StateStore, load_config
from tests.support.config import write_config
from tests.support.kafka import Topics
from tests.support.processes import REPO, run

pytestmark = [pytest.mark.integration, pytest.mark.registry]

SEED_DEMO = REPO / "scripts" / "seed-demo"
PRODUCED = re.compile(
    r"^(\S+): produced (\d+) records for (\d+) keys \((\d+) tombstones\) -> (\d+) live keys$", re.M
)


@pytest.fixture
def prefix(topics: Topics) -> Iterator[str]:
    """A unique topic prefix; the demo topics made under it are deleted afterwards."""
    value = f"test.seed.{uuid.uuid4().hex[:8]}."
    yield value
    topics.delete([value + "delivery.status", value + "patient.records", value + "shipment.state"])


REGISTRY = "http://127.0.0.1:8081/apis/ccompat/v7"
SIZES = ["--deliveries", "40", "--patients", "15", "--shipments", "25"]
PATIENT_SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "patient.avsc"


def seed(prefix: str, cwd: Path, *extra: str) -> dict[str, tuple[int, int, int, int]]:
    result = run(
        ["--topic-prefix", prefix, *SIZES, *extra],
        cwd,
        exe=SEED_DEMO,
    )
    assert result.returncode == 0, result.stderr
    return {
        m[1]: (int(m[2]), int(m[3]), int(m[4]), int(m[5])) for m in PRODUCED.finditer(result.stdout)
    }


def test_seed_demo_creates_compacted_topics_and_produces(
    admin: AdminClient, prefix: str, tmp_path: Path
) -> None:
    """seed-demo creates the three compacted topics (12, 3 and 6 partitions) and fills them with updates and tombstones."""
    produced = seed(prefix, tmp_path, "--seed", "7")

    deliveries, patients = prefix + "delivery.status", prefix + "patient.records"
    shipments = prefix + "shipment.state"
    assert set(produced) == {deliveries, patients, shipments}
    for topic, keys in ((deliveries, 40), (patients, 15), (shipments, 25)):
        records, key_count, tombstones, live = produced[topic]
        assert key_count == keys
        assert records > keys  # several updates per key
        assert tombstones > 0
        assert live == keys - tombstones
    metadata = admin.list_topics(timeout=15).topics
    assert len(metadata[deliveries].partitions) == 12
    assert len(metadata[patients].partitions) == 3
    assert len(metadata[shipments].partitions) == 6
    for topic in (deliveries, patients, shipments):
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        entries = admin.describe_configs([resource])[resource].result(timeout=15)
        assert entries["cleanup.policy"].value == "compact"


def test_seed_demo_is_deterministic_and_rerunnable(prefix: str, tmp_path: Path) -> None:
    """A second run with the same seed leaves the topics in place and produces the same records."""
    first = seed(prefix, tmp_path, "--seed", "11")
    second = run(
        ["--topic-prefix", prefix, *SIZES, "--seed", "11"],
        tmp_path,
        exe=SEED_DEMO,
    )

    assert second.returncode == 0, second.stderr
    assert "exists with 12 partitions" in second.stdout
    assert {
        m[1]: (int(m[2]), int(m[3]), int(m[4]), int(m[5])) for m in PRODUCED.finditer(second.stdout)
    } == first


def test_seed_demo_topics_bootstrap_into_the_live_keys(prefix: str, tmp_path: Path) -> None:
    """Bootstrapping the demo topics yields exactly the keys seed-demo reports as live, with real fields."""
    produced = seed(prefix, tmp_path, "--seed", "3")
    config = write_config(
        tmp_path,
        [
            {
                "name": "deliveries",
                "topic": prefix + "delivery.status",
                "indexes": ["status"],
                "partitioner": "murmur2_random",
            },
            {
                "name": "patients",
                "topic": prefix + "patient.records",
                "value": "avro",
                "reader_schema": str(PATIENT_SCHEMA),
                "partitioner": "murmur2_random",
            },
            {
                "name": "shipments",
                "topic": prefix + "shipment.state",
                "value": "protobuf",
                "indexes": ["status"],
                "partitioner": "murmur2_random",
            },
        ],
    )
    with config.open("a") as f:
        f.write(f'\n[schema_registry]\nurl = "{REGISTRY}"\n')

    boot = run(["-c", config, "bootstrap"], tmp_path)

    assert boot.returncode == 0, boot.stderr
    data = status_json(config, tmp_path)
    assert view_status(data, "deliveries")["keys"] == produced[prefix + "delivery.status"][3]
    assert view_status(data, "patients")["keys"] == produced[prefix + "patient.records"][3]
    assert (
        view_status(data, "deliveries")["records_applied"]
        == produced[prefix + "delivery.status"][0]
    )
    assert view_status(data, "deliveries")["quarantined"] == 0
    assert view_status(data, "patients")["quarantined"] == 0
    assert view_status(data, "shipments")["keys"] == produced[prefix + "shipment.state"][3]
    assert view_status(data, "shipments")["quarantined"] == 0
    # seed-demo places keys as the views declare: no record sits elsewhere.
    assert [view_status(data, v)["misplaced"] for v in ("deliveries", "patients", "shipments")] == [
        0,
        0,
        0,
    ]
    store = StateStore(load_config(config), read_only=True)
    try:
        patients = list(store.view("patients").iter_entities())
        assert patients and all("ward" in p.value for p in patients)
        # Both schema versions are in use: entities last written with version 1 read with the default.
        assert len(store.view("patients").status().schema_entities) == 2
        assert any(p.value["ward"] == "unassigned" for p in patients)
        assert any(p.value["ward"] != "unassigned" for p in patients)
        shipments = list(store.view("shipments").iter_entities())
        assert shipments and all(s.value["shipmentId"] == s.key for s in shipments)
        assert all(s.value["status"] != "STATUS_UNSPECIFIED" for s in shipments)
    finally:
        store.close()


@pytest.fixture
def silent_registry() -> Iterator[str]:
    """A registry address that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_seed_demo_gives_up_on_a_registry_that_never_answers(
    prefix: str, tmp_path: Path, silent_registry: str
) -> None:
    """A registry that accepts the connection but never answers ends the run with a clear error, not a hang."""
    args = ["--topic-prefix", prefix, "--deliveries", "5", "--patients", "3"]
    args += ["--registry-url", silent_registry, "--timeout", "3"]
    # Each request waits 3 s and is retried once: well inside the 60 s given here,
    # where a client without a timeout would wait forever.
    result = run(args, tmp_path, exe=SEED_DEMO, timeout=60)

    assert result.returncode == 1, result.stderr
    assert f"seed-demo: schema registry at {silent_registry} failed: ReadTimeout" in result.stderr
    assert "Traceback" not in result.stderr
