"""One test's topics, producing to them and a store config over them, bundled as the ``env``
fixture (tests/conftest.py) for the tests that need all three."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from statestore import Config


@dataclass(frozen=True, slots=True)
class Env:
    """``topic(partitions=3, **config)``: a new topic on the local broker, deleted after the
    test; ``produce(topic, records)``: the records written in order, returning what was
    written (``Produced``: partitions, offsets, the reduction); ``config(*views, **kafka)``:
    a ``Config`` of those views with a store under the test's tmp_path."""

    topic: Callable[..., str]
    produce: Callable[..., Any]
    config: Callable[..., Config]
