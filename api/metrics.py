"""``GET /metrics``: Prometheus text for the app's store."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from statestore.metrics import StoreCollector

__all__ = ["metrics_router"]

metrics_router = APIRouter(tags=["health"])


def _registry(request: Request) -> CollectorRegistry:
    registry: CollectorRegistry | None = getattr(request.app.state, "metrics_registry", None)
    store = request.app.state.store
    if registry is None or getattr(request.app.state, "metrics_store", None) is not store:
        registry = CollectorRegistry(auto_describe=False)
        if store is not None:
            registry.register(StoreCollector(store))
        request.app.state.metrics_registry = registry
        request.app.state.metrics_store = store
    return registry


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
    return Response(generate_latest(_registry(request)), media_type=CONTENT_TYPE_LATEST)
