"""A partitioned view's change stream, gathered from every owner (docs/cluster.md).

``GET /views/{view}/changes`` on an instance of a partitioned cluster follows the
group's owner of each partition (:meth:`statestore.cluster.Cluster.owners`): this
instance's own feed for the partitions it owns, and for each other owner a stream of
its partitions' changes (the same route, asked with ``X-Statestore-Forwarded`` and
``partitions``, which that instance answers from its own feed). Their events are
merged as they come: each partition's changes keep their offset order (one owner
sends them all), partitions interleave.

**Ids.** A gathered event's id is ``g1.<base64url JSON>``: the owner map it was read
under (a short hash of which member owns which partition) and each owner's own last
id. Given back as ``Last-Event-ID`` to any instance, the stream resumes each owner
right after its last change while the owner map is the same and each owner still
buffers them; an owner that cannot (it restarted, its buffer moved on) sends a reset,
passed on.

**Moves.** When the owner map changes (an instance joined, left or died, and the
group moved partitions), the stream waits until every partition's owner answers for
it (has read it), subscribes to the new owners, and only then sends ``event: reset``:
the client rescans, reading every partition from its owner, and every change after
the rescan's start is in the stream. Changes applied while a partition moved are in
that rescan, not in the stream. An owner that cannot be reached while the map still
names it is asked again, from its last id, once every partition is answered by its
owner (a restarted owner reading its partitions again is waited for the same way).

The merged stream reads no faster than its client: each owner's stream waits while
the client does, and an owner whose buffer its reader falls behind drops it
(``event: dropped`` with the gathered id to resume from), as a single instance does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import aiohttp
import orjson
from starlette.requests import Request
from starlette.responses import Response

from statestore import InvalidKeyError, NotReadyError
from statestore import changes as feeds
from statestore.position import format_position, parse_position

from .changes import KEEP_ALIVE, EventStreamResponse, sse_event, wake_event
from .errors import ApiError
from .models import POSITION_HEADER, dumps

if TYPE_CHECKING:
    from statestore import StateStore
    from statestore.cluster import Cluster
    from statestore.view import View

    from .changes import ChangeStreamSettings

__all__ = ["GatheredId", "SseParser", "gathered_changes", "owner_epoch"]

log = logging.getLogger(__name__)

# Queued events a gathered stream holds for its client before its owners' streams wait.
_QUEUE = 1000
# How often a broken owner's stream is asked again, and the owner map looked at.
_RETRY_S = 1.0

Owners = dict[int, tuple[str, str | None] | None]


@dataclass(frozen=True, slots=True)
class GatheredId:
    """Where a gathered stream's client stands: the owner map and each owner's last id."""

    epoch: str
    ids: dict[str, str]

    def __str__(self) -> str:
        data = orjson.dumps({"e": self.epoch, "m": self.ids}, option=orjson.OPT_SORT_KEYS)
        return feeds.GATHERED_MARK + base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")

    @classmethod
    def parse(cls, text: str) -> GatheredId | None:
        """The id in *text*; None when it is not one a gathered stream wrote."""
        if not feeds.is_gathered_id(text):
            return None
        body = text[len(feeds.GATHERED_MARK) :]
        try:
            data = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            epoch, ids = data["e"], data["m"]
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        if not isinstance(epoch, str) or not isinstance(ids, dict):
            return None
        try:
            for member, last in ids.items():
                if not isinstance(member, str) or not isinstance(last, str):
                    return None
                feeds.ChangeId.parse(last)  # each owner's id is one an instance wrote
        except ValueError:
            return None
        return cls(epoch, ids)


def owner_epoch(owners: Owners) -> str:
    """A short name of an owner map: equal maps, equal names, on every instance."""
    members = [[p, None if o is None else o[0]] for p, o in sorted(owners.items())]
    return hashlib.sha256(orjson.dumps(members)).hexdigest()[:12]


class SseParser:
    """Server-sent events out of a byte stream: ``(event, id, data)`` per complete event;
    comments (keep-alives) skipped. Lines end with ``\\n``, as statestore writes them."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> list[tuple[str, str | None, bytes]]:
        buf = self._rest + chunk if self._rest else chunk
        out: list[tuple[str, str | None, bytes]] = []
        start = 0
        while (end := buf.find(b"\n\n", start)) >= 0:
            name, event_id, data = "message", None, []
            for line in buf[start:end].split(b"\n"):
                if line.startswith(b":"):
                    continue
                key, _, value = line.partition(b":")
                if value.startswith(b" "):
                    value = value[1:]
                if key == b"event":
                    name = value.decode()
                elif key == b"id":
                    event_id = value.decode()
                elif key == b"data":
                    data.append(value)
            if data:
                out.append((name, event_id, b"\n".join(data)))
            start = end + 2
        self._rest = buf[start:]
        return out


