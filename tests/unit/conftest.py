"""tests/unit is the suite's broker-free part: it must pass with no service running.

The broker fixture every broker-backed fixture builds on is replaced here by one
that fails, so a unit test that reaches for the broker (directly or through
``produce``, ``topic_factory``, ``make_config``) fails at once with this reason
instead of quietly depending on `make services`. ``make unit`` runs this part.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def bootstrap_servers() -> str:
    pytest.fail("tests/unit runs without a broker: move a test that needs one to a broker suite")
