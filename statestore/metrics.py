"""Prometheus metrics, read from the same status values the CLI and REST API show.

The collector computes every figure at scrape time from :meth:`StateStore.status`,
so metrics, ``statestore status`` and ``GET /views/{view}`` never disagree. It reads
the store through :class:`MeteredStore`, the few things it needs: views import this
module (for their freshness histogram), so it must not import the store or the views.

Names follow Prometheus conventions: ``_total`` counters, ``_seconds`` durations,
``_timestamp_seconds`` times (alert on ``time() - x``). Counts that alerts need across
restarts (starts, staleness events, rebuilds) are kept in the store. Names of the
previous release are still exported, as deprecated aliases (docs/operations.md).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, get_args

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._version import __version__
from .status import ClusterFacts, PartitionStatus, ViewEvent, ViewState, ViewStatus

if TYPE_CHECKING:
    from .snapshot import SnapshotStatus

__all__ = [
    "MeteredStore",
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


class _MeteredView(Protocol):
    @property
    def freshness(self) -> Histogram: ...


class _MeteredSnapshots(Protocol):
    @property
    def status(self) -> SnapshotStatus: ...


class _MeteredCluster(Protocol):
    def facts(self) -> ClusterFacts: ...


class MeteredStore(Protocol):
    """What the collector reads of a store (a :class:`~statestore.StateStore` is one)."""

    @property
    def starts(self) -> int: ...

    @property
    def started_at(self) -> float | None: ...

    @property
    def snapshots(self) -> _MeteredSnapshots: ...

    @property
    def views(self) -> Mapping[str, _MeteredView]: ...

    @property
    def cluster(self) -> _MeteredCluster | None: ...

    def status(self) -> list[ViewStatus]: ...


class StoreCollector(Collector):
    """Exposes one store's views as ``statestore_*`` metrics."""

    def __init__(self, store: MeteredStore, views: Callable[[str], bool] | None = None) -> None:
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
        if store.cluster is not None:
            yield from cluster_metrics(store.cluster.facts(), self._views)
        shown = {s.name for s in statuses}
        families = [next(iter(v.freshness.collect())) for n, v in store.views.items() if n in shown]
        if families:
            merged = families[0]
            for other in families[1:]:
                merged.samples.extend(other.samples)
            yield merged


def cluster_metrics(
    facts: ClusterFacts, views: Callable[[str], bool] | None = None
) -> Iterator[Metric]:
    """A partitioned cluster's instance: members, rebalances, partitions owned and served."""
    yield GaugeMetricFamily(
        "statestore_cluster_members",
        "Instances of this partitioned cluster whose membership record is recent (this one "
        "included).",
        value=facts.members_alive,
    )
    rebalances = CounterMetricFamily(
        "statestore_cluster_rebalances",
        "Assignment changes of the consumer group this instance took part in.",
    )
    rebalances.add_metric([], facts.rebalances)
    yield rebalances
    partitions = GaugeMetricFamily(
        "statestore_cluster_partitions",
        "Partitions of the view's topic the group gave this instance (state=owned) and, of "
        "those, the ones it has read to the end and answers for (state=serving).",
        labels=["view", "state"],
    )
    for view, n in facts.owned.items():
        if views is None or views(view):
            partitions.add_metric([view, "owned"], n)
            partitions.add_metric([view, "serving"], facts.serving.get(view, 0))
    yield partitions


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


_Samples = Callable[[ViewStatus, int], Iterator[tuple[list[str], float]]]


@dataclass(frozen=True, slots=True)
class _Family:
    """One metric of every view: its name, help, labels and samples of a status (at a time)."""

    counter: bool
    name: str
    help: str
    labels: tuple[str, ...]
    samples: _Samples

    def new(self) -> CounterMetricFamily | GaugeMetricFamily:
        kind = CounterMetricFamily if self.counter else GaugeMetricFamily
        return kind(self.name, self.help, labels=list(self.labels))


_PARTITION = ("view", "topic", "partition")
_VIEW = ("view",)
_EVENT = ("view", "cause")


def _per_partition(value: Callable[[PartitionStatus], int | None]) -> _Samples:
    def samples(s: ViewStatus, now_ms: int) -> Iterator[tuple[list[str], float]]:
        for p in s.partitions:
            v = value(p)
            if v is not None:
                yield [s.name, s.topic, str(p.partition)], v

    return samples


def _per_view(value: Callable[[ViewStatus], float | None]) -> _Samples:
    def samples(s: ViewStatus, now_ms: int) -> Iterator[tuple[list[str], float]]:
        v = value(s)
        if v is not None:
            yield [s.name], v

    return samples


def _last_event(event: Callable[[ViewStatus], ViewEvent | None]) -> _Samples:
    def samples(s: ViewStatus, now_ms: int) -> Iterator[tuple[list[str], float]]:
        e = event(s)
        if e is not None:
            yield [s.name, e.cause], e.at_ms / 1000

    return samples


def _view_lag(s: ViewStatus, now_ms: int) -> Iterator[tuple[list[str], float]]:
    if s.lag is not None:
        yield [s.name, s.topic], s.lag


def _state(s: ViewStatus, now_ms: int) -> Iterator[tuple[list[str], float]]:
    for name in _STATES:
        yield [s.name, name], 1.0 if s.state == name else 0.0


def _since_last_apply(s: ViewStatus, now_ms: int) -> Iterator[tuple[list[str], float]]:
    if s.last_applied_at_ms is not None:
        yield [s.name], max(0.0, (now_ms - s.last_applied_at_ms) / 1000)


