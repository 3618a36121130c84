"""docker-compose.yml must describe the same local services as scripts/local-kafka.

The broker settings live in scripts/kafka/server.properties (used by
scripts/local-kafka) and again, as KAFKA_* variables of the apache/kafka
image, in docker-compose.yml. These tests fail as soon as the two drift.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
SERVER_PROPERTIES = REPO / "scripts" / "kafka" / "server.properties"
KAFKA_POM = REPO / "scripts" / "kafka" / "pom.xml"

BROKER_PORT = 9092
CONTROLLER_PORT = 9093
REGISTRY_PORT = 8081

# Settings whose value differs between the two setups by design; each one is
# checked separately below.
#   listeners: the container listens on 0.0.0.0 (published on 127.0.0.1 only).
#   log.dirs: a path inside var/ versus the image's data volume.
#   controller.quorum.bootstrap.servers: scripts/local-kafka formats a
#     dynamic quorum (--standalone); the image formats without it, so
#     compose uses controller.quorum.voters on the same port.
DIFFERENT_BY_DESIGN = {"listeners", "log.dirs", "controller.quorum.bootstrap.servers"}

# Settings the brief for the local broker requires in both files.
REQUIRED_SETTINGS = {
    "node.id",
    "process.roles",
    "listeners",
    "advertised.listeners",
    "auto.create.topics.enable",
    "log.cleaner.backoff.ms",
    "log.cleaner.min.compaction.lag.ms",
    "offsets.topic.replication.factor",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "group.initial.rebalance.delay.ms",
}

MAVEN_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def parse_properties(text: str) -> dict[str, str]:
    """Parse a Java properties file of plain key=value lines."""
    props: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {raw!r}"
        props[key.strip()] = value.strip()
    return props


def env_name(prop: str) -> str:
    """Name of the apache/kafka image variable that sets broker property `prop`."""
    return "KAFKA_" + prop.replace("_", "__").replace("-", "___").replace(".", "_").upper()


def service_env(service: dict[str, Any]) -> dict[str, str]:
    """Environment of a compose service as a dict of strings (map or list form)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def published_ports(service: dict[str, Any]) -> set[tuple[str, int, int]]:
    """(host ip, host port, container port) of every port a compose service publishes."""
    out: set[tuple[str, int, int]] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            out.add(
                (
                    str(entry.get("host_ip", "0.0.0.0")),
                    int(entry["published"]),
                    int(entry["target"]),
                )
            )
            continue
        parts = str(entry).split("/")[0].split(":")
        if len(parts) == 3:
            out.add((parts[0], int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            out.add(("0.0.0.0", int(parts[0]), int(parts[1])))
        else:
            out.add(("0.0.0.0", int(parts[0]), int(parts[0])))
    return out


def listener_ports(value: str) -> dict[str, int]:
    """Map listener name to port for a listeners value like PLAINTEXT://h:9092,CONTROLLER://h:9093."""
    ports: dict[str, int] = {}
    for item in value.split(","):
        match = re.fullmatch(r"\s*([A-Za-z0-9_]+)://[^:]*:(\d+)\s*", item)
        assert match, f"unparsable listener {item!r}"
        ports[match.group(1)] = int(match.group(2))
    return ports


def setting_mismatches(props: dict[str, str], env: dict[str, str]) -> list[str]:
    """Describe every server.properties setting that compose lacks or sets to another value."""
    problems = []
    for key, value in sorted(props.items()):
        if key in DIFFERENT_BY_DESIGN:
            continue
        name = env_name(key)
        if name not in env:
            problems.append(f"{key}: no {name} in docker-compose.yml")
        elif env[name] != value:
            problems.append(f"{key}: server.properties has {value!r}, {name} has {env[name]!r}")
    return problems


def pom_kafka_version() -> str:
    """Version of org.apache.kafka:kafka_2.13 in scripts/kafka/pom.xml, with ${...} resolved."""
    root = ET.parse(KAFKA_POM).getroot()
    properties = {
        child.tag.split("}", 1)[1]: (child.text or "").strip()
        for child in root.findall("m:properties/*", MAVEN_NS)
    }
    for dep in root.findall("m:dependencies/m:dependency", MAVEN_NS):
        if (
            dep.findtext("m:groupId", namespaces=MAVEN_NS) == "org.apache.kafka"
            and dep.findtext("m:artifactId", namespaces=MAVEN_NS) == "kafka_2.13"
        ):
            version = (dep.findtext("m:version", namespaces=MAVEN_NS) or "").strip()
            return re.sub(r"\$\{([^}]+)\}", lambda m: properties[m.group(1)], version)
    raise AssertionError("no org.apache.kafka:kafka_2.13 dependency in scripts/kafka/pom.xml")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def kafka_service(compose: dict[str, Any]) -> dict[str, Any]:
    services = compose["services"]
    matches = [s for s in services.values() if str(s.get("image", "")).startswith("apache/kafka:")]
    assert len(matches) == 1, "docker-compose.yml needs exactly one apache/kafka service"
    return matches[0]


@pytest.fixture(scope="module")
def registry_service(compose: dict[str, Any]) -> dict[str, Any]:
    services = compose["services"]
    matches = [
        s
        for s in services.values()
        if str(s.get("image", "")).startswith("apicurio/apicurio-registry:")
    ]
    assert len(matches) == 1, (
        "docker-compose.yml needs exactly one apicurio/apicurio-registry service"
    )
    return matches[0]


@pytest.fixture(scope="module")
def props() -> dict[str, str]:
    return parse_properties(SERVER_PROPERTIES.read_text())


def test_broker_port_published_on_loopback_only(kafka_service: dict[str, Any]) -> None:
    """The compose broker publishes exactly 127.0.0.1:9092 and nothing else."""
    assert published_ports(kafka_service) == {("127.0.0.1", BROKER_PORT, BROKER_PORT)}


def test_registry_port_published_on_loopback_only(registry_service: dict[str, Any]) -> None:
    """The compose schema registry publishes exactly 127.0.0.1:8081 (the image listens on 8080)."""
    assert published_ports(registry_service) == {("127.0.0.1", REGISTRY_PORT, 8080)}


def test_registry_is_apicurio_3_in_memory(registry_service: dict[str, Any]) -> None:
    """The compose schema registry is Apicurio 3.x on its in-memory H2 storage."""
    tag = str(registry_service["image"]).split(":", 1)[1]
    assert tag.split(".")[0] == "3"
    env = service_env(registry_service)
    assert env.get("APICURIO_STORAGE_KIND", "sql") == "sql"
    assert env.get("APICURIO_STORAGE_SQL_KIND", "h2") == "h2"


def test_server_properties_has_required_settings(props: dict[str, str]) -> None:
    """server.properties carries the single-node KRaft settings the local broker relies on."""
    assert props.keys() >= REQUIRED_SETTINGS
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["auto.create.topics.enable"] == "false"
    assert listener_ports(props["listeners"]) == {
        "PLAINTEXT": BROKER_PORT,
        "CONTROLLER": CONTROLLER_PORT,
    }
    assert props["advertised.listeners"] == f"PLAINTEXT://127.0.0.1:{BROKER_PORT}"
    assert props["controller.quorum.bootstrap.servers"] == f"127.0.0.1:{CONTROLLER_PORT}"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor"):
        assert props[key] == "1", key


def test_compose_sets_every_broker_setting_alike(
    props: dict[str, str], kafka_service: dict[str, Any]
) -> None:
    """Every server.properties setting (but the few that differ by design) has a KAFKA_* twin in compose with the same value."""
    assert setting_mismatches(props, service_env(kafka_service)) == []


def test_compose_required_settings_present(kafka_service: dict[str, Any]) -> None:
    """Compose sets node id, roles, listeners, auto-create, cleaner backoff and replication factors explicitly."""
    env = service_env(kafka_service)
    missing = [key for key in sorted(REQUIRED_SETTINGS) if env_name(key) not in env]
    assert missing == []


def test_compose_listener_ports_match(props: dict[str, str], kafka_service: dict[str, Any]) -> None:
    """Compose listens and advertises on the same listener names and ports as server.properties."""
    env = service_env(kafka_service)
    assert listener_ports(env["KAFKA_LISTENERS"]) == listener_ports(props["listeners"])
    assert env["KAFKA_ADVERTISED_LISTENERS"] == props["advertised.listeners"]


def test_compose_controller_quorum_matches(
    props: dict[str, str], kafka_service: dict[str, Any]
) -> None:
    """Compose's static quorum has node.id as its only voter, on the controller port of server.properties."""
    env = service_env(kafka_service)
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert len(voters) == 1
    voter_id, _, endpoint = voters[0].partition("@")
    assert voter_id == props["node.id"]
    assert (
        endpoint.rsplit(":", 1)[1] == props["controller.quorum.bootstrap.servers"].rsplit(":", 1)[1]
    )
    assert "KAFKA_CONTROLLER_QUORUM_BOOTSTRAP_SERVERS" not in env
    assert env.get("CLUSTER_ID"), "the apache/kafka image needs CLUSTER_ID to format its storage"


def test_kafka_image_major_matches_pom(kafka_service: dict[str, Any]) -> None:
    """The apache/kafka image tag has the same major version as kafka_2.13 in scripts/kafka/pom.xml."""
    tag = str(kafka_service["image"]).split(":", 1)[1]
    pom_version = pom_kafka_version()
    assert re.match(r"^\d+\.\d+\.\d+", pom_version), pom_version
    assert tag.split(".")[0] == pom_version.split(".")[0] == "4"


def test_drift_is_reported() -> None:
    """The comparison reports a changed value and a setting missing from compose."""
    props = {"node.id": "1", "log.cleaner.backoff.ms": "100", "num.partitions": "1"}
    env = {"KAFKA_NODE_ID": "1", "KAFKA_LOG_CLEANER_BACKOFF_MS": "15000"}
    problems = setting_mismatches(props, env)
    assert len(problems) == 2
    assert any(p.startswith("log.cleaner.backoff.ms:") for p in problems)
    assert any(p.startswith("num.partitions:") for p in problems)


def test_env_name_follows_image_convention() -> None:
    """Property names map to image variables as a.b.c -> KAFKA_A_B_C, with _ doubled and - tripled."""
    assert env_name("log.cleaner.backoff.ms") == "KAFKA_LOG_CLEANER_BACKOFF_MS"
    assert env_name("a_b.c-d") == "KAFKA_A__B_C___D"
