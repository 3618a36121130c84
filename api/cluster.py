"""Any instance of a partitioned cluster answers for any key (docs/cluster.md).

:class:`ClusterRouter` sits outside the direct path and FastAPI. On an instance of a
partitioned cluster (``store.cluster`` set) it routes the key reads by the partition
their key hashes to (:meth:`statestore.cluster.Cluster.route`):

- ``GET /views/{view}/entities/{key}``: answered here when this instance serves the
  partition; else forwarded to the owner (one hop, the caller's token, the owner's
  status, body and position header passed back, ``X-Statestore-Owner`` naming it), or
  answered with a 307 to the owner when ``[cluster] forward = false``.
- ``POST /views/{view}/lookup``: split by owner, the parts asked in parallel, the
  answers put back in the order asked, their positions merged into one header.
- A view with records in other partitions than its partitioner puts their keys (counted
  by any instance) answers 409 ``misplaced_records`` for every key: such a key could be
  "not found" where it is routed while it exists elsewhere.
- A key whose partition is moving (no owner yet, two claims, or loading here) is a 503
  ``partition_moving`` with ``Retry-After``: never a 404 for a key that exists elsewhere.
- ``min_position`` is narrowed to the partitions of the keys asked, so each owner waits
  only for what it holds.
- ``GET /views/{view}/entities`` (a scan): every owner is asked for its keys from the
  cursor on, in parallel; the pages are merged in key order, and the next cursor names
  the last key given, so any instance continues it, across moves (a partition no one
  answers for is a 503).
- Index queries (by value, in key order; by range, in value then key order) are
  gathered the same way, each owner asked from the cursor's value and key on.
- The change stream (``GET /views/{view}/changes``) follows every partition's owner:
  this instance's feed and the other owners' streams, merged, with ids that resume on
  any instance (:mod:`api.cluster_changes`).

A forwarded request carries ``X-Statestore-Forwarded``; an instance that does not serve
the key of such a request answers 503 instead of forwarding it again, so a routing table
that is briefly wrong costs a retry, never a loop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
import orjson
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from statestore import StateStoreError, UnknownIndexError
from statestore.cluster import Route
from statestore.codecs import KeyCodec
from statestore.indexes import encode_index_value, parse_index_value
from statestore.position import format_position, parse_position
from statestore.view import Page

from .auth import authenticate_request, require_view
from .changes import stream_settings
from .cluster_changes import gathered_changes
from .deps import DEFAULT_PAGE_SIZE, DEFAULT_WAIT_MS, get_store, resolve_view
from .entities import ENTITY_PATH, LOOKUP_PATH, exact_tail
from .errors import ApiError, handled_error
from .fastpath import _json_body, _lookup_keys, _read_body, _replay
from .models import POSITION_HEADER, ClusterInfo, json_response

if TYPE_CHECKING:
    from statestore import StateStore
    from statestore.cluster import Cluster
    from statestore.view import View

__all__ = [
    "FORWARDED_HEADER",
    "OWNER_HEADER",
    "ClusterRouter",
    "close_forwarding",
    "cluster_router",
]

FORWARDED_HEADER = "X-Statestore-Forwarded"
# Asks the instance a call is forwarded to for its standby copy of the key's partition.
STANDBY_HEADER = "X-Statestore-Standby"
OWNER_HEADER = "X-Statestore-Owner"
_FORWARDED = FORWARDED_HEADER.lower().encode()
_STANDBY = STANDBY_HEADER.lower().encode()
# Request headers a forwarded call carries; response headers passed back.
_ASKED = (b"authorization", b"accept", b"x-request-id")
_ANSWERED = ("content-type", "retry-after", "www-authenticate", POSITION_HEADER.lower())
# The scan route, gathered from every owner.
SCAN_PATH = "/views/{view}/entities"
BY_PATH = "/views/{view}/by/{field}/{value:anytext}"
RANGE_PATH = "/views/{view}/by/{field}"
CHANGES_PATH = "/views/{view}/changes"
# A gathered scan's cursor: not signed (any instance may be asked for the next page, and
# it says no more than a `start`), checked against the request it continues.
_CURSOR_MARK = "g1."


@dataclass(frozen=True, slots=True)
class _Call:
    """One routed request: what each handler of :class:`ClusterRouter` needs."""

    request: Request
    store: StateStore
    cluster: Cluster
    match: re.Match[str]
    receive: Receive
    send: Send


cluster_router = APIRouter(tags=["cluster"])


@cluster_router.get(
    "/cluster",
    response_model=ClusterInfo,
    summary="The cluster's members and who answers for each partition",
)
async def cluster_info(request: Request) -> Response:
    """A replicated instance (the default) answers its mode alone: every instance holds
    every view. A partitioned one answers its members (URL, owned partitions, those it
    answers for, how recently each was heard from) and, per view, each partition's owner
    (null while it moves)."""
    store = get_store(request)
    cluster = store.cluster
    if cluster is None:
        info: dict[str, Any] = {
            "name": None,
            "mode": "replicated",
            "member": None,
            "joined": True,
            "rebalances": 0,
            "error": None,
            "members": [],
            "views": {},
        }
    else:
        info = cluster.describe()
    return json_response(info)


class ClusterRouter:
    """Route key reads to the instance owning the key's partition; pass the rest on."""

    def __init__(self, app: ASGIApp, *, authenticated: bool) -> None:
        self.app = app
        self.authenticated = authenticated
        self._entity = compile_path(ENTITY_PATH)[0]
        self._lookup = compile_path(LOOKUP_PATH)[0]
        self._scan = compile_path(SCAN_PATH)[0]
        self._by = compile_path(BY_PATH)[0]
        self._range = compile_path(RANGE_PATH)[0]
        self._changes = compile_path(CHANGES_PATH)[0]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = scope.get("app")
        store: StateStore | None = getattr(getattr(app, "state", None), "store", None)
        cluster = store.cluster if store is not None else None
        if scope["type"] != "http" or store is None or cluster is None:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if method in ("GET", "HEAD") and (match := self._entity.match(path)) is not None:
            handler = self._get
        elif method == "POST" and (match := self._lookup.match(path)) is not None:
            handler = self._lookup_split
        elif method == "GET" and (match := self._scan.match(path)) is not None:
            handler = self._scan_gather
        elif method == "GET" and (match := self._by.match(path)) is not None:
            handler = self._by_gather
        elif method == "GET" and (match := self._range.match(path)) is not None:
            handler = self._range_gather
        elif method == "GET" and (match := self._changes.match(path)) is not None:
            handler = self._changes_gather
        else:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await handler(_Call(request, store, cluster, match, receive, send))
        except (ApiError, StateStoreError) as exc:
            response = await handled_error(request, exc)
        if response is not None:  # None: the app answered
            await response(scope, receive, send)

    async def _changes_gather(self, call: _Call) -> Response | None:
        """The change stream of every partition, gathered from their owners; an owner's
        part (a forwarded call) is the app's stream of its own feed."""
        request = call.request
        if _is_forwarded(request.scope):
            await self.app(request.scope, call.receive, call.send)
            return None
        view = await self._view(request, call.store, call.match["view"])
        headers = {FORWARDED_HEADER: call.cluster.member, "accept": "text/event-stream"}
        for name, value in request.scope.get("headers", ()):
            if name in (b"authorization", b"x-request-id"):
                headers[name.decode("latin-1")] = value.decode("latin-1")
        return await gathered_changes(
            request, call.store, call.cluster, view, stream_settings(request), headers
        )

    # -- one key ---------------------------------------------------------------------------

    async def _get(self, call: _Call) -> Response | None:
        request, store, cluster, match = call.request, call.store, call.cluster, call.match
        scope = request.scope
        name = match["view"]
        view = await self._view(request, store, name)
        key = exact_tail(request, f"/views/{name}/entities/", match["key"])
        route = cluster.route(view, view.key_codec.from_text(key))
        scope["query_string"] = _narrowed(scope.get("query_string", b""), {route.partition})
        standby = route.standby
        here = standby is not None and standby.kind == "local"
        if _has(scope, _STANDBY):
            route = _standby_here(route)
        if route.kind == "local":
            # Its own partition; or another instance, whose owner did not answer, asks
            # this one's standby copy.
            await self.app(scope, call.receive, call.send)
            return None
        _check_routable(route, scope)
        if not cluster.config.forward:
            return _redirect(route, scope)
        try:
            return await self._forward(cluster, route, scope, scope["method"], None)
        except ApiError as exc:
            if exc.code != "owner_unavailable" or standby is None:
                raise
        # The owner is gone and the group has not noticed yet: a standby copy answers.
        if here:
            await self.app(scope, call.receive, call.send)
            return None
        assert standby is not None
        return await self._forward(cluster, standby, scope, scope["method"], None, standby=True)

    # -- many keys -------------------------------------------------------------------------

    async def _lookup_split(self, call: _Call) -> Response | None:
        request, store, cluster, match = call.request, call.store, call.cluster, call.match
        scope, receive = request.scope, call.receive
        body = await _read_body(receive) if _json_body(scope) else b""
        if body is None:
            return None
        keys = _lookup_keys(body) if body else None
        most = int(scope["app"].state.config.api.max_lookup_keys)
        if keys is None or len(keys) > most:
            # The app's own validation answers (422, 413, too_many_keys) as it does anywhere.
            await self.app(scope, _replay(body, receive), call.send)
            return None
        name = match["view"]
        view = await self._view(request, store, name)
        routes = [cluster.route(view, view.key_codec.from_text(k)) for k in keys]
        if _has(scope, _STANDBY):
            # Asked for standby copies: this instance's answer where it keeps one.
            routes = [_standby_here(r) for r in routes]
        query = scope.get("query_string", b"")
        if all(r.kind == "local" for r in routes):
            scope["query_string"] = _narrowed(query, {r.partition for r in routes})
            await self.app(scope, _replay(body, receive), call.send)
            return None
        for r in routes:
            if r.kind != "local":
                _check_routable(r, scope)
        return await self._lookup_parts(cluster, name, keys, routes, request, query)

    async def _lookup_parts(
        self,
        cluster: Cluster,
        name: str,
        keys: list[str],
        routes: list[Route],
        request: Request,
        query: bytes,
    ) -> Response:
        """Ask each owner for its keys at once; one answer in the order the keys were asked."""
        groups: dict[str | None, list[int]] = {}
        for i, r in enumerate(routes):
            groups.setdefault(r.url if r.kind == "remote" else None, []).append(i)
        if not cluster.config.forward:
            owners = sorted(u for u in groups if u is not None)
            if len(groups) == 1:
                return _redirect(routes[0], request.scope)
            raise ApiError(
                409,
                "keys_span_owners",
                f"these keys are held by {len(groups)} instances ({', '.join(owners)} and "
                "maybe this one) and [cluster] forward = false: split the lookup by owner "
                "(GET /cluster names them)",
            )
        scope = request.scope
        path = _raw_path(scope)

        async def part(url: str | None, indexes: list[int]) -> tuple[list[int], Response]:
            asked = [keys[i] for i in indexes]
            narrowed = _narrowed(query, {routes[i].partition for i in indexes})
            if url is None:
                params = dict(parse_qsl(narrowed.decode("latin-1")))
                ctx = await resolve_view(
                    request,
                    name,
                    params.get("min_position"),
                    _wait_ms(params.get("wait_ms")),
                    readable=True,
                )
                found = await run_in_threadpool(ctx.store.lookup, name, asked)
                items = [None if e is None else e.to_dict() for e in found]
                return indexes, json_response({"items": items}, headers=ctx.headers)
            route = routes[indexes[0]]
            return indexes, await self._forward(
                cluster,
                route,
                scope,
                "POST",
                orjson.dumps({"keys": asked}),
                path=path,
                query=narrowed,
                standby=any(routes[i].copy for i in indexes),
            )

        answers: list[tuple[list[int], Response]] = await asyncio.gather(
            *(part(u, ix) for u, ix in groups.items())
        )
        items: list[Any] = [None] * len(keys)
        position: dict[int, int] = {}
        for indexes, response in answers:
            if response.status_code != 200:
                return response
            data = orjson.loads(bytes(response.body))
            for i, item in zip(indexes, data["items"], strict=True):
                items[i] = item
            text = response.headers.get(POSITION_HEADER)
            if text:
                position.update(parse_position(text))
        headers = {POSITION_HEADER: format_position(dict(sorted(position.items())))}
        return json_response({"items": items}, headers=headers)

    # -- every key in order ------------------------------------------------------------------

    async def _scan_gather(self, call: _Call) -> Response | None:
        """A scan over every partition (``GET /views/{view}/entities``), gathered."""
        request, store = call.request, call.store
        if _is_forwarded(request.scope):
            # An owner's part of a gathered read: what this instance stores.
            await self.app(request.scope, call.receive, call.send)
            return None
        name = call.match["view"]
        view = await self._view(request, store, name)
        q = request.query_params
        fixed = {
            "prefix": q.get("prefix", ""),
            "start": q.get("start", ""),
            "end": q.get("end", ""),
        }

        def local(asked: dict[str, str], limit: int) -> Page:
            return store.scan(
                name,
                asked["prefix"],
                limit=limit,
                start=asked["start"] or None,
                end=asked["end"] or None,
            )

        order = _by_key(view.key_codec, fixed)
        ident = {"view": name, **fixed}
        return await self._gather(call, view, f"/views/{name}/entities", order, local, ident)

    async def _by_gather(self, call: _Call) -> Response | None:
        """The entities whose indexed field equals a value (``GET /views/{view}/by/{field}/
        {value}``), gathered in key order."""
        request, store = call.request, call.store
        indexed = await self._index_of(call)
        if indexed is None:
            return None
        view, name, field = indexed
        text = exact_tail(request, f"/views/{name}/by/{field}/", call.match["value"])
        value = parse_index_value(text)
        fixed = {"start": request.query_params.get("start", "")}

        def local(asked: dict[str, str], limit: int) -> Page:
            return store.by(name, field, value, limit=limit, start=asked["start"] or None)

        order = _by_key(view.key_codec, fixed)
        ident = {"view": name, "field": field, "value": text, **fixed}
        return await self._gather(call, view, _raw_path(request.scope), order, local, ident)

    async def _range_gather(self, call: _Call) -> Response | None:
        """The entities whose indexed field lies in a range (``GET /views/{view}/by/
        {field}``), gathered in the order of the values, then of keys."""
        request, store = call.request, call.store
        indexed = await self._index_of(call)
        if indexed is None:
            return None
        view, name, field = indexed
        q = request.query_params
        fixed = {"start": q.get("start", ""), "end": q.get("end", ""), "start_key": ""}
        if q.get("start_key"):
            fixed["start_key"] = q["start_key"]

        def local(asked: dict[str, str], limit: int) -> Page:
            return store.by_range(
                name,
                field,
                start=_bound(asked["start"]),
                end=_bound(asked["end"]),
                limit=limit,
                start_key=asked["start_key"] or None,
            )

        order = _by_value(view.key_codec, view.slot.index_paths[field], fixed)
        ident = {"view": name, "field": field, **fixed}
        return await self._gather(call, view, f"/views/{name}/by/{field}", order, local, ident)

    async def _index_of(self, call: _Call) -> tuple[View, str, str] | None:
        """The view and indexed field an index read asks of; None when the call is an
        owner's part of a gathered read, which the app has answered from this store."""
        if _is_forwarded(call.request.scope):
            await self.app(call.request.scope, call.receive, call.send)
            return None
        name, field = call.match["view"], call.match["field"]
        view = await self._view(call.request, call.store, name)
        if field not in view.config.indexes:
            raise UnknownIndexError(name, field, view.config.indexes)
        return view, name, field

    async def _gather(
        self,
        call: _Call,
        view: View,
        path: str,
        order: _Order,
        local: Callable[[dict[str, str], int], Page],
        ident: dict[str, str],
    ) -> Response:
        """A page of a read over every partition, in the read's order: each owner asked for
        its items from the cursor on, in parallel, the pages merged; the next cursor marks
        the last item given, so any instance continues it, and a partition that moved
        between pages is read from its new owner. An owner answers from what it stores;
        the items of the partitions it answers for are kept."""
        request, cluster = call.request, call.cluster
        scope = request.scope
        limit = _page_size(
            request.query_params.get("limit"), int(scope["app"].state.config.api.max_page_size)
        )
        after = request.query_params.get("after")
        asked = order.ask(None if after is None else _open_cursor(after, ident))
        owners, moving = cluster.serving_owners(view)
        if moving is not None:
            _check_routable(moving, scope)
        query = urlencode({k: v for k, v in {**asked, "limit": str(limit)}.items() if v}).encode(
            "latin-1"
        )

        async def part(url: str | None, partitions: frozenset[int]) -> _Part:
            if url is None:
                page = await run_in_threadpool(local, asked, limit)
                items = [e.to_dict() for e in page.items]
                more, position = page.next is not None, view.position_text()
            else:
                route = Route("remote", -1, url=url, member=url)
                answer = await self._forward(
                    cluster, route, scope, "GET", None, path=path, query=query
                )
                if answer.status_code != 200:
                    return _Part([], None, "", answer)
                data = orjson.loads(bytes(answer.body))
                items, more = data["items"], data["next"] is not None
                position = answer.headers.get(POSITION_HEADER, "")
            kept = [i for i in items if i["partition"] in partitions]
            return _Part(kept, items[-1] if more and items else None, position, None)

        parts: list[_Part] = await asyncio.gather(*(part(u, ps) for u, ps in owners.items()))
        for p in parts:
            if p.failed is not None:
                return p.failed
        lasts = [p.last for p in parts if p.last is not None]
        bound = min(lasts, key=order.sort) if lasts else None
        ceiling = None if bound is None else order.sort(bound)
        placed = [(order.sort(item), item) for p in parts for item in p.items]
        merged = sorted(
            (pair for pair in placed if ceiling is None or pair[0] <= ceiling),
            key=lambda pair: pair[0],
        )
        next_item = bound
        if len(merged) > limit:
            merged = merged[:limit]
            next_item = merged[-1][1]
        cursor = None if next_item is None else _cursor(order.mark(next_item), ident)
        position: dict[int, int] = {}
        for p in parts:
            if p.position:
                position.update(parse_position(p.position))
        headers = {POSITION_HEADER: format_position(dict(sorted(position.items())))}
        return json_response({"items": [i for _, i in merged], "next": cursor}, headers=headers)

    # -- shared ----------------------------------------------------------------------------

    async def _view(self, request: Request, store: StateStore, name: str) -> View:
        """The view asked for, with the caller's token checked as the route checks it."""
        if self.authenticated:
            await authenticate_request(request)
        require_view(request, name)
        return store.view(name)

    async def _forward(
        self,
        cluster: Cluster,
        route: Route,
        scope: Scope,
        method: str,
        body: bytes | None,
        *,
        path: str | None = None,
        query: bytes | None = None,
        standby: bool = False,
    ) -> Response:
        """The owner's answer to this request, passed back as it is (one hop); with
        *standby*, the answer of the instance keeping a standby copy of the partition."""
        assert route.url is not None
        url = _target(route, scope, path=path, query=query)
        headers = {FORWARDED_HEADER: cluster.member}
        if standby or route.copy:
            headers[STANDBY_HEADER] = "1"
        for name, value in scope.get("headers", ()):
            if name in _ASKED:
                headers[name.decode("latin-1")] = value.decode("latin-1")
        if body is not None:
            headers["content-type"] = "application/json"
        session = _session(scope)
        timeout = aiohttp.ClientTimeout(total=cluster.config.forward_timeout_s)
        try:
            async with session.request(
                method, url, headers=headers, data=body, timeout=timeout, allow_redirects=False
            ) as answer:
                content = await answer.read()
                status = answer.status
                passed = {k: v for k, v in answer.headers.items() if k.lower() in _ANSWERED}
        except TimeoutError:
            raise ApiError(
                504,
                "owner_timeout",
                f"the instance owning partition {route.partition} ({route.member}) did not "
                f"answer within {cluster.config.forward_timeout_s:g} s",
            ) from None
        except aiohttp.ClientError as exc:
            raise ApiError(
                503,
                "owner_unavailable",
                f"the instance owning partition {route.partition} ({route.member}) cannot be "
                f"reached: {type(exc).__name__}; retry shortly (a dead owner's partitions move)",
                headers={"Retry-After": "1"},
            ) from None
        passed[OWNER_HEADER] = route.member or ""
        return Response(content, status_code=status, headers=passed)


