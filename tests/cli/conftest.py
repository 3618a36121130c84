"""Fixtures for the command-line tests: the local broker and throwaway topics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cli_support import BOOTSTRAP, Topics
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient


@pytest.fixture(scope="session")
def admin() -> AdminClient:
    """An admin client on the local broker; the test fails (not skips) when it is down."""
    client = AdminClient({"bootstrap.servers": BOOTSTRAP})
    try:
        client.list_topics(timeout=15)
    except KafkaException as exc:
        pytest.fail(
            f"the local Kafka broker at {BOOTSTRAP} is unreachable ({exc}); run scripts/local-kafka start"
        )
    return client


@pytest.fixture
def topics(admin: AdminClient) -> Iterator[Topics]:
    """Unique compacted topics for one test, deleted after it."""
    made = Topics(admin)
    yield made
    made.delete(made.created)
