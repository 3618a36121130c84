"""The RocksDB store: the only module that imports rocksdict.

One database per store directory. Column families:

* ``meta`` — applied positions, counters, fingerprints, cached schemas, secrets;
* ``v.<slot>`` — a view's entities (stored key -> record);
* ``q.<slot>`` — a view's quarantined records (partition, offset -> report);
* ``i.<slot>.<field>`` — a secondary index (value, key -> empty);
* ``s.<slot>`` — the staging family of a first bootstrap (bulk load), dropped once merged.

A *slot* is ``<view>#<generation>``: a rebuild writes a new generation beside the
old one and switches the view to it in one write, so readers never see a
half-built view. Every open names every existing column family, so none is
dropped or opened with default options by accident.

A store RocksDB reports as damaged when it opens it (checksum mismatches, a MANIFEST
naming missing files, a garbled CURRENT) holds nothing Kafka does not: with
``on_corruption="rebuild"`` it is moved aside (the latest damaged copy is kept for
inspection) and a fresh store is opened, which the views then fill from offset 0.

A store may also be opened as a RocksDB *secondary instance* (``secondary=DIR``,
read-only, its own files in DIR) beside the process that writes it: ``catch_up()``
replays what the writer has written since (``statestore serve --workers N``).

Only directories the store made are ever moved or removed: each carries a marker
file (``STATESTORE``) written when the directory was made into a store. A
non-empty directory without one is refused, never written into; a store of an
earlier version (no marker yet) is used, and marked, only if it opens cleanly.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rocksdict import (
    AccessType,
    BlockBasedOptions,
    Cache,
    Checkpoint,
    DBCompressionType,
    IngestExternalFileOptions,
    Options,
    Rdict,
    ReadOptions,
    SstFileWriter,
    WriteBatch,
    WriteOptions,
)

from .errors import StorageError, StoreLockedError

__all__ = ["Batch", "RocksOptions", "SstFile", "Storage"]

log = logging.getLogger(__name__)

META = "meta"


@dataclass(frozen=True, slots=True)
class RocksOptions:
    """RocksDB tuning for a view store: bulk-load friendly, modest memory."""

    block_cache_mb: int = 64
    # Point reads (get, lookup, the read before each write) are answered from a row cache
    # without searching a data block: ~1.5 µs against ~6 µs through the block cache here.
    row_cache_mb: int = 32
    write_buffer_mb: int = 64
    # Two memtables: one filling while the other flushes. A third added 64 MB of peak RSS
    # during bootstrap and never held a write back (flushes keep up with ingest here).
    max_write_buffers: int = 2
    background_jobs: int = 2

    def to_options(self, cache: Any, row_cache: Any = None) -> Any:
        opts = Options(raw_mode=True)
        if row_cache is not None:
            opts.set_row_cache(row_cache)
        opts.create_if_missing(True)
        opts.create_missing_column_families(True)
        opts.set_max_background_jobs(self.background_jobs)
        opts.set_write_buffer_size(self.write_buffer_mb * 1024 * 1024)
        opts.set_max_write_buffer_number(self.max_write_buffers)
        # All column families' memtables together stay within what one family may use
        # (many views and indexes, each with its own families, share one process).
        opts.set_db_write_buffer_size(self.max_write_buffers * self.write_buffer_mb * 1024 * 1024)
        opts.set_level_compaction_dynamic_level_bytes(True)
        opts.set_compression_type(DBCompressionType.lz4())
        opts.set_bytes_per_sync(1024 * 1024)
        # Writes come from one thread per view and hold the GIL while they build a batch.
        opts.set_allow_concurrent_memtable_write(False)
        # Apply reads the stored record of every key it writes, and while a view catches up
        # most of those reads miss the memtables: a memtable bloom filter (2% of its size)
        # answers them without searching the skiplist.
        opts.set_memtable_whole_key_filtering(True)
        opts.set_memtable_prefix_bloom_ratio(0.02)
        table = BlockBasedOptions()
        table.set_block_cache(cache)
        table.set_bloom_filter(10, False)
        table.set_cache_index_and_filter_blocks(True)
        # Point lookups on freshly flushed files find their filter and index in the cache
        # without an LRU lookup each time.
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        table.set_pin_top_level_index_and_filter(True)
        table.set_block_size(16 * 1024)
        opts.set_block_based_table_factory(table)
        return opts

    def to_staging_options(self, cache: Any, row_cache: Any = None) -> Any:
        """A staging family is filled by ingesting sorted SST files, then read once by the merge.

        No compactions run while it fills (the merge reads every version once and the
        family is dropped after), and the many overlapping files it gets never slow
        ingestion down.
        """
        opts = self.to_options(cache, row_cache)
        opts.set_compression_type(DBCompressionType.none())
        opts.set_disable_auto_compactions(True)
        opts.set_level_zero_slowdown_writes_trigger(1 << 30)
        opts.set_level_zero_stop_writes_trigger(1 << 30)
        opts.set_soft_pending_compaction_bytes_limit(0)
        opts.set_hard_pending_compaction_bytes_limit(0)
        return opts


class Batch:
    """One atomic write: entity, index, quarantine and metadata changes together."""

    __slots__ = ("_storage", "_wb")

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._wb = WriteBatch(raw_mode=True)

    def put(self, cf: str, key: bytes, value: bytes) -> None:
        self._wb.put(key, value, self._storage.handle(cf))

    def delete(self, cf: str, key: bytes) -> None:
        self._wb.delete(key, self._storage.handle(cf))

    def fast_put(self, cf: str) -> tuple[Any, Any]:
        """``(put, handle)`` for hot loops: ``put(key, value, handle)`` adds one put."""
        return self._wb.put, self._storage.handle(cf)

    def __len__(self) -> int:
        return int(self._wb.len())


class SstFile:
    """One sorted SST file being written, to be ingested into a column family later.

    Keys must be added in ascending byte order. Writing a file takes no memtable, WAL
    or compaction: the fast way to stage a bulk load.
    """

    __slots__ = ("_writer", "entries", "path")

    def __init__(self, path: Path, *, compress: bool = False) -> None:
        opts = Options(raw_mode=True)
        opts.set_compression_type(DBCompressionType.lz4() if compress else DBCompressionType.none())
        self.path = Path(path)
        self.entries = 0
        self._writer = SstFileWriter(opts)
        try:
            self._writer.open(str(self.path))
        except Exception as exc:
            raise StorageError(f"cannot write the SST file {self.path}: {exc}") from exc

    def add(self, key: bytes, value: bytes) -> None:
        self._writer[key] = value
        self.entries += 1

    def add_sorted(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Add *items* (in ascending key order)."""
        writer = self._writer
        n = 0
        try:
            for key, value in items:
                writer[key] = value
                n += 1
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"cannot write the SST file {self.path}: {exc}") from exc
        finally:
            self.entries += n

    def finish(self) -> bool:
        """Close the file; False (and no file) when nothing was added."""
        if not self.entries:
            return False
        try:
            self._writer.finish()
        except Exception as exc:
            raise StorageError(f"cannot finish the SST file {self.path}: {exc}") from exc
        return True