def _session(scope: Scope) -> aiohttp.ClientSession:
    """The app's connection pool to the other instances, made on first use on this event
    loop (a test client may run several loops); the app's lifespan closes it."""
    state = scope["app"].state
    loop = asyncio.get_running_loop()
    held: tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession] | None = getattr(
        state, "forwarding", None
    )
    if held is None or held[0] is not loop or held[1].closed:
        session = aiohttp.ClientSession(trust_env=False, auto_decompress=True)
        state.forwarding = (loop, session)
        return session
    return held[1]


async def close_forwarding(state: Any) -> None:
    """Close the connection pool :func:`_session` made (the app's lifespan, at shutdown)."""
    held = getattr(state, "forwarding", None)
    state.forwarding = None
    if held is not None and held[0] is asyncio.get_running_loop():
        await held[1].close()


@dataclass(frozen=True, slots=True)
class _Part:
    """One owner's part of a gathered read: the items of the partitions it answers for, the
    last item it gave when it has more (None: it gave all), its position, or its failure."""

    items: list[dict[str, Any]]
    last: dict[str, Any] | None
    position: str
    failed: Response | None


def _standby_here(route: Route) -> Route:
    """*route*, or this instance's standby copy when it keeps one of the partition."""
    standby = route.standby
    return standby if standby is not None and standby.kind == "local" else route


