"""Prometheus metrics, read from the same status values the CLI and REST API show.

The collector computes every figure at scrape time from :meth:`StateStore.status`,
so metrics, ``statestore status`` and ``GET /views/{view}`` never disagree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .status import ViewStatus

if TYPE_CHECKING:
    from .store import StateStore

__all__ = ["STATES", "StoreCollector"]

STATES = ("starting", "bootstrapping", "ready", "rebuilding", "degraded", "failed", "stopped")


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
        yield from metrics_for(statuses)


def metrics_for(statuses: list[ViewStatus], now_ms: int | None = None) -> Iterator[Metric]:
    """The metric families for a list of view statuses."""
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
        "statestore_end_offset", "High watermark of the partition when last seen.", labels=part
    )
    view_lag = GaugeMetricFamily(
        "statestore_view_lag", "Sum of the partitions' lag.", labels=["view", "topic"]
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
        "statestore_bootstrap_seconds",
        "Duration of the last bootstrap in this process.",
        labels=["view"],
    )
    boot_rate = GaugeMetricFamily(
        "statestore_bootstrap_records_per_second",
        "Records per second of the last bootstrap.",
        labels=["view"],
    )
    since = GaugeMetricFamily(
        "statestore_seconds_since_last_apply",
        "Seconds since a batch was last applied.",
        labels=["view"],
    )
    rebuilds = CounterMetricFamily(
        "statestore_rebuilds", "Rebuilds of the view in this process.", labels=["view"]
    )
    stale = CounterMetricFamily(
        "statestore_stale_events",
        "Times the view was found untrustworthy (on_stale applied) in this process.",
        labels=["view"],
    )
    state = GaugeMetricFamily(
        "statestore_view_state",
        "1 for the view's current state, 0 for the others.",
        labels=["view", "state"],
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
            if s.bootstrap_seconds > 0:
                boot_rate.add_metric([s.name], s.bootstrap_records / s.bootstrap_seconds)
        if s.last_applied_at_ms is not None:
            since.add_metric([s.name], max(0.0, (now_ms - s.last_applied_at_ms) / 1000))
        rebuilds.add_metric([s.name], s.rebuilds)
        stale.add_metric([s.name], s.stale_events)
        for name in STATES:
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
        boot_rate,
        since,
        rebuilds,
        stale,
        state,
    )
