"""The wire shapes of the REST API and their JSON encoding.

The pydantic models document the API (OpenAPI) and validate request bodies.
Responses are not validated against them at run time: the routes render plain
dicts with orjson, which keeps the read path cheap; the tests check that what
is rendered conforms to these models.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse, Response

from statestore import StateStore, ViewState, ViewStatus, format_position

__all__ = [
    "POSITION_HEADER",
    "EntityBody",
    "EntityPage",
    "ErrorBody",
    "ErrorInfo",
    "Health",
    "JSONBytesResponse",
    "LookupRequest",
    "LookupResult",
    "PartitionInfo",
    "QuarantinePage",
    "QuarantinedRecord",
    "Readiness",
    "ViewEventInfo",
    "ViewInfo",
    "ViewList",
    "ViewReadiness",
    "dumps",
    "json_response",
    "view_info",
]

# The view's applied position on every view-scoped answer, errors included: set by
# the view dependency (api/deps.py), rendered on errors by api/errors.py.
POSITION_HEADER = "X-Statestore-Position"


def _default(obj: Any) -> Any:
    # Values of `bytes` views (and Avro bytes/fixed fields) have no JSON form: serve base64 text.
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(obj).decode("ascii")
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def dumps(data: Any) -> bytes:
    """JSON bytes of *data*; bytes become base64 text, decimals strings."""
    return orjson.dumps(data, default=_default)


class JSONBytesResponse(JSONResponse):
    """A JSON response rendered by orjson, with the same encoding rules as :func:`dumps`."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def json_response(
    data: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """Render *data* straight to a response, skipping response-model validation."""
    return Response(dumps(data), status_code, headers, media_type="application/json")


def view_info(store: StateStore, status: ViewStatus, *, schemas: bool = True) -> dict[str, Any]:
    """A ``ViewInfo`` body: *status*, the view's applied position and, with *schemas*, the
    writer schemas in use (looked up in the registry's cache)."""
    data = status.to_dict()
    data["position"] = format_position(store.position(status.name))
    if schemas:
        data["schemas"] = store.schemas(status.name)
    return data


# -- entities -------------------------------------------------------------------------


class EntityBody(BaseModel):
    """One entity: the latest value of a key and the record it came from."""

    key: str = Field(
        description="The key, as text (hex for `bytes` keys, canonical JSON for `json` keys)."
    )
    value: Any = Field(
        description="The decoded value: JSON for `json`, `avro` and `json_schema` views, the "
        "canonical proto3 JSON mapping for `protobuf` views, text for `string` views, "
        "base64 text for `bytes` views."
    )
    partition: int = Field(description="Kafka partition of the record the value came from.")
    offset: int = Field(description="Kafka offset of that record.")
    timestamp: int | None = Field(
        description="Record timestamp in milliseconds since the epoch, if any."
    )


class EntityPage(BaseModel):
    """A page of entities in key order."""

    items: list[EntityBody]
    next: str | None = Field(
        description="Cursor for the next page (pass it back as `after` unchanged); null on the last page."
    )


class LookupRequest(BaseModel):
    """Keys to fetch in one call."""

    keys: list[str] = Field(
        description="Keys to fetch; at most `api.max_lookup_keys` (1000 by default)."
    )


class LookupResult(BaseModel):
    """The entities asked for, in the order asked; null where a key is absent or deleted."""

    items: list[EntityBody | None]


# -- quarantine -----------------------------------------------------------------------


class QuarantinedRecord(BaseModel):
    """A record the view could not apply, kept for inspection."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: str | None = Field(description="The raw key, base64; null for a null key.")
    value: str | None = Field(description="The raw value, base64; null for a tombstone.")
    reason: str = Field(description="Why the record was not applied.")


class QuarantinePage(BaseModel):
    """A page of quarantined records in partition/offset order."""

    items: list[QuarantinedRecord]
    next: str | None


# -- views ----------------------------------------------------------------------------


class PartitionInfo(BaseModel):
    """One partition of a view's topic."""

    partition: int
    position: int = Field(
        description="Next offset the view will read; every offset below it is applied."
    )
    end_offset: int | None = Field(description="The partition's high watermark when last seen.")
    lag: int | None = Field(description="end_offset - position.")


class SchemaInfo(BaseModel):
    """A writer schema that entities of an Avro, Protobuf or JSON Schema view use."""

    id: int
    subject: str | None
    version: int | None
    versions: list[Any] = Field(description="Every subject/version the registry listed for the id.")
    guid: str | None
    entities: int = Field(description="Entities currently stored with this writer schema.")


class LoadInfo(BaseModel):
    """A bulk load under way: a first bootstrap or a rebuild's new copy."""

    phase: Literal["reading", "merging"]
    processes: int = Field(
        description="Worker processes reading (0: read in the server's process)."
    )
    records_read: int = Field(description="Records read by this run so far.")
    offsets_left: int = Field(
        description="Offsets left to read below the end offsets of the start."
    )
    started_at_ms: int


class ViewEventInfo(BaseModel):
    """A staleness event or rebuild, kept in the store across restarts."""

    at_ms: int = Field(description="When, in milliseconds since the epoch.")
    cause: str = Field(
        description="Why, in a word: requested, config_changed, below_log_start, "
        "past_end_offset, topic_recreated, away_too_long."
    )
    reason: str = Field(description="Why, in full.")


