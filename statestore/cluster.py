"""Partitioned views across instances: who owns which partition, and where it answers.

Kafka does the membership. Every instance of a ``[cluster]`` joins one consumer group
(named ``[cluster] name``) over the views' topics with the cooperative-sticky assignor,
and reads only the partitions the group gives it (:class:`~statestore.kafka.GroupMember`;
each view reads its own partitions from its stored positions, as a replicated one reads
all). The routing table rides on Kafka too: each instance writes a small record to the
compacted topic ``_statestore.cluster.<name>`` (its URL, the partitions it owns, those it
answers for) every ``heartbeat_ms``, and reads everyone's from the log start.

Invariants:

- An instance answers for a key only when its partition is one the group gave it *and*
  that it has read to the end since (``View.serving``). A partition it gave up is
  dropped from ``serving`` before the group hands it on (``on_revoke``), then deleted
  from the store by the view's ingest thread.
- A key elsewhere resolves to one owner: the one fresh member record claiming its
  partition. None (a dead owner not yet replaced) or two (a dead owner's record not yet
  stale beside its successor's) is "moving": 503 with Retry-After, never a guess.
- Freshness is judged by this instance's own clock: when it last received a member's
  record (records read at start count from their broker time), so no two clocks are
  compared.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson

from .config import ClusterConfig
from .partitioners import partitioner
from .status import ClusterFacts

if TYPE_CHECKING:
    from .kafka import GroupMember, KafkaClient, MembershipLog
    from .view import View

__all__ = ["Cluster", "Route", "members_of", "membership_topic"]

log = logging.getLogger(__name__)

# A member whose record is older than this many heartbeats is taken for gone.
STALE_HEARTBEATS = 3
# A gone member's record is deleted (tombstoned) by whoever sees it this much later.
FORGET_AFTER_S = 600.0


def membership_topic(name: str) -> str:
    return f"_statestore.cluster.{name}"


@dataclass(frozen=True, slots=True)
class Route:
    """Where a key of a view is answered."""

    kind: Literal["local", "remote", "moving", "refused"]
    partition: int
    url: str | None = None
    member: str | None = None
    reason: str = ""
    # Where to ask when the owner cannot be reached: an instance with a standby copy (a
    # "local" route: this one).
    standby: Route | None = None
    # This route leads to a standby copy, not to the owner.
    copy: bool = False


@dataclass(slots=True)
class _Peer:
    member: str
    url: str
    owned: dict[str, frozenset[int]]
    serving: dict[str, list[int]]
    standing_by: dict[str, list[int]]
    misplaced: dict[str, int]
    seen: float  # time.monotonic() on this instance

    @classmethod
    def parse(cls, member: str, value: bytes, seen: float) -> _Peer | None:
        """A membership record's fields; None for a record that is not one."""
        try:
            data = orjson.loads(value)
            return cls(
                member=member,
                url=str(data["url"]),
                owned={t: frozenset(int(p) for p in ps) for t, ps in data["owned"].items()},
                serving={n: [int(p) for p in ps] for n, ps in data["serving"].items()},
                standing_by={n: [int(p) for p in ps] for n, ps in data.get("standby", {}).items()},
                misplaced={n: int(c) for n, c in data.get("misplaced", {}).items()},
                seen=seen,
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None


class Cluster:
    """This instance's membership in a partitioned cluster, and the routing table."""

    def __init__(
        self,
        config: ClusterConfig,
        client: KafkaClient,
        views: dict[str, View],
        on_owned: Callable[[View], None],
    ) -> None:
        assert config.name is not None and config.advertised_url is not None
        self.config = config
        self.name = config.name
        self.url = config.advertised_url
        self.member = config.instance_id or f"{self.name}-{uuid.uuid4().hex[:12]}"
        self._client = client
        self._views = views
        self._on_owned = on_owned
        self._topics = sorted({v.config.topic for v in views.values()})
        self._place = {
            name: partitioner(v.config.partitioner)
            for name, v in views.items()
            if v.config.partitioner is not None
        }
        self._peers: dict[str, _Peer] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._group: GroupMember | None = None
        self._log: MembershipLog | None = None
        self._heartbeat = config.heartbeat_ms / 1000
        self._stale_after = max(self._heartbeat * STALE_HEARTBEATS, 3.0)
        self._next_beat = 0.0
        # Views whose partitions changed: they take them once the group has been quiet for
        # settle_ms (instances starting together cause a burst of rebalances).
        self._unsettled: set[str] = set()
        self._settle_at = 0.0
        self.rebalances = 0
        self.error: str | None = None

    # -- membership ----------------------------------------------------------------------

    @property
    def joined(self) -> bool:
        """Whether the group has given this instance its first assignment (maybe empty)."""
        return self._group is not None and self._group.joined

    @property
    def settled(self) -> bool:
        """Joined, quiet, and answering for every partition the group gave this instance."""
        return (
            self.joined
            and not self._unsettled
            and all(v.serving == v.owned for v in self._views.values())
        )

    def start(self) -> None:
        for view in self._views.values():
            view.set_owned(frozenset())
        self._log = self._client.membership_log(membership_topic(self.name))
        self._group = self._client.group_member(
            self.name,
            self._topics,
            self._assigned,
            instance_id=self.config.instance_id,
            session_timeout_ms=self.config.session_timeout_ms,
        )
        self._thread = threading.Thread(target=self._run, name="cluster", daemon=True)
        self._thread.start()
        log.info(
            "cluster.joining name=%s member=%s url=%s topics=%s",
            self.name,
            self.member,
            self.url,
            ",".join(self._topics),
        )

    def _assigned(self, added: dict[str, set[int]], removed: dict[str, set[int]]) -> None:
        """The group's callback (on this module's thread): views take their new partitions."""
        assert self._group is not None
        self.rebalances += 1
        for view in self._views.values():
            topic = view.config.topic
            if topic not in added and topic not in removed:
                continue
            # Given-up partitions stop answering now; reading the new set waits for quiet.
            view.set_owned(frozenset(self._group.owned.get(topic, set())))
            self._unsettled.add(view.name)
        self._settle_at = time.monotonic() + self.config.settle_ms / 1000
        log.info(
            "cluster.assignment member=%s added=%s removed=%s",
            self.member,
            _text(added),
            _text(removed),
        )
        # Peers learn at once what this instance no longer answers for.
        self._next_beat = 0.0

    def _run(self) -> None:
        group, mlog = self._group, self._log
        assert group is not None and mlog is not None
        while not self._stop.is_set():
            try:
                group.poll(0.05)
                self._read(mlog.read(0.05))
                now = time.monotonic()
                if self._unsettled and now >= self._settle_at:
                    for name in sorted(self._unsettled):
                        self._on_owned(self._views[name])
                    self._unsettled.clear()
                if now >= self._next_beat:
                    if self.config.standbys:
                        self._keep_standbys()
                    mlog.write(self.member.encode(), orjson.dumps(self._record()))
                    self._next_beat = now + self._heartbeat
                    self._forget_gone(mlog)
                self.error = None
            except Exception as exc:  # the loop must outlive a broker outage
                if self.error is None:
                    log.warning("cluster.trouble member=%s reason=%s", self.member, exc)
                self.error = str(exc)
                self._stop.wait(1.0)

    def _keep_standbys(self) -> None:
        """Recompute which partitions this instance keeps standby copies of: each
        partition's copy is kept by the next live member after its owner, in member id
        order. A change is read (or dropped) once the group has been quiet."""
        assert self._group is not None
        peers = self._fresh()
        ring = sorted([self.member, *(p.member for p in peers)])
        if len(ring) < 2:
            return
        after = {m: ring[(i + 1) % len(ring)] for i, m in enumerate(ring)}
        for view in self._views.values():
            topic = view.config.topic
            mine = self._group.owned.get(topic, set())
            standby = set()
            for partition in range(view.partition_count):
                if partition in mine:
                    continue
                owners = [p.member for p in peers if partition in p.owned.get(topic, ())]
                if len(owners) == 1:
                    if after[owners[0]] == self.member:
                        standby.add(partition)
                elif partition in view.standby:
                    # Its owner is gone (or two claim it): the copy is what answers now.
                    standby.add(partition)
            if frozenset(standby) != view.standby:
                log.info(
                    "cluster.standby member=%s view=%s partitions=%s",
                    self.member,
                    view.name,
                    sorted(standby),
                )
                view.set_standby(frozenset(standby))
                self._unsettled.add(view.name)
                self._settle_at = max(
                    self._settle_at, time.monotonic() + self.config.settle_ms / 1000
                )
                self._next_beat = 0.0

    def _record(self) -> dict[str, Any]:
        assert self._group is not None
        return {
            "member": self.member,
            "url": self.url,
            "owned": {t: sorted(ps) for t, ps in self._group.owned.items()},
            "serving": {n: sorted(v.serving) for n, v in self._views.items()},
            "standby": {n: sorted(v.standing_by) for n, v in self._views.items()},
            "misplaced": {n: v.slot.counters["misplaced"] for n, v in self._views.items()},
        }

    def _read(self, records: list[tuple[bytes, bytes | None, int]]) -> None:
        if not records:
            return
        now = time.monotonic()
        wall = time.time() * 1000
        with self._lock:
            for key, value, at_ms in records:
                member = key.decode("utf-8", "replace")
                if value is None:
                    self._peers.pop(member, None)
                    continue
                # A record read late (at start) is as old as the broker says it is.
                seen = now - max(0.0, (wall - at_ms) / 1000) if at_ms > 0 else now
                peer = _Peer.parse(member, value, seen)
                if peer is None:
                    log.warning("cluster.bad_record member=%s", member)
                    continue
                self._peers[member] = peer

    def _forget_gone(self, mlog: MembershipLog) -> None:
        """Tombstone the records of members gone long ago (kill -9 leaves them behind)."""
        now = time.monotonic()
        with self._lock:
            gone = [m for m, p in self._peers.items() if now - p.seen > FORGET_AFTER_S]
        for member in gone:
            if member != self.member:
                mlog.write(member.encode(), None)

    def close(self) -> None:
        """Leave the group and remove this instance's record. Safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None
        if self._group is not None:
            try:
                self._group.close()
            except Exception as exc:
                log.warning("cluster.leave_failed member=%s reason=%s", self.member, exc)
            self._group = None
        if self._log is not None:
            try:
                self._log.write(self.member.encode(), None)
                self._log.close()
            except Exception as exc:
                log.warning("cluster.record_left member=%s reason=%s", self.member, exc)
            self._log = None

    # -- routing -------------------------------------------------------------------------

    def route(self, view: View, stored_key: bytes) -> Route:
        """Where the key *stored_key* of *view* is answered (string and bytes keys: the
        stored key is the Kafka key)."""
        count = view.partition_count
        place = self._place.get(view.name)
        if not count or place is None:
            return Route("moving", -1, reason="the topic's partitions are not known yet")
        partition = place(stored_key, count)
        refused = self._misplaced(view)
        if refused:
            return Route("refused", partition, reason=refused)
        owned = view.owned
        here = partition in view.serving or partition in view.standing_by
        if owned is not None and partition in owned and here:
            # Its own, or the standby copy it kept while the partition becomes its own.
            return Route("local", partition)
        topic = view.config.topic
        fresh = self._fresh()
        standby = self._standby_route(view, partition, fresh, here)
        if owned is not None and partition in owned:
            if standby is not None:
                # Given to this instance, which reads it: another's standby copy answers.
                return standby
            return Route(
                "moving", partition, reason=f"partition {partition} is loading on this instance"
            )
        claims = [p for p in fresh if partition in p.owned.get(topic, ())]
        if len(claims) == 1:
            owner = claims[0]
            if standby is not None and partition not in owner.serving.get(view.name, ()):
                # The new owner is still reading it: the standby copy answers meanwhile.
                return standby
            return Route("remote", partition, url=owner.url, member=owner.member, standby=standby)
        if standby is not None:
            return standby
        if not claims:
            reason = f"partition {partition} has no owner now (it is moving)"
        else:
            reason = f"partition {partition} is claimed by {len(claims)} instances (it is moving)"
        return Route("moving", partition, reason=reason)

    def _standby_route(
        self, view: View, partition: int, fresh: list[_Peer], here: bool
    ) -> Route | None:
        """Where a standby copy of *partition* is read to the end: here, or a peer."""
        if here:
            return Route("local", partition, member=self.member, copy=True)
        for p in fresh:
            if partition in p.standing_by.get(view.name, ()):
                return Route("remote", partition, url=p.url, member=p.member, copy=True)
        return None

    def serving_owners(self, view: View) -> tuple[dict[str | None, frozenset[int]], Route | None]:
        """Who answers for each partition of *view* now, for a read over all of them:
        ``{url (None: this instance): its partitions}``, or the first partition no one
        answers for (or two claim) as a route that is not local."""
        count = view.partition_count
        if not count:
            return {}, Route("moving", -1, reason="the topic's partitions are not known yet")
        refused = self._misplaced(view)
        if refused:
            return {}, Route("refused", -1, reason=refused)
        peers = self._fresh()
        owners: dict[str | None, set[int]] = {}
        for partition in range(count):
            if partition in view.serving:
                owners.setdefault(None, set()).add(partition)
                continue
            claims = [p for p in peers if partition in p.serving.get(view.name, ())]
            if not claims and partition in view.standing_by:
                owners.setdefault(None, set()).add(partition)
                continue
            if not claims:
                claims = [p for p in peers if partition in p.standing_by.get(view.name, ())][:1]
            if len(claims) != 1:
                reason = f"partition {partition} is answered for by {len(claims)} instances now"
                return {}, Route("moving", partition, reason=f"{reason} (it is moving)")
            owners.setdefault(claims[0].url, set()).add(partition)
        return {url: frozenset(ps) for url, ps in owners.items()}, None

    def owners(
        self, view: View, *, serving: bool = False
    ) -> dict[int, tuple[str, str | None] | None]:
        """The group's owner of each partition of *view* as the members' records say:
        ``(member, url)`` (url None: this instance), None where no live member or more
        than one claims it (it is moving) and, with *serving*, where its owner does not
        answer for it yet (it is still reading it; a standby copy may answer meanwhile)."""
        topic = view.config.topic
        peers = self._fresh()
        found: dict[int, tuple[str, str | None] | None] = {}
        for partition in range(view.partition_count):
            # (member, url, answers for it now)
            claims: list[tuple[str, str | None, bool]] = [
                (p.member, p.url, partition in p.serving.get(view.name, ()))
                for p in peers
                if partition in p.owned.get(topic, ())
            ]
            if view.owned is not None and partition in view.owned:
                claims.append((self.member, None, partition in view.serving))
            one = len(claims) == 1 and (claims[0][2] or not serving)
            found[partition] = (claims[0][0], claims[0][1]) if one else None
        return found

    def _fresh(self) -> list[_Peer]:
        """The other members whose record is recent (this instance's clock)."""
        now = time.monotonic()
        with self._lock:
            return [
                p
                for p in self._peers.values()
                if p.member != self.member and now - p.seen <= self._stale_after
            ]

    def _misplaced(self, view: View) -> str:
        """Why reads of *view* are refused: records that sit where its partitioner does
        not put them, on this instance or another (a key routed by the partitioner could be
        answered "not found" while it exists); empty when there are none."""
        found = {self.member: view.slot.counters["misplaced"]}
        for p in self._fresh():
            found[p.member] = p.misplaced.get(view.name, 0)
        counted = {m: n for m, n in found.items() if n}
        if not counted:
            return ""
        where = ", ".join(f"{n} on {m}" for m, n in sorted(counted.items()))
        return (
            f"view {view.name!r} has records in other partitions than its partitioner "
            f"{view.config.partitioner!r} puts their keys ({where}): a key could be answered "
            "'not found' while it exists, so no key is answered. Produce with the partitioner "
            "the view declares (or declare the one used), then rebuild the view; see GET "
            f"/views/{view.name} for the first misplaced record"
        )

    def facts(self) -> ClusterFacts:
        """The figures ``/metrics`` shows of the cluster."""
        return ClusterFacts(
            members_alive=len(self._fresh()) + 1,
            rebalances=self.rebalances,
            owned={n: len(v.owned or ()) for n, v in self._views.items()},
            serving={n: len(v.serving) for n, v in self._views.items()},
        )

    def describe(self) -> dict[str, Any]:
        """The routing table as this instance sees it (``GET /cluster``)."""
        now = time.monotonic()
        with self._lock:
            peers = [p for p in self._peers.values() if p.member != self.member]
        alive = [p for p in peers if now - p.seen <= self._stale_after]
        group = self._group
        members: list[dict[str, Any]] = [
            {
                "member": self.member,
                "url": self.url,
                "self": True,
                "alive": True,
                "last_seen_s": 0.0,
                "owned": {t: sorted(ps) for t, ps in group.owned.items()} if group else {},
                "serving": {n: sorted(v.serving) for n, v in self._views.items()},
                "standby": {n: sorted(v.standing_by) for n, v in self._views.items()},
                "misplaced": {n: v.slot.counters["misplaced"] for n, v in self._views.items()},
            }
        ]
        for p in sorted(peers, key=lambda p: p.member):
            members.append(
                {
                    "member": p.member,
                    "url": p.url,
                    "self": False,
                    "alive": p in alive,
                    "last_seen_s": round(now - p.seen, 3),
                    "owned": {t: sorted(ps) for t, ps in p.owned.items()},
                    "serving": p.serving,
                    "standby": p.standing_by,
                    "misplaced": p.misplaced,
                }
            )
        views: dict[str, Any] = {}
        for name, view in self._views.items():
            owners = {
                str(partition): None if owner is None else owner[0]
                for partition, owner in self.owners(view).items()
            }
            views[name] = {
                "topic": view.config.topic,
                "partitions": view.partition_count,
                "partitioner": view.config.partitioner,
                "owners": owners,
            }
        return {
            "name": self.name,
            "mode": "partitioned",
            "member": self.member,
            "joined": self.joined,
            "rebalances": self.rebalances,
            "error": self.error,
            "members": members,
            "views": views,
        }


def members_of(client: KafkaClient, name: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The members of cluster *name* as its membership topic has them now (for
    ``statestore status``, beside the running instances): each one's record and the
    seconds since the broker appended it."""
    latest: dict[str, tuple[bytes | None, int]] = {}
    for key, value, at_ms in client.read_whole(membership_topic(name), timeout):
        latest[key.decode("utf-8", "replace")] = (value, at_ms)
    now_ms = time.time() * 1000
    out = []
    for member, (value, at_ms) in sorted(latest.items()):
        peer = None if value is None else _Peer.parse(member, value, 0.0)
        if peer is not None:
            out.append(
                {
                    "member": member,
                    "url": peer.url,
                    "owned": {t: sorted(ps) for t, ps in peer.owned.items()},
                    "serving": peer.serving,
                    "misplaced": peer.misplaced,
                    "last_seen_s": round(max(0.0, now_ms - at_ms) / 1000, 1),
                }
            )
    return out


def _text(parts: dict[str, set[int]]) -> str:
    return ";".join(f"{t}:{','.join(map(str, sorted(ps)))}" for t, ps in sorted(parts.items()))
