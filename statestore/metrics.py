"""Prometheus metrics, read from the same status values the CLI and REST API show.

The collector computes every figure at scrape time from :meth:`StateStore.status`,
so metrics, ``statestore status`` and ``GET /views/{view}`` never disagree.

Names follow Prometheus conventions: ``_total`` counters, ``_seconds`` durations,
``_timestamp_seconds`` times (alert on ``time() - x``). Counts that alerts need across
restarts (starts, staleness events, rebuilds) are kept in the store. Names of the
previous release are still exported, as deprecated aliases (docs/operations.md).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, get_args

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .status import ViewState, ViewStatus

if TYPE_CHECKING:
    from .snapshot import SnapshotStatus

if TYPE_CHECKING:
    from .store import StateStore

__all__ = [
    "StoreCollector",
    "StoreFacts",
    "build_info",
    "freshness_histogram",
    "metrics_for",
    "snapshot_metrics",
]

# From a record read within a millisecond to a minute behind.
_FRESHNESS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


def freshness_histogram() -> Histogram:
    """A view's ``statestore_freshness_seconds``, kept by the view (no global registry)."""
    return Histogram(
        "statestore_freshness_seconds",
        "Age of the oldest record of each batch applied while following, when the batch "
        "became readable: from the record's timestamp (the broker's append time on "
        "LogAppendTime topics, the producer's otherwise).",
        ["view"],
        buckets=_FRESHNESS_BUCKETS,
        registry=None,
    )


_STATES: tuple[str, ...] = get_args(ViewState)


@dataclass(frozen=True, slots=True)
class StoreFacts:
    """What the metrics say of the store as a whole."""

    starts: int  # times a server started following on this store, over its life
    started_at: float | None  # when this process started following (seconds since the epoch)


class StoreCollector(Collector):
    """Exposes one StateStore's views as ``statestore_*`` metrics."""

    def __init__(self, store: StateStore, views: Callable[[str], bool] | None = None) -> None:
        self._store = store
        self._views = views

    def describe(self) -> list[Metric]:
        # Describing nothing keeps registration from calling collect() on a half-open store.
        return []

    def collect(self) -> Iterator[Metric]:
        statuses = self._store.status()
        if self._views is not None:
            statuses = [s for s in statuses if self._views(s.name)]
        store = self._store
        yield build_info()
        yield from metrics_for(statuses, StoreFacts(store.starts, store.started_at))
        yield from snapshot_metrics(store.snapshots.status)
        shown = {s.name for s in statuses}
        families = [next(iter(v.freshness.collect())) for n, v in store.views.items() if n in shown]
        if families:
            merged = families[0]
            for other in families[1:]:
                merged.samples.extend(other.samples)
            yield merged


def snapshot_metrics(status: SnapshotStatus) -> Iterator[Metric]:
    """The snapshots the store takes: schedule, last success, failures (docs/operations.md)."""
    if status.every_s is not None:
        yield GaugeMetricFamily(
            "statestore_snapshot_interval_seconds",
            "How often the server takes a snapshot ([snapshots] every).",
            value=status.every_s,
        )
    last = (
        (
            "statestore_snapshot_last_success_timestamp_seconds",
            "When the last snapshot was written (seconds since the epoch; kept in the store).",
            status.last_at,
        ),
        (
            "statestore_snapshot_last_duration_seconds",
            "How long the last snapshot took, checkpoint to upload.",
            status.last_seconds,
        ),
        (
            "statestore_snapshot_last_size_bytes",
            "The size of the last snapshot's archive.",
            status.last_size,
        ),
    )
    for name, text, value in last if status.last_at is not None else ():
        if value is not None:
            yield GaugeMetricFamily(name, text, value=value)
    if status.every_s is not None or status.taken or status.failures:
        taken = CounterMetricFamily(
            "statestore_snapshots", "Snapshots this process wrote (scheduled and requested)."
        )
        taken.add_metric([], status.taken)
        yield taken
        failed = CounterMetricFamily(
            "statestore_snapshot_failures", "Snapshots this process failed to write."
        )
        failed.add_metric([], status.failures)
        yield failed


def build_info() -> Metric:
    """``statestore_build_info``: 1, labelled with the versions of what reads and stores."""
    info = GaugeMetricFamily(
        "statestore_build_info",
        "Always 1: the statestore, Python, confluent-kafka, librdkafka and rocksdict versions.",
        labels=["version", "python_version", "confluent_kafka", "librdkafka", "rocksdict"],
    )
    info.add_metric(list(_versions()), 1)
    return info


