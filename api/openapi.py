"""What the OpenAPI schema says beyond the routes' signatures: error and position-header
responses, and the configured maxima.

Only documentation: nothing here runs while a request is answered.
"""

from __future__ import annotations

import http
from typing import Any

from statestore import Config

from .models import POSITION_HEADER, ErrorBody

__all__ = ["error_responses", "ok_with_position", "with_limits"]

_POSITION_DOC = {
    POSITION_HEADER: {
        "description": "The view's applied position when the read began (`<partition>:<offset>,...`).",
        "schema": {"type": "string"},
        "required": True,
    }
}


def ok_with_position(model: type[Any], description: str) -> dict[int | str, dict[str, Any]]:
    """The ``200`` entry of a view-scoped route: *model*, with ``X-Statestore-Position``."""
    return {200: {"model": model, "description": description, "headers": _POSITION_DOC}}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting *statuses* with the error model."""
    descriptions = {
        400: "The request body could not be read as UTF-8 JSON (`bad_request`).",
        401: "No bearer token, or an unknown one (`unauthorized`).",
        403: "The token is not scoped to this view, or may not rebuild it (`forbidden`); "
        "a state-changing request from another site (`cross_site`).",
        404: "Unknown view (`unknown_view`), or as documented for the route.",
        413: "Request body larger than 1 MiB (`body_too_large`).",
        422: "Invalid parameter or body (`invalid_request`), cursor (`invalid_cursor`), key "
        "(`invalid_key`), range (`invalid_range`) or more keys than `api.max_lookup_keys` "
        "(`too_many_keys`).",
        409: "As documented for the route.",
        502: "The snapshot destination could not be written (`snapshot_place_unavailable`).",
        429: "This client already has `api.max_waits_per_client` requests waiting for a "
        "`min_position` (`too_many_waits`).",
        503: "The view has not caught up yet (`not_ready`), has failed (`view_failed`), "
        "or the store is not open (`not_ready`).",
        504: "`min_position` was not reached within `wait_ms` (`position_not_reached`); "
        "`error.position` and `X-Statestore-Position` give the position reached.",
    }
    return {
        s: {"model": ErrorBody, "description": descriptions.get(s, http.HTTPStatus(s).phrase)}
        for s in statuses
    }


def with_limits(schema: dict[str, Any], config: Config) -> dict[str, Any]:
    """Write the configured maxima into the schema, so it states what the server enforces."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            for param in operation.get("parameters", []):
                if param.get("name") == "limit" and param.get("in") == "query":
                    param["schema"]["maximum"] = config.api.max_page_size
    lookup = schema.get("components", {}).get("schemas", {}).get("LookupRequest")
    if lookup is not None:
        lookup["properties"]["keys"]["maxItems"] = config.api.max_lookup_keys
    return schema
