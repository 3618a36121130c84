"""``GET /metrics``: Prometheus text for the app's store and its process.

Besides the store's ``statestore_*`` series (statestore/metrics.py): the standard
``process_*`` and ``python_*`` collectors, ``statestore_build_info``, and
``statestore_http_request_duration_seconds``, a histogram of the time from a
request's arrival to the end of its response, by route template, method and
status code (requests matching no route are counted under route ``other``).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from statestore.metrics import StoreCollector

from .asgi import HttpMiddleware
from .auth import may_see

__all__ = ["ROUTE_KEY", "RequestTimer", "metrics_router"]

metrics_router = APIRouter(tags=["health"])

# Where a layer that answers without FastAPI's routing names the route it served.
ROUTE_KEY = "statestore.route"

_CONVERTER = re.compile(r"\{(\w+):\w+\}")
# Buckets from a cached read (~0.2 ms) to a slow wait or scan page (10 s).
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Held(Collector):
    """A collector that yields the families of metrics kept outside any registry."""

    def __init__(self, *metrics: Histogram) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        for metric in self._metrics:
            yield from metric.collect()


class RequestTimer(HttpMiddleware):
    """ASGI middleware observing each HTTP request's duration in the app's histogram."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        super().__init__(app)
        self.histogram = histogram

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or scope.get(ROUTE_KEY) or "other"
            self.histogram.labels(_bare(template), scope["method"], str(status[0])).observe(
                time.perf_counter() - started
            )


@functools.lru_cache(maxsize=256)
def _bare(template: str) -> str:
    """A route template without its parameters' converters: ``{key:anytext}`` is ``{key}``."""
    return _CONVERTER.sub(r"{\1}", template)


def request_histogram() -> Histogram:
    """A new request-duration histogram, kept by one app (never in a global registry)."""
    return Histogram(
        "statestore_http_request_duration_seconds",
        "Time from a request's arrival to the end of its response, by route template.",
        ["route", "method", "code"],
        buckets=_BUCKETS,
        registry=None,
    )


@metrics_router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
            "description": "Prometheus text",
        },
    },
    summary="Prometheus metrics: lag per partition, records applied, quarantined, bootstrap seconds",
)
async def metrics(request: Request) -> Response:
    """The series of the views this request may see (with tokens: the bearer token's views),
    and those of the process: its resources, the interpreter, request durations."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    histogram = getattr(request.app.state, "request_seconds", None)
    if histogram is not None:
        registry.register(_Held(histogram))
    store = request.app.state.store
    if store is not None:
        registry.register(StoreCollector(store, may_see(request)))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