def _has(scope: Scope, header: bytes) -> bool:
    return any(name == header for name, _ in scope.get("headers", ()))


def _is_forwarded(scope: Scope) -> bool:
    return _has(scope, _FORWARDED)


def _page_size(text: str | None, most: int) -> int:
    if text is None:
        return min(DEFAULT_PAGE_SIZE, most)
    try:
        limit = int(text)
    except ValueError:
        raise ApiError(422, "invalid_request", "query.limit: not an integer") from None
    if not 1 <= limit <= most:
        raise ApiError(422, "invalid_request", f"query.limit: must be between 1 and {most}")
    return limit


@dataclass(frozen=True, slots=True)
class _Order:
    """How a gathered read orders its items and resumes after one."""

    # An item's place in the read's order (the bytes its store orders it by).
    sort: Callable[[dict[str, Any]], bytes]
    # What a cursor keeps of an item: enough to resume after it.
    mark: Callable[[dict[str, Any]], Any]
    # The read's parameters after a mark (None: the first page).
    ask: Callable[[Any], dict[str, str]]


def _by_key(codec: KeyCodec, fixed: dict[str, str]) -> _Order:
    """Key order (scans, index queries by value): resumed with ``start`` past the key."""

    def ask(last: Any) -> dict[str, str]:
        asked = dict(fixed)
        if last is not None:
            if not isinstance(last, str):
                raise _cursor_error()
            successor = codec.to_text(codec.from_text(last) + b"\x00")
            if not asked["start"] or codec.from_text(successor) > codec.from_text(asked["start"]):
                asked["start"] = successor
        return asked

    return _Order(
        sort=lambda item: codec.from_text(item["key"]), mark=lambda item: item["key"], ask=ask
    )


