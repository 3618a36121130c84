"""The local schema registry (Apicurio, through its Confluent-compatible API)."""

from __future__ import annotations

import os

import httpx
import pytest

REGISTRY_URL = os.environ.get("STATESTORE_TEST_REGISTRY", "http://127.0.0.1:8081/apis/ccompat/v7")


def require_registry(url: str = REGISTRY_URL) -> str:
    """*url* once the registry answers there; fails the test (never skips) when it does not."""
    try:
        response = httpx.get(f"{url}/subjects", timeout=10)
    except httpx.HTTPError as exc:
        pytest.fail(
            f"no schema registry answers at {url} ({exc}); "
            "start it with `scripts/local-registry start` (make test does)"
        )
    if response.status_code != 200:
        pytest.fail(f"GET {url}/subjects answered {response.status_code}: {response.text[:200]}")
    return url
