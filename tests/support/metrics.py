"""A store's metrics as Prometheus would scrape them, parsed by the Prometheus client's own
text parser: ``{(sample name, sorted labels): value}``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from statestore import StateStore
from statestore.metrics import StoreCollector

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(store: StateStore) -> Samples:
    """The store's metrics as one scrape of its collector gives them."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return parse(generate_latest(registry).decode())


def parse(text: str) -> Samples:
    """The samples of a scrape's text."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out