def _by_value(codec: KeyCodec, path: tuple[str, ...], fixed: dict[str, str]) -> _Order:
    """Index order (value, then key; index ranges): resumed with ``start`` at the value and
    ``start_key`` past the key."""

    def sort(item: dict[str, Any]) -> bytes:
        encoded = encode_index_value(_scalar(item["value"], path))
        return (b"\xff" if encoded is None else encoded) + b"\x00" + codec.from_text(item["key"])

    def ask(last: Any) -> dict[str, str]:
        asked = dict(fixed)
        if last is not None:
            if not (isinstance(last, list) and len(last) == 2 and isinstance(last[1], str)):
                raise _cursor_error()
            value, key = last
            if encode_index_value(value) is None:
                raise _cursor_error()
            # JSON text: read back as that value (a quoted string stays a string).
            asked["start"] = orjson.dumps(value).decode()
            asked["start_key"] = codec.to_text(codec.from_text(key) + b"\x00")
        return asked

    return _Order(sort=sort, mark=lambda item: [_scalar(item["value"], path), item["key"]], ask=ask)


def _scalar(value: Any, path: tuple[str, ...]) -> Any:
    """The scalar at *path* in an entity's value (None: absent or not a scalar)."""
    node = value
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if isinstance(node, (dict, list)) else node


