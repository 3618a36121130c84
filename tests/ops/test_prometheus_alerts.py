"""docs/alerts.yml in a real Prometheus, scraping a real `statestore serve` on the real broker.

Prometheus (Debian's binary, installed by scripts/install-tools) scrapes every second
and evaluates a copy of the shipped rules in which only the `for:` and
`keep_firing_for:` durations are shortened; expressions, windows and thresholds are the
shipped ones. One run of servers walks through what the rules are for: a stale return
after longer than `delete.retention.ms`, a crash loop, a failed view whose lag grows
past both thresholds, quarantined records, a dead target, and recovery; each rule is
seen firing, and clearing where its window allows within the test.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from ops_support import Serve, send

from tests.support.config import write_config
from tests.support.kafka import BOOTSTRAP
from tests.support.processes import REPO, finish, free_port
from tests.support.waits import eventually

pytestmark = pytest.mark.integration

ALERTS = REPO / "docs" / "alerts.yml"
DASHBOARD = REPO / "docs" / "grafana-dashboard.json"
SHORT = "2s"  # every `for:` and `keep_firing_for:` of the test copy


def rules_copy(path: Path) -> Path:
    """The shipped rules with only their hold durations shortened."""
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    for group in doc["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            for hold in ("for", "keep_firing_for"):
                if hold in rule:
                    rule[hold] = SHORT
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[str]
    log: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/alerts", timeout=10).json()
        alerts: list[dict[str, Any]] = answer["data"]["alerts"]
        return alerts

    def firing(self, name: str, **labels: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.alerts()
            if a["labels"]["alertname"] == name
            and a["state"] == "firing"
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ]

    def wait_firing(self, name: str, timeout: float = 60.0, **labels: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def fires() -> bool:
            found[:] = self.firing(name, **labels)
            return bool(found)

        eventually(fires, f"{name} {labels} firing", timeout)
        return found[0]

    def wait_cleared(self, name: str, timeout: float = 60.0, **labels: str) -> None:
        eventually(lambda: not self.firing(name, **labels), f"{name} {labels} cleared", timeout)

    def wait_sample(self, expr: str, ok: Callable[[float], bool], what: str) -> None:
        def seen() -> bool:
            return any(ok(float(r["value"][1])) for r in self.query(expr))

        eventually(seen, what, 60.0)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], Prometheus]]:
    """Starts Prometheus scraping a statestore server on a port (job "statestore")."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: run scripts/install-tools"
    started: list[Prometheus] = []

    def start(target_port: int) -> Prometheus:
        rules = rules_copy(tmp_path / "alerts.yml")
        config = {
            "global": {
                "scrape_interval": "1s",
                "evaluation_interval": "1s",
                "scrape_timeout": "1s",
            },
            "rule_files": [str(rules)],
            "scrape_configs": [
                {
                    "job_name": "statestore",
                    "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
        port = free_port()
        log = tmp_path / "prometheus.log"
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            text=True,
        )
        prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)
        started.append(prom)

        def ready() -> bool:
            assert proc.poll() is None, log.read_text(errors="replace")
            try:
                return httpx.get(f"{prom.url}/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(ready, "prometheus ready", 60.0)
        shipped = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
        names = {r["alert"] for g in shipped["groups"] for r in g["rules"]}

        def loaded() -> bool:
            groups = httpx.get(f"{prom.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
            return {r["name"] for g in groups for r in g["rules"]} == names

        eventually(loaded, "every shipped rule loaded", 30.0)
        return prom

    yield start
    for prom in started:
        finish(prom.proc, timeout=30)


def _produce_json(topic: str, records: int, start: int = 0) -> None:
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 20})
    for i in range(start, start + records):
        producer.produce(topic, key=f"k{i % 5000}".encode(), value=json.dumps({"i": i}).encode())
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


def _produce_raw(topic: str, key: bytes, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": BOOTSTRAP})
    producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def test_every_shipped_rule_fires_in_a_real_prometheus_and_clears_when_its_cause_is_gone(
    topic_factory: Callable[..., str],
    prometheus: Callable[[int], Prometheus],
    tmp_path: Path,
) -> None:
    """Stale return, crash loop, failed view with lag over both thresholds and growing, quarantine, dead target: each alert fires, and clears once the cause is gone (the 1-hour stale and 15-minute restart windows excepted)."""
    # A bad record first: the view (on_error = fail) stops there until it is deleted.
    failing = topic_factory(1, cleanup_policy="compact,delete")
    quarantining = topic_factory(1)
    away = topic_factory(1, delete_retention_ms="1000")
    _produce_raw(failing, b"bad", b"{not json")
    send(failing, [("k", {"i": 0}, 0, None)])
    send(quarantining, [("q", {"i": 0}, 0, None)])
    send(away, [(f"a{i}", {"i": i}, 0, None) for i in range(3)])
    config = write_config(
        tmp_path,
        [
            {"name": "fails", "topic": failing, "on_error": "fail"},
            {"name": "quar", "topic": quarantining},
            {"name": "away", "topic": away},
        ],
        store_options={"lag_refresh_s": 0.5},
    )
    found = re.search(r"port = (\d+)", config.read_text(encoding="utf-8"))
    assert found
    port = int(found.group(1))
    serve = Serve(config, port, tmp_path)

    # A first run builds the views; then the server is away for longer than the
    # `away` topic's delete.retention.ms (1 s).
    serve.start()
    eventually(lambda: serve.view("away")["state"] == "ready", "view away ready", 60.0)
    assert serve.view("fails")["state"] == "failed"
    serve.stop()
    stopped = time.time()
    prom = prometheus(port)
    eventually(lambda: time.time() > stopped + 1.5, "longer away than delete.retention.ms", 10.0)

    # Back: the view is found stale at start, before Prometheus ever scraped this process.
    serve.start()
    stale = prom.wait_firing("StatestoreViewStale", view="away")
    assert stale["labels"]["cause"] == "away_too_long"
    assert stale["labels"]["instance"] == f"127.0.0.1:{port}"
    assert "found stale" in stale["annotations"]["summary"]

    # A crash loop: three more starts, however few scrapes see them.
    prom.wait_sample("statestore_starts_total", lambda v: v >= 2, "starts_total scraped")
    for _ in range(3):
        serve.stop(signal.SIGKILL)
        serve.start()
    restarting = prom.wait_firing("StatestoreRestarting")
    assert restarting["labels"]["instance"] == f"127.0.0.1:{port}"

    # The failed view falls behind: 110,000 records past the bad one.
    eventually(lambda: serve.view("fails")["state"] == "failed", "view fails failed again", 60.0)
    prom.wait_firing("StatestoreViewFailed", view="fails")
    _produce_json(failing, 110_000)
    eventually(lambda: (serve.view("fails")["lag"] or 0) >= 110_000, "lag of the failed view", 60.0)
    high = prom.wait_firing("StatestoreLagHigh", view="fails")
    assert re.search(r"is 1100\d\d records behind", high["annotations"]["summary"]), high
    prom.wait_firing("StatestoreLagCritical", view="fails")
    prom.wait_firing("StatestoreLagGrowing", view="fails")
    assert not prom.firing("StatestoreLagHigh", view="quar")

    # One record the quarantining view cannot decode.
    _produce_raw(quarantining, b"q", b"{not json")
    quarantined = prom.wait_firing("StatestoreRecordsQuarantined", view="quar")
    assert "quarantined 1 records" in quarantined["annotations"]["summary"], quarantined
    quarantine_seen = time.monotonic()

    # The server dies: the target is down, every view's series are gone, and the lag
    # rules stop firing instead of going on from the last samples.
    serve.stop(signal.SIGKILL)
    prom.wait_firing("StatestoreTargetDown")
    prom.wait_firing("StatestoreMetricsAbsent")
    prom.wait_cleared("StatestoreLagGrowing", view="fails")
    prom.wait_cleared("StatestoreLagHigh", view="fails")

    # Back again, and the failed view repaired: the bad record deleted, the view rebuilt.
    serve.start()
    prom.wait_cleared("StatestoreTargetDown")
    prom.wait_cleared("StatestoreMetricsAbsent")
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    for fut in admin.delete_records([TopicPartition(failing, 0, 1)]).values():
        fut.result(30)
    rebuilt = httpx.post(f"{serve.url}/views/fails/rebuild", timeout=30)
    assert rebuilt.status_code == 202, rebuilt.text
    eventually(
        lambda: serve.view("fails")["state"] == "ready" and serve.view("fails")["lag"] == 0,
        "view fails rebuilt and caught up",
        120.0,
    )
    for name in ("StatestoreViewFailed", "StatestoreLagHigh", "StatestoreLagCritical"):
        prom.wait_cleared(name, view="fails")
    prom.wait_cleared("StatestoreLagGrowing", view="fails")
    # The quarantine alert lasts as long as its 1-minute window holds the record.
    prom.wait_cleared("StatestoreRecordsQuarantined", timeout=120.0, view="quar")
    assert time.monotonic() - quarantine_seen > 30

    # The dashboard's queries all answer, over the live series.
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = (
                target["expr"]
                .replace("$instance", ".*")
                .replace("$view", ".*")
                .replace("$__rate_interval", "1m")
            )
            assert prom.query(expr), (panel["title"], expr)
    serve.stop()


def test_the_snapshot_alert_fires_while_snapshots_fail_and_clears_once_one_is_written(
    topic_factory: Callable[..., str],
    prometheus: Callable[[int], Prometheus],
    tmp_path: Path,
) -> None:
    """A server that takes a snapshot every second into a destination it cannot write (a
    file where the directory should be): StatestoreSnapshotMissing fires two intervals
    after the start; once the destination can be written, a snapshot is and it clears."""
    topic = topic_factory(1)
    send(topic, [(f"s{i}", {"i": i}, 0, None) for i in range(3)])
    dest = tmp_path / "snapshots"
    dest.write_text("not a directory")
    config = write_config(tmp_path, [{"name": "snap", "topic": topic}])
    text = config.read_text(encoding="utf-8")
    config.write_text(text + f'\n[snapshots]\ndest = "{dest}"\nevery = "1s"\n', encoding="utf-8")
    found = re.search(r"port = (\d+)", text)
    assert found
    port = int(found.group(1))
    serve = Serve(config, port, tmp_path)
    serve.start()
    try:
        prom = prometheus(port)
        prom.wait_sample(
            "statestore_snapshot_failures_total", lambda v: v >= 1, "a failed snapshot scraped"
        )
        alert = prom.wait_firing("StatestoreSnapshotMissing")
        assert alert["labels"]["instance"] == f"127.0.0.1:{port}"
        assert "no snapshot in two" in alert["annotations"]["summary"]
        dest.unlink()  # the next try (an interval after a failure, here) can write
        prom.wait_sample("statestore_snapshots_total", lambda v: v >= 1, "a snapshot written")
        prom.wait_cleared("StatestoreSnapshotMissing")
    finally:
        serve.stop()
