"""The StateStore facade: the engine the embedded API, the REST server and the CLI share."""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from .bulk import BulkSettings
from .changes import DEFAULT_BUFFER, DEFAULT_BUFFER_BYTES, ChangeFeed, Subscription
from .closing import Closing
from .cluster import Cluster, members_of
from .config import Config, ViewConfig, usable_cores
from .cursor import CursorSigner
from .errors import (
    ConfigError,
    KafkaError,
    NotReadyError,
    StateStoreError,
    UnknownViewError,
    ViewFailedError,
)
from .history import count_start, read_starts
from .ingest import Ingestor, ProgressCallback
from .kafka import KafkaClient
from .ranges import read_progress, shown
from .reader import ViewReader, per_view
from .records import NO_SCHEMA, family_owner
from .snapshot import SEEDED_KEY, SnapshotInfo, Snapshotter, restore, store_is_empty
from .source import TopicClient
from .status import ViewStatus
from .storage import META, RocksOptions, Storage
from .view import ChangeListener, View

__all__ = ["StateStore"]

log = logging.getLogger(__name__)

_SECRET_KEY = b"secret/cursor"


class StateStore(Closing):
    """Materialised views of compacted Kafka topics in one RocksDB store.

    ``read_only=True`` opens the store beside a running server (status, get) and
    never consumes. ``secondary=DIR`` opens it read-only as a RocksDB secondary
    instance (its own files in DIR) that sees the primary's later writes after
    ``storage.catch_up()`` (``statestore serve --workers N``). ``client=`` reads the
    topics through another ``source.TopicClient`` than the Kafka client the config
    describes (``statestore.testing.MemoryKafka`` in tests).
    """

    def __init__(
        self,
        config: Config,
        *,
        read_only: bool = False,
        secondary: Path | None = None,
        client: TopicClient | None = None,
    ) -> None:
        self.config = config
        read_only = read_only or secondary is not None
        self.read_only = read_only
        tuning = RocksOptions(
            block_cache_mb=config.store.block_cache_mb,
            row_cache_mb=config.store.row_cache_mb,
            write_buffer_mb=config.store.write_buffer_mb,
        )
        seed = config.store.seed
        # The snapshot this store was seeded from when it opened (None: not seeded), and
        # why seeding failed (the views then bootstrap from Kafka).
        self.seeded_from: str | None = None
        self.seed_error: str | None = None
        if seed and not read_only and store_is_empty(config.store.path):
            self._seed(seed)
        self.storage = Storage(
            config.store.path,
            tuning,
            read_only=read_only,
            secondary=secondary,
            on_corruption=config.store.on_corruption,
        )
        if self.seeded_from is not None:
            self._note_seed(self.seeded_from)
        if seed and self.storage.damage is not None:
            # Set aside as damaged: the new, empty store is seeded like a first start's.
            self.storage.close()
            self._seed(seed)
            self.storage = Storage(
                config.store.path, tuning, on_corruption=config.store.on_corruption
            )
            if self.seeded_from is not None:
                self._note_seed(self.seeded_from)
        self._signer = CursorSigner(self._secret())
        self._views: dict[str, View] = {}
        self._client: TopicClient | None = client
        self._ingestors: dict[str, Ingestor] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._stop = threading.Event()
        self._closed = False
        # The change feed of each view that was followed (made on first use, closed
        # with the store), and how to detach each from its view.
        self._feeds: dict[str, ChangeFeed] = {}
        self._feed_detach: list[Callable[[], None]] = []
        self._feeds_lock = threading.Lock()
        self._readers: dict[str, ViewReader] = {}
        # Set by start(): this process's start (seconds since the epoch) and the store's
        # count of starts, this one included.
        self.started_at: float | None = None
        self.starts = read_starts(self.storage)
        self._lag_thread: threading.Thread | None = None
        # A partitioned cluster's membership and routing (start() joins it).
        self.cluster: Cluster | None = None
        for vc in config.views:
            view = self._make_view(vc)
            reason = view.prepare()
            if reason is not None and not read_only:
                log.warning("view.rebuild view=%s reason=%s", vc.name, reason)
                view.wipe(reason)
                view.set_reason(f"rebuilt: {reason}")
            if view.bulk:
                view.show_bulk_progress(*shown(read_progress(view.slot)))
            self._views[vc.name] = view
        if not read_only:
            self._drop_leftovers()
        from ._version import __version__

        self.snapshots = Snapshotter(self.storage, config, __version__)
        self.snapshots.status.seed_error = self.seed_error
        self._snapshot_thread: threading.Thread | None = None

    def _note_seed(self, url: str) -> None:
        batch = self.storage.batch()
        batch.put(META, SEEDED_KEY, orjson.dumps({"url": url, "at": time.time()}))
        self.storage.write(batch)

    def _seed(self, src: str) -> None:
        """Fill the empty store from the snapshot *src*; on failure, log why and go on
        (every view then bootstraps from Kafka, as without a seed)."""
        try:
            done = restore(src, self.config.store.path, self.config)
        except StateStoreError as exc:
            self.seed_error = str(exc)
            log.error(
                "store.seed_failed src=%s error=%s (the views are bootstrapped from Kafka)",
                src,
                exc,
            )
            return
        self.seeded_from = done.snapshot.url

    def _drop_leftovers(self) -> None:
        """Drop column families no configured view uses (old generations, removed views)."""
        keep = {f for view in self._views.values() for f in view.slot.families()}
        configured = set(self._views)
        for family in self.storage.families():
            if family == META or family in keep or family == "default":
                continue
            if family_owner(family) in configured:
                log.info("store.drop_leftover family=%s", family)
                self.storage.drop_family(family)
            else:
                log.warning(
                    "store.unconfigured_data family=%s (data of a view no longer in the "
                    "config; kept untouched)",
                    family,
                )

    def _make_view(self, vc: ViewConfig) -> View:
        if vc.uses_registry:
            from .registry_codecs import registry_codecs
            from .schemas import Schemas

            schemas = Schemas(self.storage, self.config.schema_registry.client_config())
            keys, values, hook = registry_codecs(vc, schemas)
            return View(
                vc,
                self.storage,
                self._signer,
                keys=keys,
                values=values,
                header_hook=hook,
                schemas=schemas,
            )
        return View(vc, self.storage, self._signer)

    def _secret(self) -> bytes:
        secret = self.storage.get(META, _SECRET_KEY)
        if secret is None:
            secret = os.urandom(32)
            if not self.read_only:
                batch = self.storage.batch()
                batch.put(META, _SECRET_KEY, secret)
                self.storage.write(batch)
        return secret

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def client(self) -> TopicClient:
        if self._client is None:
            kafka = KafkaClient(self.config.kafka_config())
            kafka.on_error = self._client_error
            self._client = kafka
        return self._client

    def _client_error(self, text: str, fatal: bool) -> None:
        if "_ALL_BROKERS_DOWN" in text or "_TRANSPORT" in text or fatal:
            for ing in self._ingestors.values():
                ing.note_client_error(f"Kafka unreachable: {text}")

    def _ingestor(self, name: str) -> Ingestor:
        ing = self._ingestors.get(name)
        if ing is None:
            ing = Ingestor(
                self._views[name],
                self.client,
                batch_size=self.config.store.batch_size,
                bulk=self.bulk_settings(),
            )
            self._ingestors[name] = ing
        return ing

    def bulk_settings(self) -> BulkSettings:
        """How bulk loads run: ``[store] bootstrap_workers`` processes within ``memory_mb``."""
        store = self.config.store
        registry = self.config.schema_registry
        return BulkSettings(
            kafka=self.config.kafka_config(),
            registry=registry.client_config() if registry.url else {},
            workers=store.bootstrap_workers or usable_cores(),
            memory_mb=store.memory_mb,
            min_records_per_worker=store.bulk_min_records,
        )

    def bootstrap(
        self,
        views: list[str] | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        raise_on_failure: bool = True,
    ) -> dict[str, ViewStatus]:
        """Catch the views up to the end offsets of now, in parallel; block until done."""
        self._writable("bootstrap")
        self._whole("bootstrap")
        names = self._names(views)
        self._run_all(
            [
                (
                    f"bootstrap-{name}",
                    functools.partial(self._ingestor(name).catch_up, self._stop, on_progress),
                )
                for name in names
            ]
        )
        self.storage.flush()
        statuses = {n: self._views[n].status() for n in names}
        if raise_on_failure:
            failed = [s for s in statuses.values() if s.state == "failed"]
            if failed:
                raise ViewFailedError(
                    "; ".join(f"view {s.name!r} failed: {s.reason}" for s in failed)
                )
        return statuses

    def start(self) -> None:
        """Bootstrap (where needed) and follow every view in background threads.

        Counts the start in the store (``statestore_starts_total``: restarts show even
        when no scrape saw the process between them) and polls the topics' end offsets
        every ``[store] lag_refresh_s`` so that lag is exact whatever the views do.
        """
        self._writable("start")
        if self.started_at is None:
            self.starts = count_start(self.storage)
            self.started_at = time.time()
        if self.config.cluster.partitioned and self.cluster is None:
            self.cluster = self._join_cluster()
        for name in self._views:
            if name in self._threads and self._threads[name].is_alive():
                continue
            if self.cluster is not None:
                # Started by the group's first assignment, so that the first load reads
                # the partitions owned (in bulk), not none.
                continue
            self._follow(name)
        if self._lag_thread is None or not self._lag_thread.is_alive():
            self._lag_thread = threading.Thread(target=self._poll_ends, name="lag", daemon=True)
            self._lag_thread.start()
        if self.config.snapshots.dest and (
            self._snapshot_thread is None or not self._snapshot_thread.is_alive()
        ):
            self._snapshot_thread = threading.Thread(
                target=self.snapshots.run,
                args=(self._stop, self._snapshot_ready),
                name="snapshots",
                daemon=True,
            )
            self._snapshot_thread.start()

    def _join_cluster(self) -> Cluster:
        """Join the partitioned cluster: the views read only the partitions the group gives."""
        client = self.client
        if not isinstance(client, KafkaClient):
            raise ConfigError("a partitioned cluster needs Kafka's consumer groups")
        cluster = Cluster(self.config.cluster, client, self._views, self._owned_changed)
        cluster.start()
        return cluster

    def _owned_changed(self, view: View) -> None:
        """The group settled on new partitions for *view*: read them (the first time, start
        following), drop those given up (the cluster's thread calls this)."""
        thread = self._threads.get(view.name)
        if thread is None or not thread.is_alive():
            if not self._stop.is_set():
                # Its first step drops what the store holds of other partitions (kept
                # from an earlier assignment, or seeded from a snapshot).
                self._ingestor(view.name).reassigned.set()
                self._follow(view.name)
        else:
            self._ingestor(view.name).reassigned.set()

    def cluster_members(self, timeout: float = 5.0) -> list[dict[str, Any]] | None:
        """The members of this store's partitioned cluster as the membership topic has them
        now (None: a replicated store); works beside the running instances."""
        name = self.config.cluster.name
        client = self.client
        if not self.config.cluster.partitioned or name is None:
            return None
        if not isinstance(client, KafkaClient):
            return []
        return members_of(client, name, timeout)

    def _snapshot_ready(self) -> bool:
        return any(v.servable for v in self._views.values())

    def snapshot(self, dest: str | None = None, views: list[str] | None = None) -> SnapshotInfo:
        """Take a consistent snapshot of the store into *dest* (a directory or an
        ``s3://bucket/prefix``; default ``[snapshots] dest``) while reads and ingest go on."""
        if self._closed:
            raise NotReadyError("the store is closed; cannot take a snapshot")
        if self.read_only:
            raise NotReadyError("the store was opened read-only; cannot take a snapshot")
        return self.snapshots.take(dest, views, wait=False)

    def _poll_ends(self) -> None:
        """Give every view the end offsets of its topic, now and every lag_refresh_s."""
        interval = self.config.store.lag_refresh_s
        failing: set[str] = set()
        while True:
            for topic, views in self._by_topic().items():
                try:
                    ends = self.client.end_offsets(topic, timeout=max(1.0, interval))
                except KafkaError as exc:
                    if topic not in failing:  # once per outage; the views report it too
                        log.info("lag.poll_failed topic=%s error=%s", topic, exc)
                    failing.add(topic)
                    continue
                failing.discard(topic)
                for view in views:
                    view.observe_ends(ends)
            if self._stop.wait(interval):
                return

    def _by_topic(self) -> dict[str, list[View]]:
        out: dict[str, list[View]] = {}
        for view in self._views.values():
            out.setdefault(view.config.topic, []).append(view)
        return out

    def _follow(self, name: str) -> None:
        """Start the thread that catches *name* up (where needed) and follows its topic."""
        thread = threading.Thread(
            target=self._ingestor(name).follow,
            args=(self._stop,),
            name=f"follow-{name}",
            daemon=True,
        )
        thread.start()
        self._threads[name] = thread

    def stop(self, timeout: float = 30.0) -> None:
        """Stop consuming: the batch in flight is finished, then the threads end."""
        if self.cluster is not None:
            # Leave the group first: the partitions move to the others at once.
            self.cluster.close()
        self._stop.set()
        deadline = time.monotonic() + timeout
        others = [t for t in (self._lag_thread, self._snapshot_thread) if t is not None]
        for t in [*self._threads.values(), *others]:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        self._lag_thread = None
        self._snapshot_thread = None
        for ing in self._ingestors.values():
            ing.close()
        for view in self._views.values():
            if view.state not in ("failed",):
                view.set_state("stopped", None)

    def close(self) -> None:
        """Stop, flush and close the store. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._close_feeds()
        self.stop()
        if not self.read_only:
            self.snapshots.idle()  # a snapshot being taken reads the database to its end
        if self._client is not None:
            self._client.close()
        self.storage.close()

    def rebuild(
        self,
        views: list[str] | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        wait: bool = True,
        reason: str = "rebuild requested",
    ) -> dict[str, ViewStatus]:
        """Rebuild the views from offset 0 beside the served copies, then swap them in.

        Reads keep being served from the old copy (state ``rebuilding``) until the
        new one has caught up. With views already following (``start()``), the
        follower threads do the work and *wait* says whether to block until done.
        """
        self._writable("rebuild")
        names = self._names(views)
        if self.cluster is None:
            # Offline: there is no group to say which partitions are this instance's.
            self._whole("rebuild")
        offline: list[str] = []
        for name in names:
            ing = self._ingestor(name)
            thread = self._threads.get(name)
            if thread is not None and thread.is_alive():
                ing.rebuilt.clear()
                ing.rebuild_requested = reason
            else:
                offline.append(name)
        self._run_all(
            [
                (
                    f"rebuild-{name}",
                    functools.partial(
                        self._ingestor(name).rebuild, self._stop, reason, on_progress
                    ),
                )
                for name in offline
            ]
        )
        # A view whose follower ended (it failed) follows its topic again once rebuilt.
        for name in offline:
            if name in self._threads and self._views[name].state != "failed":
                if self._stop.is_set():
                    break
                self._follow(name)
        if wait:
            for name in names:
                if name not in offline:
                    while not self._ingestors[name].rebuilt.wait(0.2):
                        if self._stop.is_set():
                            break
        self.storage.flush()
        return {n: self._views[n].status() for n in names}

    def _run_all(self, jobs: list[tuple[str, Callable[[], object]]]) -> None:
        """Run each (name, job) in a thread of its own; return when all are done.

        Ctrl-C or SIGTERM (KeyboardInterrupt here) stops them, waits until they have
        finished what they were writing, and re-raises. Completion is awaited on events
        of our own: ``Thread.join`` interrupted by a signal can leave a running thread
        looking finished (Python 3.11), and the store would then be closed under it.
        """
        done: list[threading.Event] = []
        for name, job in jobs:
            finished = threading.Event()

            def run(job: Callable[[], object] = job, finished: threading.Event = finished) -> None:
                try:
                    job()
                finally:
                    finished.set()

            threading.Thread(target=run, name=name, daemon=True).start()
            done.append(finished)
        try:
            for finished in done:
                while not finished.wait(0.2):
                    pass
        except KeyboardInterrupt:
            self._stop.set()
            for finished in done:
                finished.wait()
            raise

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise NotReadyError(f"the store was opened read-only; cannot {what}")
        if self._closed:
            raise NotReadyError(f"the store is closed; cannot {what}")

    def _whole(self, what: str) -> None:
        """Refuse *what* over every partition for an instance of a partitioned cluster."""
        if self.config.cluster.partitioned:
            raise ConfigError(
                f"cannot {what} a partitioned cluster's store outside `statestore serve`: an "
                "instance reads only the partitions Kafka's consumer group gives it, which it "
                "learns by joining the group (start `statestore serve`; POST "
                "/views/{view}/rebuild to a running instance rebuilds its partitions)"
            )

    def _names(self, views: list[str] | None) -> list[str]:
        if not views:
            return list(self._views)
        for name in views:
            self.view(name)
        return list(views)

    # -- reads -------------------------------------------------------------------------

    @property
    def views(self) -> dict[str, View]:
        return dict(self._views)

    def view(self, name: str) -> View:
        try:
            return self._views[name]
        except KeyError:
            raise UnknownViewError(name, list(self._views)) from None

    def reader(self, view: str) -> ViewReader:
        """The reads of one view behind a handle bound to it (UnknownViewError at once)."""
        found = self._readers.get(view)
        if found is None:
            found = ViewReader(self.view(view), functools.partial(self.changes, view))
            self._readers[view] = found
        return found

    # The reads of the view named first: ViewReader's, with its signatures after the name.
    get = per_view(ViewReader.get)
    lookup = per_view(ViewReader.lookup)
    scan = per_view(ViewReader.scan)
    by = per_view(ViewReader.by)
    by_range = per_view(ViewReader.by_range)
    wait_for = per_view(ViewReader.wait_for)
    position = per_view(ViewReader.position)

    def status(self) -> list[ViewStatus]:
        return [v.status() for v in self._views.values()]

    def schemas(self, view: str) -> list[dict[str, Any]]:
        """Writer schemas the view's entities use, in id order (empty without a registry codec).

        Each item: ``id``, ``subject`` and ``version`` (under ``<topic>-value`` when the
        id is registered there), ``versions`` (every subject/version the registry listed
        for the id), ``guid`` (GUID-framed schemas) and ``entities``.
        """
        v = self.view(view)
        counts = v.status().schema_entities
        ids = [i for i in counts if i != NO_SCHEMA]
        if not ids:
            return []
        from .schemas import schema_info

        info = schema_info(self.storage, ids, f"{v.config.topic}-value")
        empty: dict[str, Any] = {"subject": None, "version": None, "versions": [], "guid": None}
        return [{"id": i, **info.get(i, empty), "entities": counts[i]} for i in sorted(ids)]

    def ready(self) -> bool:
        """True when every view has caught up (and none has failed).

        A view that is rebuilding beside a caught-up copy is ready: it serves that copy.
        """
        if self.cluster is not None and not self.cluster.settled:
            # Not until it answers for every partition the group gave it.
            return False
        return all(
            v.state in ("ready", "degraded") or (v.state == "rebuilding" and v.servable)
            for v in self._views.values()
        )

    def changes(
        self,
        view: str,
        *,
        prefix: str = "",
        last_id: str | None = None,
        max_pending: int | None = None,
    ) -> Subscription:
        """Follow *view*'s changes: iterate Change and Reset events; close() when done.

        With *last_id* (the ``id`` of the last change seen), resume right after it, or
        start with a Reset when that is no longer possible. *max_pending* bounds how
        many changes may wait for this subscriber before it is dropped (default: as
        many as the feed buffers).
        """
        feed = self.change_feed(view)
        return feed.open(prefix=prefix, last_id=last_id, max_pending=max_pending)

    def change_feed(
        self, view: str, *, buffer: int = DEFAULT_BUFFER, buffer_bytes: int = DEFAULT_BUFFER_BYTES
    ) -> ChangeFeed:
        """The change feed of *view*, made and attached to it on first use.

        The sizes apply when the feed is made; the ring holds at least two consumed
        batches, so a reader that keeps up is never dropped by one batch. A closed
        store has no feeds (NotReadyError).
        """
        v = self.view(view)
        with self._feeds_lock:
            if self._closed:
                raise NotReadyError("the store is closed; cannot follow changes")
            feed = self._feeds.get(view)
            if feed is None:
                floor = 2 * self.config.store.batch_size
                feed = ChangeFeed(v, buffer=max(buffer, floor), buffer_bytes=buffer_bytes)
                self._feed_detach.append(self.subscribe(view, feed.on_applied))
                self._feeds[view] = feed
                log.info("changes.feed view=%s buffer=%d", view, feed.capacity)
        return feed

    def _close_feeds(self) -> None:
        """Detach and close every change feed: their subscriptions end."""
        with self._feeds_lock:
            feeds, self._feeds = list(self._feeds.values()), {}
            detach, self._feed_detach = self._feed_detach, []
        for stop in detach:
            stop()
        for feed in feeds:
            feed.close()

    def subscribe(self, view: str, callback: ChangeListener) -> Callable[[], None]:
        """Call *callback(view, applied)* after each applied batch; returns an unsubscribe."""
        v = self.view(view)
        v.listeners.append(callback)
        return lambda: v.listeners.remove(callback) if callback in v.listeners else None