def _bound(text: str) -> Any:
    """A range bound as typed in the URL; empty: open."""
    return None if text == "" else parse_index_value(text)


def _cursor(mark: Any, ident: dict[str, str]) -> str:
    data = orjson.dumps({"m": mark, "q": ident})
    return _CURSOR_MARK + base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _cursor_error() -> ApiError:
    return ApiError(
        422, "invalid_cursor", "the cursor is not one this read gave; start from the first page"
    )


def _open_cursor(cursor: str, ident: dict[str, str]) -> Any:
    """What a gathered page's cursor marks; 422 for a cursor of another read or none."""
    try:
        if not cursor.startswith(_CURSOR_MARK):
            raise ValueError("not a gathered read's cursor")
        body = cursor[len(_CURSOR_MARK) :]
        data = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        mark, same = data["m"], data["q"] == ident
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise _cursor_error() from None
    if not same:
        raise ApiError(
            422,
            "invalid_cursor",
            "the cursor belongs to another read (view, prefix, key range, index or value); "
            "pass the same ones as the page that gave it",
        )
    return mark


def _raw_path(scope: Scope) -> str:
    """The request's path as the client sent it (still percent-encoded)."""
    raw = scope.get("raw_path")
    return raw.split(b"?", 1)[0].decode("latin-1") if isinstance(raw, bytes) else scope["path"]


