"""``GET /metrics``: Prometheus text for the app's store."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from statestore.metrics import StoreCollector

from .auth import may_see

__all__ = ["metrics_router"]

metrics_router = APIRouter(tags=["health"])


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
    """The series of the views this request may see (with tokens: the bearer token's views)."""
    registry = CollectorRegistry(auto_describe=False)
    store = request.app.state.store
    if store is not None:
        registry.register(StoreCollector(store, may_see(request)))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