def _booted(value: Callable[[ViewStatus], float | None]) -> Callable[[ViewStatus], float | None]:
    return lambda s: value(s) if s.bootstrap_seconds is not None else None


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


# In the order they are exposed.
_FAMILIES = (
    _Family(
        False,
        "statestore_consumer_lag",
        "End offset minus applied position, per partition.",
        _PARTITION,
        _per_partition(lambda p: p.lag),
    ),
    _Family(
        False,
        "statestore_applied_offset",
        "Next offset the view will read (every offset below it is applied).",
        _PARTITION,
        _per_partition(lambda p: p.position),
    ),
    _Family(
        False,
        "statestore_end_offset",
        "High watermark of the partition, polled every [store] lag_refresh_s.",
        _PARTITION,
        _per_partition(lambda p: p.end_offset),
    ),
    _Family(
        False,
        "statestore_view_lag",
        "Records the view is behind its topic (sum over partitions), in every state.",
        ("view", "topic"),
        _view_lag,
    ),
    _Family(
        True,
        "statestore_records_applied",
        "Records applied to the view (this copy).",
        _VIEW,
        _per_view(lambda s: s.records_applied),
    ),
    _Family(
        True,
        "statestore_bytes_applied",
        "Value bytes applied to the view (this copy).",
        _VIEW,
        _per_view(lambda s: s.bytes_applied),
    ),
    _Family(
        True,
        "statestore_quarantined",
        "Records quarantined as undecodable (this copy).",
        _VIEW,
        _per_view(lambda s: s.quarantined),
    ),
    _Family(
        True,
        "statestore_misplaced_records",
        "Keyed records read in another partition than the view's partitioner gives their "
        "key (views that declare one).",
        _VIEW,
        _per_view(lambda s: s.partitioning.misplaced if s.partitioning is not None else None),
    ),
    _Family(
        False,
        "statestore_keys",
        "Entities currently in the view.",
        _VIEW,
        _per_view(lambda s: s.keys),
    ),
    _Family(
        False,
        "statestore_bootstrap_duration_seconds",
        "Duration of the view's last bootstrap in this process.",
        _VIEW,
        _per_view(lambda s: s.bootstrap_seconds),
    ),
    _Family(
        False,
        "statestore_bootstrap_records",
        "Records read by the view's last bootstrap in this process.",
        _VIEW,
        _per_view(_booted(lambda s: s.bootstrap_records)),
    ),
    _Family(
        False,
        "statestore_last_apply_timestamp_seconds",
        "When the view last applied a batch (seconds since the epoch).",
        _VIEW,
        _per_view(lambda s: _seconds(s.last_applied_at_ms)),
    ),
    _Family(
        True,
        "statestore_rebuilds",
        "Rebuilds of the view, over every process that served it (kept in the store).",
        _VIEW,
        _per_view(lambda s: s.rebuilds),
    ),
    _Family(
        False,
        "statestore_last_rebuild_timestamp_seconds",
        "When the view was last rebuilt, labelled with why (kept in the store).",
        _EVENT,
        _last_event(lambda s: s.last_rebuild),
    ),
    _Family(
        True,
        "statestore_stale_events",
        "Times the view was found untrustworthy and its on_stale policy applied, over every "
        "process that served it (kept in the store).",
        _VIEW,
        _per_view(lambda s: s.stale_events),
    ),
    _Family(
        False,
        "statestore_last_stale_timestamp_seconds",
        "When the view was last found untrustworthy, labelled with why (kept in the store).",
        _EVENT,
        _last_event(lambda s: s.last_stale),
    ),
    _Family(
        False,
        "statestore_view_state",
        "1 for the view's current state, 0 for the others.",
        ("view", "state"),
        _state,
    ),
)

# Deprecated names of the previous release, removed in the next one (exposed last).
_DEPRECATED = (
    _Family(
        False,
        "statestore_bootstrap_seconds",
        "Deprecated: statestore_bootstrap_duration_seconds.",
        _VIEW,
        _per_view(lambda s: s.bootstrap_seconds),
    ),
    _Family(
        False,
        "statestore_bootstrap_records_per_second",
        "Deprecated: statestore_bootstrap_records / statestore_bootstrap_duration_seconds.",
        _VIEW,
        _per_view(
            lambda s: (
                s.bootstrap_records / s.bootstrap_seconds
                if s.bootstrap_seconds  # neither None nor 0
                else None
            )
        ),
    ),
    _Family(
        False,
        "statestore_seconds_since_last_apply",
        "Deprecated: time() - statestore_last_apply_timestamp_seconds.",
        _VIEW,
        _since_last_apply,
    ),
)


def _collect(
    families: tuple[_Family, ...], statuses: list[ViewStatus], now_ms: int
) -> list[Metric]:
    out: list[Metric] = []
    for spec in families:
        family = spec.new()
        for s in statuses:
            for labels, value in spec.samples(s, now_ms):
                family.add_metric(labels, value)
        out.append(family)
    return out


def metrics_for(
    statuses: list[ViewStatus], facts: StoreFacts | None = None, now_ms: int | None = None
) -> Iterator[Metric]:
    """The metric families for a list of view statuses (and the store's facts)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    yield from _collect(_FAMILIES, statuses, now_ms)
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
    yield from _collect(_DEPRECATED, statuses, now_ms)