def _redirect(route: Route, scope: Scope) -> Response:
    """307 to the same request on the owner (``[cluster] forward = false``)."""
    response = RedirectResponse(_target(route, scope), status_code=307)
    response.headers[OWNER_HEADER] = route.member or ""
    return response


def _wait_ms(text: str | None) -> int:
    try:
        return max(0, int(text)) if text is not None else DEFAULT_WAIT_MS
    except ValueError:
        raise ApiError(422, "invalid_request", "query.wait_ms: not an integer") from None


def _check_routable(route: Route, scope: Scope) -> None:
    """409 for a view whose records are misplaced; 503 for a key no instance serves now,
    or one that was forwarded here already."""
    if route.kind == "refused":
        raise ApiError(409, "misplaced_records", route.reason)
    if route.kind == "moving":
        raise ApiError(
            503,
            "partition_moving",
            f"{route.reason}; retry shortly",
            headers={"Retry-After": "1"},
        )
    if _is_forwarded(scope):
        raise ApiError(
            503,
            "partition_moving",
            f"partition {route.partition} was forwarded here but is owned by {route.member} "
            "now (it moved); retry shortly",
            headers={"Retry-After": "1"},
        )


def _target(
    route: Route, scope: Scope, *, path: str | None = None, query: bytes | None = None
) -> str:
    """The owner's URL for this request: the same raw path and query string."""
    if path is None:
        path = _raw_path(scope)
    if query is None:
        query = scope.get("query_string", b"")
    url = f"{route.url}{path}"
    return f"{url}?{query.decode('latin-1')}" if query else url


def _narrowed(query: bytes, partitions: Iterable[int]) -> bytes:
    """*query* with ``min_position`` kept to *partitions* (each owner waits for its own)."""
    if b"min_position" not in query:
        return query
    wanted = set(partitions)
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    out = []
    for name, value in pairs:
        if name == "min_position":
            try:
                position = parse_position(value)
            except ValueError:
                return query  # the route's validation answers it
            kept = {p: o for p, o in position.items() if p in wanted}
            if not kept:
                continue
            value = format_position(kept)
        out.append((name, value))
    return urlencode(out, safe=":,").encode("latin-1")