@dataclass(eq=False)
class _Source:
    """One owner's part of the stream: its partitions, what it last sent, its task."""

    member: str
    url: str | None  # None: this instance's own feed
    partitions: frozenset[int]
    last_id: str | None
    subscribed: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    position: str = ""
    task: asyncio.Task[None] | None = None
    broken: str | None = None


@dataclass(frozen=True, slots=True)
class _Ask:
    """What the client asked: the view, its key prefix, and the caller's headers."""

    view: str
    prefix: str
    headers: dict[str, str]


@dataclass(eq=False)
class _Gather:
    """The sources of one gathered stream, and its merge (made on the event loop)."""

    store: StateStore
    cluster: Cluster
    view: View
    ask: _Ask
    settings: ChangeStreamSettings
    queue: asyncio.Queue[tuple[_Source, str, str | None, bytes]] = field(
        default_factory=lambda: asyncio.Queue(_QUEUE)
    )
    sources: list[_Source] = field(default_factory=list)
    # The owner map the sources follow (owner_epoch); empty: none followed.
    epoch: str = ""
    session: aiohttp.ClientSession = field(
        default_factory=lambda: aiohttp.ClientSession(trust_env=False)
    )

    # -- opening ----------------------------------------------------------------------------

    def owners(self) -> Owners | None:
        """The owner map now; None while a partition has no owner (or two), or its owner
        does not answer for it yet. A client rescans after a reset: that rescan must read
        every partition from its owner, whose stream carries what came after, not from a
        standby copy that may be behind what the owner loaded in bulk (no stream has
        that)."""
        owners = self.cluster.owners(self.view, serving=True)
        return owners if owners and None not in owners.values() else None

    async def open(self, owners: Owners, resume: GatheredId | None) -> list[dict[str, Any]]:
        """Subscribe to each owner's partitions (after *resume*'s ids when its map is this
        one); their ``subscribed`` data. Raises ApiError when an owner cannot be asked."""
        await self.close_sources()
        # Events of the streams just closed are passed over (a reset follows them).
        self.queue = asyncio.Queue(_QUEUE)
        self.epoch = owner_epoch(owners)
        ids = resume.ids if resume is not None and resume.epoch == self.epoch else {}
        parts: dict[tuple[str, str | None], set[int]] = {}
        for partition, owner in owners.items():
            assert owner is not None
            parts.setdefault(owner, set()).add(partition)
        self.sources = [
            _Source(member, url, frozenset(ps), ids.get(member))
            for (member, url), ps in sorted(parts.items())
        ]
        for source in self.sources:
            source.task = asyncio.create_task(self._run(source))
        timeout = self.cluster.config.forward_timeout_s
        try:
            async with asyncio.timeout(timeout):
                started = await asyncio.gather(
                    *(s.subscribed for s in self.sources), return_exceptions=True
                )
        except TimeoutError:
            late = [s.member for s in self.sources if not s.subscribed.done()]
            await self.close_sources()
            raise ApiError(
                504,
                "owner_timeout",
                f"the instances {', '.join(late)} did not start their change streams within "
                f"{timeout:g} s",
            ) from None
        except BaseException:
            await self.close_sources()
            raise
        failed = [r for r in started if isinstance(r, BaseException)]
        if failed:
            await self.close_sources()
            raise failed[0]
        data: list[dict[str, Any]] = [r for r in started if isinstance(r, dict)]
        for source, subscribed in zip(self.sources, data, strict=True):
            # Resumed: the id given; else where its stream starts (a reset follows).
            source.last_id = str(subscribed["id"])
        return data

    async def close_sources(self) -> None:
        tasks = [s.task for s in self.sources if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.sources = []

    async def close(self) -> None:
        await self.close_sources()
        await self.session.close()

    # -- the owners' streams -------------------------------------------------------------

    async def _run(self, source: _Source) -> None:
        try:
            if source.url is None:
                await self._run_local(source)
            else:
                await self._run_remote(source)
        except asyncio.CancelledError:
            raise
        except (ApiError, _Refused) as exc:
            if not source.subscribed.done():
                source.subscribed.set_exception(exc)
            else:
                await self._broken(source, str(exc))
        except Exception as exc:  # the owner went away mid-stream (or never answered)
            reason = f"{type(exc).__name__}: {exc}"
            if not source.subscribed.done():
                source.subscribed.set_exception(
                    ApiError(
                        503,
                        "owner_unavailable",
                        f"the instance {source.member} cannot be reached for its change "
                        f"stream ({reason}); retry shortly",
                        headers={"Retry-After": "1"},
                    )
                )
            else:
                await self._broken(source, reason)

    async def _broken(self, source: _Source, reason: str) -> None:
        log.info("cluster.changes_source_lost member=%s reason=%s", source.member, reason)
        await self.queue.put((source, "_broken", None, reason.encode()))

    async def _run_remote(self, source: _Source) -> None:
        assert source.url is not None
        query = {
            "prefix": self.ask.prefix,
            "partitions": ",".join(map(str, sorted(source.partitions))),
            "last_id": source.last_id or "",
        }
        url = f"{source.url}/views/{self.ask.view}/changes?" + urlencode(
            {k: v for k, v in query.items() if v}
        )
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.cluster.config.forward_timeout_s
        )
        async with self.session.get(url, headers=self.ask.headers, timeout=timeout) as answer:
            if answer.status != 200:
                body = await answer.read()
                passed = {
                    k: v
                    for k, v in answer.headers.items()
                    if k.lower() in ("content-type", "retry-after", "www-authenticate")
                }
                raise _Refused(Response(body, status_code=answer.status, headers=passed))
            source.position = answer.headers.get(POSITION_HEADER, "")
            parser = SseParser()
            async for chunk in answer.content.iter_any():
                for name, event_id, data in parser.feed(chunk):
                    if name == "subscribed" and not source.subscribed.done():
                        source.subscribed.set_result(orjson.loads(data))
                    else:
                        await self.queue.put((source, name, event_id, data))
        raise ConnectionResetError("the stream ended")

    async def _run_local(self, source: _Source) -> None:
        try:
            feed = self.store.change_feed(
                self.ask.view, buffer=self.settings.buffer, buffer_bytes=self.settings.buffer_bytes
            )
        except NotReadyError:  # the store closed: the server stops, so does the stream
            await self.queue.put((source, "_closed", None, b""))
            return
        sub: feeds.Subscription = feed.open(
            prefix=self.ask.prefix,
            last_id=source.last_id,
            max_pending=self.settings.max_pending,
            partitions=source.partitions,
        )
        wake = wake_event(sub)
        try:
            source.position = self.view.position_text()
            if not source.subscribed.done():  # else asked again: passed over
                source.subscribed.set_result({"id": sub.start_id, "resumed": sub.resumed})
            while True:
                wake.clear()
                try:
                    events = sub.poll(self.settings.batch)
                except feeds.FellBehindError as exc:
                    data = {"message": str(exc), "last_id": exc.last_id}
                    await self.queue.put((source, "dropped", None, dumps(data)))
                    return
                for e in events:
                    name = "change" if isinstance(e, feeds.Change) else "reset"
                    await self.queue.put((source, name, e.id, dumps(e.to_dict())))
                if events:
                    continue
                if sub.closed:
                    await self.queue.put((source, "_closed", None, b""))
                    return
                try:
                    async with asyncio.timeout(_RETRY_S):
                        await wake.wait()
                except TimeoutError:
                    pass
        finally:
            sub.close()

    # -- the merged stream ---------------------------------------------------------------

    def position(self) -> str:
        """Each owner's applied position of its own partitions when its stream began."""
        merged: dict[int, int] = {}
        for s in self.sources:
            try:
                held = parse_position(s.position) if s.position else {}
            except ValueError:
                continue
            merged.update({p: o for p, o in held.items() if p in s.partitions})
        return format_position(dict(sorted(merged.items())))

    def current_id(self) -> str:
        ids = {s.member: s.last_id for s in self.sources if s.last_id is not None}
        return str(GatheredId(self.epoch, ids))

    async def events(self, first: list[bytes]) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        try:
            for chunk in first:
                yield chunk
            last_write = loop.time()
            next_check = loop.time() + _RETRY_S
            while True:
                out: list[bytes] = []
                ended = False
                try:
                    until = min(next_check, last_write + self.settings.keepalive_s)
                    async with asyncio.timeout(max(0.0, until - loop.time())):
                        item = await self.queue.get()
                    items = [item]
                    while len(items) < self.settings.batch and not self.queue.empty():
                        items.append(self.queue.get_nowait())
                except TimeoutError:
                    items = []
                for source, name, event_id, data in items:
                    if source not in self.sources:
                        continue  # an owner's stream replaced since
                    if name == "change" and event_id is not None:
                        source.last_id = event_id
                        out.append(sse_event(name, data, self.current_id()))
                    elif name == "reset":
                        reset = orjson.loads(data)
                        source.last_id = str(reset["id"])
                        body = {
                            "id": self.current_id(),
                            "reason": f"{source.member}: {reset['reason']}",
                        }
                        out.append(sse_event("reset", dumps(body), body["id"]))
                    elif name == "dropped":
                        dropped = orjson.loads(data)
                        source.last_id = str(dropped["last_id"])
                        body = {"message": dropped["message"], "last_id": self.current_id()}
                        out.append(sse_event("dropped", dumps(body), None))
                        ended = True
                        break
                    elif name == "_broken":
                        source.broken = data.decode()
                    elif name == "_closed":
                        ended = True
                        break
                if out:
                    yield b"".join(out)
                    last_write = loop.time()
                if ended:
                    return
                if loop.time() >= next_check:
                    next_check = loop.time() + _RETRY_S
                    moved = await self._follow_owners()
                    if moved is not None:
                        yield moved
                        last_write = loop.time()
                if loop.time() - last_write >= self.settings.keepalive_s:
                    yield KEEP_ALIVE
                    last_write = loop.time()
        finally:
            await self.close()

    async def _follow_owners(self) -> bytes | None:
        """Once a second: a reset after the owner map changed (subscribed to the new
        owners first), or broken owners' streams asked again; None when nothing changed."""
        owners = self.owners()
        if owners is None:
            # A partition is moving (or an owner reading it): wait until each is answered
            # by its owner, then subscribe to them (an owner lost meanwhile included).
            return None
        if owner_epoch(owners) != self.epoch:
            try:
                await self.open(owners, None)
            except (ApiError, _Refused) as exc:
                log.info("cluster.changes_reopen_failed reason=%s", exc)
                self.epoch = ""  # no owner is followed: open again next second
                return None
            body = {
                "id": self.current_id(),
                "reason": (
                    f"the partitions of view {self.ask.view!r} moved between instances; "
                    "resync from a scan"
                ),
            }
            log.info("cluster.changes_reset view=%s epoch=%s", self.ask.view, self.epoch)
            return sse_event("reset", dumps(body), body["id"])
        for source in self.sources:
            if source.broken is not None:
                # Asked again after its last change; its `subscribed` is passed over, and
                # a reset follows when it cannot go on from there.
                source.broken = None
                source.task = asyncio.create_task(self._run(source))
        return None


