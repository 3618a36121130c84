"""The Kafka client's admin reads when no broker answers: a clear outcome, never a bare
TimeoutError (the future's wait and librdkafka's request timeout race; either may end first)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from statestore.errors import KafkaError
from statestore.kafka import KafkaClient


@pytest.fixture
def client() -> Iterator[KafkaClient]:
    # A loopback port nobody listens on: bound, then closed.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kafka = KafkaClient({"bootstrap.servers": f"127.0.0.1:{port}"}, timeout=0.5)
    yield kafka
    kafka.close()


def test_the_topic_id_is_unknown_when_no_broker_answers(client: KafkaClient) -> None:
    assert client.topic_id("orders") is None


def test_the_topic_config_is_a_kafka_error_when_no_broker_answers(client: KafkaClient) -> None:
    with pytest.raises(KafkaError, match="cannot describe topic 'orders'"):
        client.topic_config("orders")


def test_end_offsets_are_a_kafka_error_when_no_broker_answers(client: KafkaClient) -> None:
    with pytest.raises(KafkaError):
        client.end_offsets("orders", timeout=0.5)