@functools.cache
def _versions() -> tuple[str, str, str, str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import confluent_kafka

    from . import __version__

    try:
        rocksdict = version("rocksdict")
    except PackageNotFoundError:
        rocksdict = "unknown"
    return (
        __version__,
        platform.python_version(),
        confluent_kafka.version()[0],
        confluent_kafka.libversion()[0],
        rocksdict,
    )


def metrics_for(
    statuses: list[ViewStatus], facts: StoreFacts | None = None, now_ms: int | None = None
) -> Iterator[Metric]:
    """The metric families for a list of view statuses (and the store's facts)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    part = ["view", "topic", "partition"]
    lag = GaugeMetricFamily(
        "statestore_consumer_lag", "End offset minus applied position, per partition.", labels=part
    )
    applied = GaugeMetricFamily(
        "statestore_applied_offset",
        "Next offset the view will read (every offset below it is applied).",
        labels=part,
    )
    end = GaugeMetricFamily(
        "statestore_end_offset",
        "High watermark of the partition, polled every [store] lag_refresh_s.",
        labels=part,
    )
    view_lag = GaugeMetricFamily(
        "statestore_view_lag",
        "Records the view is behind its topic (sum over partitions), in every state.",
        labels=["view", "topic"],
    )
    records = CounterMetricFamily(
        "statestore_records_applied", "Records applied to the view (this copy).", labels=["view"]
    )
    nbytes = CounterMetricFamily(
        "statestore_bytes_applied", "Value bytes applied to the view (this copy).", labels=["view"]
    )
    quarantined = CounterMetricFamily(
        "statestore_quarantined", "Records quarantined as undecodable (this copy).", labels=["view"]
    )
    keys = GaugeMetricFamily("statestore_keys", "Entities currently in the view.", labels=["view"])
    boot_s = GaugeMetricFamily(
        "statestore_bootstrap_duration_seconds",
        "Duration of the view's last bootstrap in this process.",
        labels=["view"],
    )
    boot_records = GaugeMetricFamily(
        "statestore_bootstrap_records",
        "Records read by the view's last bootstrap in this process.",
        labels=["view"],
    )
    last_apply = GaugeMetricFamily(
        "statestore_last_apply_timestamp_seconds",
        "When the view last applied a batch (seconds since the epoch).",
        labels=["view"],
    )
    rebuilds = CounterMetricFamily(
        "statestore_rebuilds",
        "Rebuilds of the view, over every process that served it (kept in the store).",
        labels=["view"],
    )
    last_rebuild = GaugeMetricFamily(
        "statestore_last_rebuild_timestamp_seconds",
        "When the view was last rebuilt, labelled with why (kept in the store).",
        labels=["view", "cause"],
    )
    stale = CounterMetricFamily(
        "statestore_stale_events",
        "Times the view was found untrustworthy and its on_stale policy applied, over every "
        "process that served it (kept in the store).",
        labels=["view"],
    )
    last_stale = GaugeMetricFamily(
        "statestore_last_stale_timestamp_seconds",
        "When the view was last found untrustworthy, labelled with why (kept in the store).",
        labels=["view", "cause"],
    )
    state = GaugeMetricFamily(
        "statestore_view_state",
        "1 for the view's current state, 0 for the others.",
        labels=["view", "state"],
    )
    # Deprecated names of the previous release, removed in the next one.
    old_boot_s = GaugeMetricFamily(
        "statestore_bootstrap_seconds",
        "Deprecated: statestore_bootstrap_duration_seconds.",
        labels=["view"],
    )
    old_boot_rate = GaugeMetricFamily(
        "statestore_bootstrap_records_per_second",
        "Deprecated: statestore_bootstrap_records / statestore_bootstrap_duration_seconds.",
        labels=["view"],
    )
    old_since = GaugeMetricFamily(
        "statestore_seconds_since_last_apply",
        "Deprecated: time() - statestore_last_apply_timestamp_seconds.",
        labels=["view"],
    )
    for s in statuses:
        for p in s.partitions:
            labels = [s.name, s.topic, str(p.partition)]
            applied.add_metric(labels, p.position)
            if p.end_offset is not None:
                end.add_metric(labels, p.end_offset)
            if p.lag is not None:
                lag.add_metric(labels, p.lag)
        if s.lag is not None:
            view_lag.add_metric([s.name, s.topic], s.lag)
        records.add_metric([s.name], s.records_applied)
        nbytes.add_metric([s.name], s.bytes_applied)
        quarantined.add_metric([s.name], s.quarantined)
        keys.add_metric([s.name], s.keys)
        if s.bootstrap_seconds is not None:
            boot_s.add_metric([s.name], s.bootstrap_seconds)
            boot_records.add_metric([s.name], s.bootstrap_records)
            old_boot_s.add_metric([s.name], s.bootstrap_seconds)
            if s.bootstrap_seconds > 0:
                old_boot_rate.add_metric([s.name], s.bootstrap_records / s.bootstrap_seconds)
        if s.last_applied_at_ms is not None:
            last_apply.add_metric([s.name], s.last_applied_at_ms / 1000)
            old_since.add_metric([s.name], max(0.0, (now_ms - s.last_applied_at_ms) / 1000))
        rebuilds.add_metric([s.name], s.rebuilds)
        if s.last_rebuild is not None:
            last_rebuild.add_metric([s.name, s.last_rebuild.cause], s.last_rebuild.at_ms / 1000)
        stale.add_metric([s.name], s.stale_events)
        if s.last_stale is not None:
            last_stale.add_metric([s.name, s.last_stale.cause], s.last_stale.at_ms / 1000)
        for name in _STATES:
            state.add_metric([s.name, name], 1.0 if s.state == name else 0.0)
    yield from (
        lag,
        applied,
        end,
        view_lag,
        records,
        nbytes,
        quarantined,
        keys,
        boot_s,
        boot_records,
        last_apply,
        rebuilds,
        last_rebuild,
        stale,
        last_stale,
        state,
    )
    if facts is not None:
        starts = CounterMetricFamily(
            "statestore_starts",
            "Times a server started following on this store, over its life (kept in the "
            "store): restarts show even when no scrape saw the process between them.",
        )
        starts.add_metric([], facts.starts)
        yield starts
        if facts.started_at is not None:
            yield GaugeMetricFamily(
                "statestore_start_time_seconds",
                "When this process started following (seconds since the epoch).",
                value=facts.started_at,
            )
    yield from (old_boot_s, old_boot_rate, old_since)
