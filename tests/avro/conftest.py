"""Fixtures for the Avro view tests: the real local broker and schema registry.

Both are required: the tests fail (never skip) when either does not answer.
Start them with ``scripts/local-kafka start`` and ``scripts/local-registry start``.
Subjects follow the topics' unique names, so runs can share the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from avro_support import Avro
from formats_support import JsonSchema, Kit, Protobuf

from statestore import StateStore, ViewConfig
from tests.support.config import store_config
from tests.support.registry import require_registry


@pytest.fixture(scope="session")
def registry_url() -> str:
    """The local schema registry's Confluent-compatible URL; fails when it does not answer."""
    return require_registry()


@pytest.fixture
def avro(registry_url: str) -> Avro:
    """Serialisers that auto-register their schemas under ``<topic>-value`` / ``<topic>-key``."""
    return Avro(registry_url)


@pytest.fixture
def open_store(
    tmp_path: Path, bootstrap_servers: str, registry_url: str
) -> Iterator[Callable[..., StateStore]]:
    """Open StateStores over views (closed after the test); ``url=`` points at another registry."""
    opened: list[StateStore] = []

    def make(
        *views: ViewConfig | dict[str, Any], url: str = registry_url, store: str = "store"
    ) -> StateStore:
        st = StateStore(
            store_config(tmp_path / store, views, bootstrap=bootstrap_servers, registry=url)
        )
        opened.append(st)
        return st

    yield make
    for st in opened:
        st.close()


@pytest.fixture
def kit(
    tmp_path: Path,
    topic_factory: Callable[..., str],
    produce: Callable[..., object],
    open_store: Callable[..., StateStore],
    registry_url: str,
    avro: Avro,
) -> Kit:
    """The fixtures a registry-format view test (Protobuf, JSON Schema, Avro) uses, in one."""
    return Kit(
        tmp_path,
        topic_factory,
        produce,
        open_store,
        Protobuf(registry_url),
        JsonSchema(registry_url),
        avro,
    )