# The marker file of a store directory (see the module's docstring).
MARKER = "STATESTORE"
# Written by a server while it holds the store: where it answers, for the commands that
# find the store locked. Removed when it closes the store; a stale one (the server was
# killed) is removed by the next process that opens the store for writing.
HOLDER = "SERVER"
_MARKER_TEXT = (
    "This directory is a statestore store (RocksDB files). statestore moves it aside or\n"
    "removes it only while this file is here.\n"
)


class _Damaged(Exception):
    """RocksDB found the store damaged while opening it (handled inside this module)."""


class Storage:
    """An open RocksDB database with named column families.

    ``damage`` says why a damaged store was moved aside to ``damaged_copy`` when this
    one was opened (``on_corruption="rebuild"``); both are None otherwise.
    """

    def __init__(
        self,
        path: Path,
        options: RocksOptions | None = None,
        *,
        read_only: bool = False,
        secondary: Path | None = None,
        on_corruption: Literal["rebuild", "fail"] = "fail",
    ) -> None:
        self.path = Path(path)
        # A secondary instance (read-only, follows the primary through catch_up()) keeps its
        # own files in *secondary*, a directory of its own.
        self.secondary = None if secondary is None else Path(secondary)
        self.read_only = read_only or secondary is not None
        self.on_corruption = on_corruption
        self.damage: str | None = None
        self.damaged_copy: Path | None = None
        self._tuning = options or RocksOptions()
        self._cache = Cache(self._tuning.block_cache_mb * 1024 * 1024)
        rows = self._tuning.row_cache_mb
        self._row_cache = Cache(rows * 1024 * 1024) if rows > 0 else None
        self._lock = threading.Lock()
        self._handles: dict[str, Any] = {}
        self._cfs: dict[str, Any] = {}
        self._write_opts = WriteOptions()
        self._db = self._open()
        self._closed = False

    def _cf_options(self, name: str = META) -> Any:
        if name.startswith("s."):
            return self._tuning.to_staging_options(self._cache, self._row_cache)
        return self._tuning.to_options(self._cache, self._row_cache)

    def _claim(self) -> bool:
        """Whether the directory is already a store of ours; refuse one that is not a store.

        A missing or empty directory is made into a store (marked) by the caller.
        """
        path = self.path
        if (path / MARKER).is_file():
            return True
        if path.exists() and not path.is_dir():
            raise StorageError(f"the store path {path} is a file, not a directory")
        if not path.exists() or not any(path.iterdir()):
            return False
        if (path / "CURRENT").exists():
            return False  # a store of an earlier version, marked once it opens cleanly
        raise StorageError(
            f"the store path {path} is a directory that is not empty and is not a statestore "
            f"store (it has no {MARKER} file); statestore writes only into a new or empty "
            "directory: set [store] path to one"
        )

    def _mark(self) -> None:
        try:
            (self.path / MARKER).write_text(_MARKER_TEXT, encoding="utf-8")
        except OSError as exc:
            raise StorageError(f"cannot write {self.path / MARKER}: {exc}") from exc

    def announce(self, url: str) -> None:
        """Record that a server holding this store answers at *url* (see ``HOLDER``)."""
        if self.read_only:
            return  # it does not hold the store
        data = json.dumps({"url": url, "pid": os.getpid()})
        try:
            (self.path / HOLDER).write_text(data, encoding="utf-8")
        except OSError as exc:
            log.warning("store.announce_failed path=%s error=%s", self.path, exc)

    @staticmethod
    def holder(path: Path) -> dict[str, Any] | None:
        """What the server holding the store at *path* announced (None: nothing readable)."""
        try:
            data = json.loads((Path(path) / HOLDER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("url"), str) else None

    def _open(self) -> Any:
        ours = self._claim()
        try:
            db = self._open_db()
        except _Damaged as exc:
            detail = str(exc)
            if not ours:
                raise StorageError(
                    f"the directory {self.path} looks like a damaged RocksDB database ({detail}) "
                    f"and has no {MARKER} file: statestore did not make it and leaves it alone; "
                    "move it away or set [store] path to a new directory"
                ) from exc.__cause__
            if self.read_only or self.on_corruption != "rebuild":
                raise StorageError(
                    f"the store at {self.path} is damaged ({detail}); move the directory away "
                    "and run `statestore bootstrap` to rebuild it from Kafka, or set "
                    '[store] on_corruption = "rebuild" to do that automatically'
                ) from exc.__cause__
            self._set_aside(detail)
            db = self._open_db()
        if not ours and not self.read_only and not (self.path / MARKER).is_file():
            self._mark()  # a store of an earlier version that opened cleanly
        if not self.read_only:
            with contextlib.suppress(OSError):
                (self.path / HOLDER).unlink(missing_ok=True)  # left by a server that died
        return db

    def _is_damage(self, text: str) -> bool:
        # A checksum or format error, or a file the MANIFEST names gone missing; never a
        # lock, a permission or a full disk.
        return text.startswith("Corruption") or (
            "No such file or directory" in text and str(self.path) in text
        )

    def _set_aside(self, detail: str) -> None:
        """Move the damaged store aside, keeping only the latest damaged copy."""
        target = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            for old in glob.glob(f"{glob.escape(str(self.path))}.damaged-*"):
                # Only copies this store set aside before: they carry its marker.
                if Path(old, MARKER).is_file():
                    shutil.rmtree(old)
            if target.exists():
                raise OSError(f"{target} already exists")
            self.path.rename(target)
        except OSError as exc:
            raise StorageError(
                f"the store at {self.path} is damaged ({detail}) and cannot be moved aside "
                f"to {target}: {exc}; remove it and run `statestore bootstrap`"
            ) from exc
        log.error(
            "store.damaged path=%s moved_to=%s reason=%s (every view is rebuilt from Kafka)",
            self.path,
            target,
            detail,
        )
        self.damage = detail
        self.damaged_copy = target

    def _open_db(self) -> Any:
        opts = self._cf_options()
        existing: list[str] = []
        if (self.path / "CURRENT").exists():
            try:
                existing = [n for n in Rdict.list_cf(str(self.path), opts) if n != "default"]
            except Exception as exc:
                if self._is_damage(str(exc)):
                    raise _Damaged(str(exc)) from exc
                raise StorageError(
                    f"cannot read the column families of the store at {self.path}: {exc}"
                ) from exc
        elif self.read_only:
            raise StorageError(f"no store at {self.path}; run `statestore bootstrap` first")
        else:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create the store directory {self.path}: {exc}") from exc
            self._mark()  # before RocksDB writes a file: the directory is the store's from here
        families = {name: self._cf_options(name) for name in {*existing, META}}
        try:
            if self.secondary is not None:
                # A secondary must keep every table file open: the primary's compactions
                # delete files it may still be reading between two catch-ups.
                opts.set_max_open_files(-1)
                db = Rdict(
                    str(self.path),
                    opts,
                    column_families=families,
                    access_type=AccessType.secondary(str(self.secondary)),
                )
            elif self.read_only:
                db = Rdict(
                    str(self.path),
                    opts,
                    column_families=families,
                    access_type=AccessType.read_only(),
                )
            else:
                db = Rdict(str(self.path), opts, column_families=families)
        except Exception as exc:
            text = str(exc)
            if self._is_damage(text):
                raise _Damaged(text) from exc
            # The LOCK file, by name: "lock" alone also matches "block checksum mismatch".
            if "LOCK" in text:
                raise StoreLockedError(
                    f"the store at {self.path} is open in another process (a running "
                    "`statestore serve`?); stop it first, or use the REST API against it"
                ) from exc
            raise StorageError(f"cannot open the store at {self.path}: {text}") from exc
        for name in families:
            self._handles[name] = db.get_column_family_handle(name)
            self._cfs[name] = db.get_column_family(name)
        return db

    # -- column families -------------------------------------------------------------

    def families(self) -> list[str]:
        return sorted(self._handles)

    def has_family(self, name: str) -> bool:
        return name in self._handles

    def create_family(self, name: str) -> None:
        with self._lock:
            if name in self._handles:
                return
            try:
                self._db.create_column_family(name, self._cf_options(name))
            except Exception as exc:
                raise StorageError(
                    f"cannot create column family {name!r} in {self.path}: {exc}"
                ) from exc
            self._handles[name] = self._db.get_column_family_handle(name)
            self._cfs[name] = self._db.get_column_family(name)

    def drop_family(self, name: str) -> None:
        with self._lock:
            if name not in self._handles:
                return
            self._handles.pop(name)
            self._cfs.pop(name)
            try:
                self._db.drop_column_family(name)
            except Exception as exc:
                raise StorageError(
                    f"cannot drop column family {name!r} in {self.path}: {exc}"
                ) from exc

    def has_data(self, cf: str) -> bool:
        """Whether *cf* holds any key."""
        return next(self.scan(cf, cache=False), None) is not None

    def reset_family(self, name: str) -> None:
        """Drop *name* and create it again, empty."""
        self.drop_family(name)
        self.create_family(name)

    def ingest(self, cf: str, path: Path) -> None:
        """Move the SST file *path* into *cf* atomically: all of its entries or none."""
        opts = IngestExternalFileOptions()
        opts.set_move_files(True)
        family = self._cfs.get(cf)
        if family is None:
            raise StorageError(f"column family {cf!r} does not exist in {self.path}")
        try:
            family.ingest_external_file([str(path)], opts)
        except Exception as exc:
            raise StorageError(
                f"cannot ingest {path} into {cf!r} of the store at {self.path}: {exc}"
            ) from exc

    def handle(self, name: str) -> Any:
        try:
            return self._handles[name]
        except KeyError:
            raise StorageError(f"column family {name!r} does not exist in {self.path}") from None

    # -- reads and writes --------------------------------------------------------------

    def batch(self) -> Batch:
        return Batch(self)

    def write(self, batch: Batch) -> None:
        try:
            self._db.write(batch._wb, self._write_opts)
        except Exception as exc:
            raise StorageError(f"write to the store at {self.path} failed: {exc}") from exc

    def _read_failed(self, exc: Exception) -> StorageError:
        # Block checksums are verified on every read: a damaged block is an error, never data.
        return StorageError(
            f"read from the store at {self.path} failed: {exc}; if the store is damaged, "
            "run `statestore rebuild` (or move the directory away and run `statestore bootstrap`)"
        )

    def get(self, cf: str, key: bytes) -> bytes | None:
        try:
            family = self._cfs[cf]
        except KeyError:
            return None
        try:
            value: bytes | None = family.get(key)
        except Exception as exc:
            raise self._read_failed(exc) from exc
        return value

    def get_many(self, cf: str, keys: list[bytes]) -> list[bytes | None]:
        family = self._cfs.get(cf)
        if family is None:
            return [None] * len(keys)
        try:
            # A get per key: rocksdict's multi-get measured slower per key than single gets
            # here (2.9-6.8 µs against 1.5-1.9 µs for keys that exist), and the single gets
            # use the row cache.
            get = family.get
            values: list[bytes | None] = [get(key) for key in keys]
        except Exception as exc:
            raise self._read_failed(exc) from exc
        return values

    def scan(
        self, cf: str, start: bytes = b"", end: bytes | None = None, *, cache: bool = True
    ) -> Iterator[tuple[bytes, bytes]]:
        """Items of *cf* with ``start <= key < end`` in key order (a consistent snapshot).

        ``cache=False`` leaves the block cache alone: for a scan read once (a merge).
        """
        family = self._cfs.get(cf)
        if family is None:
            return
        ropts = ReadOptions()
        ropts.fill_cache(cache)  # type: ignore[call-arg]  # the stub omits the argument
        if end is not None:
            ropts.set_iterate_upper_bound(end)
        it = family.iter(ropts)
        it.seek(start)
        while it.valid():
            yield it.key(), it.value()
            it.next()
        try:
            it.status()
        except Exception as exc:
            raise self._read_failed(exc) from exc

    def delete_range(self, cf: str, start: bytes, end: bytes) -> None:
        """Delete the keys in ``[start, end)`` in one write (small ranges: metadata).

        Key by key: RocksDB's range deletion does not work with the row cache.
        """
        self.handle(cf)  # a missing family is an error, as for any write
        batch = self.batch()
        for key, _ in self.scan(cf, start, end):
            batch.delete(cf, key)
        if len(batch):
            self.write(batch)

    def checkpoint(self, path: Path) -> None:
        """A consistent copy of the whole database at *path* (a new directory on the same
        file system: table files are hard links). Every column family is at one point in
        the log: positions and data together, as one write left them."""
        try:
            Checkpoint(self._db).create_checkpoint(str(path))
        except Exception as exc:
            raise StorageError(
                f"cannot take a checkpoint of the store at {self.path}: {exc}"
            ) from exc

    @staticmethod
    def list_families(path: Path) -> list[str] | None:
        """The column families of the database at *path* without opening it (None: no database)."""
        if not (Path(path) / "CURRENT").exists():
            return None
        try:
            return [n for n in Rdict.list_cf(str(path), Options(raw_mode=True)) if n != "default"]
        except Exception as exc:
            raise StorageError(f"cannot read the column families of {path}: {exc}") from exc

    def catch_up(self) -> None:
        """Replay what the primary has written since the last catch-up (a secondary only).

        Column families the primary created since this instance opened stay unseen:
        a new generation of a view needs a new instance.
        """
        try:
            self._db.try_catch_up_with_primary()
        except Exception as exc:
            raise StorageError(
                f"cannot catch up with the store at {self.path} (secondary in "
                f"{self.secondary}): {exc}"
            ) from exc

    def compact(self, cf: str) -> None:
        """Compact a whole column family (after a bulk load, before declaring ready)."""
        self._cfs[cf].compact_range(None, None)

    def flush(self) -> None:
        try:
            self._db.flush_wal(True)
            self._db.flush()
        except Exception as exc:
            raise StorageError(f"flush of the store at {self.path} failed: {exc}") from exc

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        problem: Exception | None = None
        if not self.read_only:
            try:
                self._db.flush_wal(True)
            except Exception as exc:
                problem = exc
        self._handles.clear()
        self._cfs.clear()
        if not self.read_only:
            with contextlib.suppress(OSError):
                (self.path / HOLDER).unlink(missing_ok=True)
        try:
            self._db.close()
        except Exception as exc:
            problem = problem or exc
        if problem is not None:
            # After a failed write (a full disk) the final sync fails too. The database is
            # released all the same; whatever was not synced is consistent (data and
            # positions are one write) and is read again from Kafka at the next start.
            log.error("store.close_failed path=%s error=%s", self.path, problem)