class _Refused(Exception):
    """An owner answered its part with an error: passed back as it is."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"answered {response.status_code}")
        self.response = response


async def gathered_changes(
    request: Request,
    store: StateStore,
    cluster: Cluster,
    view: View,
    settings: ChangeStreamSettings,
    forwarded_headers: dict[str, str],
) -> Response:
    """The change stream of every partition of *view*, gathered (see the module's text)."""
    q = request.query_params
    prefix = q.get("prefix", "")
    try:
        feeds.key_matcher(view.key_codec, prefix)
    except InvalidKeyError as exc:
        raise ApiError(422, "invalid_key", f"query.prefix: {exc}") from None
    asked = request.headers.get("last-event-id") or q.get("last_id") or ""
    resume = GatheredId.parse(asked) if asked else None
    if asked and resume is None:
        raise ApiError(
            422,
            "invalid_request",
            "Last-Event-ID / query.last_id: not an id of this cluster's change stream (the "
            "`id:` of a gathered event, g1.<...>); subscribe without one and rescan",
        )
    gather = _Gather(store, cluster, view, _Ask(view.name, prefix, forwarded_headers), settings)
    try:
        owners = gather.owners()
        if owners is None:
            raise ApiError(
                503,
                "partition_moving",
                f"a partition of view {view.name!r} has no owner answering for it now (it is "
                "moving); retry shortly",
                headers={"Retry-After": "1"},
            )
        try:
            started = await gather.open(owners, resume)
        except _Refused as exc:
            await gather.close()
            return exc.response
    except BaseException:
        await gather.close()
        raise
    resumed = resume is not None and resume.epoch == gather.epoch
    resumed = resumed and all(bool(data["resumed"]) for data in started)
    start = gather.current_id()
    first = [sse_event("subscribed", dumps({"id": start, "resumed": resumed}), start)]
    if resume is not None and resume.epoch != gather.epoch:
        reason = (
            f"the partitions of view {view.name!r} moved between instances since that id; "
            "resync from a scan"
        )
        first.append(sse_event("reset", dumps({"id": start, "reason": reason}), start))
    headers = {
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
        POSITION_HEADER: gather.position(),
    }
    return EventStreamResponse(gather.events(first), headers=headers)