class PartitioningInfo(BaseModel):
    """How the view's records sit against the partitioner it declares."""

    partitioner: str = Field(description="The partitioner the view's config declares.")
    misplaced: int = Field(
        description="Keyed records read in another partition than the partitioner gives "
        "their key (a reader routing by key would not find them there)."
    )
    checked_from: dict[str, int] = Field(
        description="Empty when every record read was checked; else the position per "
        "partition the check began at (the partitioner was declared after it)."
    )
    first: dict[str, Any] | None = Field(
        description="The first misplaced record met while following: partition, offset, "
        "key (base64) and the partition expected."
    )


class ClusterMember(BaseModel):
    """One instance of a partitioned cluster, as the answering instance sees it."""

    member: str = Field(description="Its id: `[cluster] instance_id`, or one made at start.")
    url: str = Field(description="Where the others reach it (`[cluster] advertised_url`).")
    self: bool = Field(description="Whether this is the instance answering.")
    alive: bool = Field(description="Whether its membership record is recent.")
    last_seen_s: float = Field(description="Seconds since its last membership record.")
    owned: dict[str, list[int]] = Field(description="Per topic, the partitions the group gave it.")
    serving: dict[str, list[int]] = Field(
        description="Per view, the owned partitions it has read to the end and answers for."
    )
    standby: dict[str, list[int]] = Field(
        description="Per view, the partitions it keeps a standby copy of, read to the end "
        "(`[cluster] standbys = 1`)."
    )
    misplaced: dict[str, int] = Field(
        description="Per view, records it read in another partition than the partitioner "
        "gives their key (any: the view answers no key, 409 misplaced_records)."
    )


class ClusterView(BaseModel):
    """Who answers for each partition of one view."""

    topic: str
    partitions: int = Field(description="The topic's partition count as last read.")
    partitioner: str | None
    owners: dict[str, str | None] = Field(
        description="Per partition, the member owning it; null while it moves."
    )


class ClusterInfo(BaseModel):
    """The cluster this instance belongs to (`GET /cluster`)."""

    name: str | None = Field(description="`[cluster] name` (the consumer group); null: replicated.")
    mode: Literal["replicated", "partitioned"]
    member: str | None = Field(description="This instance's member id (partitioned only).")
    joined: bool = Field(
        description="Whether the group has given this instance its partitions (maybe none)."
    )
    rebalances: int = Field(description="Assignment changes this instance has taken part in.")
    error: str | None = Field(description="Why membership records cannot be read or written now.")
    members: list[ClusterMember]
    views: dict[str, ClusterView]


class ViewInfo(BaseModel):
    """A view's status at one moment."""

    name: str
    topic: str
    state: ViewState
    reason: str | None = Field(
        description="Why the view is in its state (failures, rebuilds, Kafka trouble)."
    )
    keys: int = Field(description="Number of live keys.")
    records_applied: int
    bytes_applied: int
    quarantined: int = Field(description="Records that could not be applied and were quarantined.")
    lag: int | None = Field(
        description="Records not yet applied, summed over partitions; null before the first look."
    )
    partitions: list[PartitionInfo]
    bootstrap_seconds: float | None
    last_applied_at_ms: int | None
    bootstrap_records: int = Field(
        description="Records read by the last bootstrap in this process."
    )
    generation: int
    rebuilds: int = Field(
        description="Rebuilds swapped in, over every process (kept in the store)."
    )
    stale_events: int = Field(
        description="Times the view was found untrustworthy (stale guards), over every process."
    )
    last_stale: ViewEventInfo | None = Field(default=None, description="The last staleness event.")
    last_rebuild: ViewEventInfo | None = Field(default=None, description="The last rebuild.")
    servable: bool = Field(
        description="This copy caught up at least once: reads are served while it catches up again."
    )
    schema_entities: dict[str, int] = Field(
        description="Entities per Avro writer schema id (empty for other views)."
    )
    schemas: list[SchemaInfo] = Field(
        default_factory=list,
        description="Avro writer schemas in use with their subject and version (empty otherwise).",
    )
    position: str = Field(
        description="Applied position `<partition>:<offset>,...` (offset of the last applied record, -1: none)."
    )
    load: LoadInfo | None = Field(
        default=None, description="The bulk load under way, if any (progress of a bootstrap)."
    )
    partitioning: PartitioningInfo | None = Field(
        default=None,
        description="Records checked against the view's partitioner (null: none declared).",
    )


class ViewList(BaseModel):
    """Every view the caller may read."""

    views: list[ViewInfo]


# -- health ---------------------------------------------------------------------------


class Health(BaseModel):
    """Liveness."""

    status: Literal["ok"]


class ViewReadiness(BaseModel):
    """Whether one view has caught up."""

    name: str
    state: ViewState
    reason: str | None


class Readiness(BaseModel):
    """Readiness: every view caught up (and none failed)."""

    status: Literal["ready", "not_ready"]
    views: list[ViewReadiness]


# -- errors ---------------------------------------------------------------------------


class ErrorInfo(BaseModel):
    """What went wrong, for programs (`code`) and for people (`message`)."""

    code: str = Field(
        description="Stable error code: unauthorized, forbidden, unknown_view, not_found, unknown_index, "
        "invalid_request, invalid_cursor, invalid_key, invalid_range, undecodable_value, registry_unavailable, too_many_keys, body_too_large, "
        "not_ready, view_failed, position_not_reached, internal_error, ..."
    )
    message: str
    state: ViewState | None = Field(
        default=None, description="The view's state (not_ready, view_failed)."
    )
    reason: str | None = Field(default=None, description="Why the view is in that state.")
    position: str | None = Field(
        default=None, description="The position the view did reach (position_not_reached)."
    )


class ErrorBody(BaseModel):
    """Every error response."""

    error: ErrorInfo
