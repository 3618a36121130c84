"""Snapshots: a consistent copy of the store, packed as one archive, and stores seeded from one.

A snapshot is a RocksDB checkpoint of the store. The views' positions live in the
same database as their data and every apply writes both in one batch, so a
checkpoint is consistent by construction: a store seeded from it holds exactly
what the source held at those positions, and catches up from there.

The archive (``<name>.tar``) holds ``manifest.json`` first, then the database's
files under ``store/``. The manifest says what the snapshot is: its format, the
statestore version that made it, when, and per view its topic (and topic id),
codecs, config fingerprint, indexes, positions per partition and key count; and
the size and SHA-256 of every file. A copy of the manifest is stored beside the
archive (``<name>.json``, written last): listing reads only those, and an archive
without one is not complete.

Seeding (``restore``) reads the archive as a stream — from a directory or S3,
never staged whole — checks every file against the manifest while writing it
into a directory beside the store, checks the manifest against the config, opens
the result as a database, and only then renames it into place. A crash at any
step leaves either the store that was there (an empty one) or no store, never a
partly restored one: the work directory is not a store and is removed by the
next attempt. The staleness guards apply when the views start from the restored
positions (ingest.py): positions below a partition's log start offset, a
snapshot older than the topic's ``delete.retention.ms``, a topic recreated since.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import secrets
import shutil
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from .config import Config, ViewConfig
from .errors import SnapshotError, SnapshotSourceError, StateStoreError, StorageError
from .locations import Location, fsync_dir, open_location
from .records import (
    STARTS_KEY,
    caught_up_key,
    counter_key,
    entity_family,
    family_owner,
    fingerprint_key,
    index_done_key,
    slot_id,
    synced_at_key,
    topic_id_key,
)
from .slot import current_generation, meta_int, slot_families, stored_positions
from .storage import HOLDER, MARKER, META, RocksOptions, Storage

__all__ = [
    "FORMAT",
    "SEEDED_KEY",
    "SnapshotInfo",
    "check_against",
    "create_snapshot",
    "list_snapshots",
    "prune_snapshots",
    "restore",
    "store_is_empty",
    "verify_snapshot",
]

log = logging.getLogger(__name__)

# The archive format this version writes and the newest it reads.
FORMAT = 1
MANIFEST = "manifest.json"
_STORE = "store/"
_ARCHIVE = ".tar"
_SIDECAR = ".json"
# Files of a database directory that are not part of its state.
_SKIP = {"LOCK", MARKER, HOLDER}
# Meta keys that describe this process or this store's own history, not the views' state.
_LOCAL_META = (STARTS_KEY, b"snapshot/")
_COPY_CHUNK = 1 << 20
# A manifest lists a few hundred files: one larger than this is not a snapshot's.
_MANIFEST_LIMIT = 16 << 20
# A restore's work directory carries this file from its first moment: only such
# directories are ever removed as leftovers of an interrupted restore.
_WORK_MARK = "STATESTORE-RESTORE"
# Failpoints for the crash tests: STATESTORE_FAILPOINT=restore:<step> stops the
# process at that step (it writes "failpoint <step>" to stderr and waits to be killed).
_FAILPOINT_ENV = "STATESTORE_FAILPOINT"


def _failpoint(step: str) -> None:
    if os.environ.get(_FAILPOINT_ENV) == f"restore:{step}":
        os.write(2, f"failpoint {step}\n".encode())
        threading.Event().wait()


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot: where it is and what its manifest says."""

    name: str
    url: str
    manifest: dict[str, Any]
    size: int | None = None
    seconds: float | None = None
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def views(self) -> dict[str, Any]:
        views: dict[str, Any] = self.manifest.get("views", {})
        return views

    @property
    def created_at_ms(self) -> int:
        return int(self.manifest.get("created_at_ms", 0))

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "url": self.url,
            "size": self.size,
            "format": self.manifest.get("format"),
            "statestore": self.manifest.get("statestore"),
            "created_at": self.manifest.get("created_at"),
            "views": {
                name: {k: v[k] for k in ("topic", "keys", "positions") if k in v}
                for name, v in self.views.items()
            },
        }
        if self.seconds is not None:
            out["seconds"] = round(self.seconds, 3)
        if self.skipped:
            out["skipped"] = dict(self.skipped)
        return out


# -- create ---------------------------------------------------------------------------


def _new_name() -> str:
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}Z"
    return f"snapshot-{stamp}-{secrets.token_hex(3)}"


def _slot_manifest(storage: Storage, vc: ViewConfig) -> tuple[str | None, dict[str, Any]]:
    """``(why not, entry)``: the manifest entry of *vc*'s served slot, or why it has none."""
    generation = current_generation(storage, vc.name)
    slot = slot_id(vc.name, generation)
    if storage.get(META, caught_up_key(slot)) is None:
        return "it has not caught up with its topic yet (a first bootstrap is running)", {}
    stored_fp = storage.get(META, fingerprint_key(slot))
    if stored_fp is None or stored_fp.decode() != vc.fingerprint():
        return "the store holds it as built under another config (topic or codecs)", {}
    positions = {str(p): offset for p, offset in stored_positions(storage, slot).items()}
    topic_id = storage.get(META, topic_id_key(slot))
    indexes = [f for f in vc.indexes if storage.get(META, index_done_key(slot, f)) is not None]
    return None, {
        "topic": vc.topic,
        "topic_id": topic_id.decode() if topic_id is not None else None,
        "key": vc.key,
        "value": vc.value,
        "fingerprint": vc.fingerprint(),
        "indexes": indexes,
        "generation": generation,
        "positions": positions,
        "keys": meta_int(storage, counter_key(slot, "keys")) or 0,
        "records": meta_int(storage, counter_key(slot, "records")) or 0,
        "synced_at_ms": meta_int(storage, synced_at_key(slot)),
    }


def _meta_kept(key: bytes, slots: set[str], views: set[str]) -> bool:
    """Whether a metadata key of the checkpoint belongs in the snapshot."""
    if key.startswith(_LOCAL_META):
        return False
    kind, sep, rest = key.partition(b"/")
    if not sep:
        return True
    if kind in (b"pos", b"n", b"t", b"fp"):
        return rest.split(b"/", 1)[0].decode(errors="replace") in slots
    if kind == b"gen":
        return rest.decode(errors="replace") in views
    if key.startswith(b"history/view/"):
        return key[len(b"history/view/") :].decode(errors="replace") in views
    return True  # schemas, the cursor secret: shared by every view


def _open_copy(path: Path) -> Storage:
    """A checkpoint or a restored copy opened for a few reads and writes (small caches)."""
    return Storage(path, RocksOptions(block_cache_mb=8, row_cache_mb=0, write_buffer_mb=4))


def _prune(storage: Storage, slots: set[str], views: set[str]) -> None:
    """Leave only the chosen views' served slots (and shared metadata) in a copy."""
    keep = {f for s in slots for f in slot_families(storage, s)}
    for family in storage.families():
        if family != META and family not in keep:
            storage.drop_family(family)
    batch = storage.batch()
    for key, _ in storage.scan(META, cache=False):
        if not _meta_kept(key, slots, views):
            batch.delete(META, key)
    if len(batch):
        storage.write(batch)
    storage.flush()


def _store_files(path: Path) -> list[Path]:
    return sorted(
        p
        for p in path.iterdir()
        if p.is_file() and p.name not in _SKIP and not p.name.startswith("LOG")
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _tar_info(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o644
    return info


def _write_archive(out: IO[bytes], manifest: bytes, files: list[Path], mtime: float) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tar_info(MANIFEST, len(manifest), mtime), io.BytesIO(manifest))
        for path in files:
            with open(path, "rb") as f:
                tar.addfile(_tar_info(_STORE + path.name, path.stat().st_size, mtime), f)


def create_snapshot(
    storage: Storage,
    config: Config,
    dest: str | Path,
    views: list[str] | None = None,
    *,
    version: str = "",
) -> SnapshotInfo:
    """Take a consistent snapshot of *storage* (open, possibly being written) into *dest*.

    *views* chooses views (default: every configured view that has caught up once;
    a named view that has not is an error). Returns the snapshot's info.
    """
    started = time.monotonic()
    location = open_location(dest)
    wanted = views or [v.name for v in config.views]
    for name in wanted:
        config.view(name)  # UnknownViewError for a name not configured
    name = _new_name()
    work = storage.path.parent / f".{storage.path.name}.snapshot-{name}"
    try:
        storage.checkpoint(work)
        copy = _open_copy(work)
        try:
            entries: dict[str, Any] = {}
            skipped: dict[str, str] = {}
            for view in wanted:
                why, entry = _slot_manifest(copy, config.view(view))
                if why is None:
                    entries[view] = entry
                else:
                    skipped[view] = why
            if views:
                for view, why in skipped.items():
                    raise SnapshotError(f"cannot snapshot view {view!r}: {why}")
            if not entries:
                detail = "; ".join(f"{v}: {why}" for v, why in skipped.items())
                raise SnapshotError(f"nothing to snapshot: no view has caught up yet ({detail})")
            _prune(copy, {slot_id(v, e["generation"]) for v, e in entries.items()}, set(entries))
        finally:
            copy.close()
        files = _store_files(work)
        now = time.time()
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "statestore": version,
            "name": name,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "created_at_ms": int(now * 1000),
            "views": entries,
            "files": [
                {"path": p.name, "size": p.stat().st_size, "sha256": _sha256(p)} for p in files
            ],
        }
        manifest_bytes = orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
        archive = name + _ARCHIVE
        local_dir = getattr(location, "path", None)
        tmp_dir = Path(local_dir) if isinstance(local_dir, Path) else storage.path.parent
        try:
            tmp_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SnapshotSourceError(f"cannot create the directory {tmp_dir}: {exc}") from exc
        tmp = tmp_dir / f".{archive}.partial-{os.getpid()}"
        try:
            with open(tmp, "wb") as out:
                _write_archive(out, manifest_bytes, files, now)
                out.flush()
                os.fsync(out.fileno())
            size = tmp.stat().st_size
            location.put_file(archive, tmp)
        except OSError as exc:
            raise SnapshotSourceError(f"cannot write the snapshot archive {tmp}: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        # The manifest beside the archive is written last: it marks the snapshot complete.
        location.put_bytes(name + _SIDECAR, manifest_bytes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info = SnapshotInfo(
        name,
        location.url_of(archive),
        manifest,
        size=size,
        seconds=time.monotonic() - started,
        skipped=skipped,
    )
    log.info(
        "snapshot.created name=%s url=%s views=%s bytes=%d seconds=%.3f",
        name,
        info.url,
        ",".join(entries),
        size,
        info.seconds or 0.0,
    )
    return info


# -- list, prune, find ------------------------------------------------------------------


def _parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    try:
        manifest = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(f"{where}: the manifest is not JSON ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("format"), int):
        raise SnapshotError(f"{where}: not a statestore snapshot manifest")
    fmt = manifest["format"]
    if fmt > FORMAT:
        raise SnapshotError(
            f"{where}: made by a newer statestore ({manifest.get('statestore') or 'unknown'}, "
            f"snapshot format {fmt}); this one reads formats up to {FORMAT}: upgrade it"
        )
    views = manifest.get("views")
    files = manifest.get("files")
    if not isinstance(views, dict) or not isinstance(files, list):
        raise SnapshotError(f"{where}: the manifest lacks its views or files")
    for f in files:
        if not (
            isinstance(f, dict)
            and isinstance(f.get("path"), str)
            and "/" not in f["path"]
            and f["path"] not in ("", ".", "..")
            and isinstance(f.get("size"), int)
            and isinstance(f.get("sha256"), str)
        ):
            raise SnapshotError(f"{where}: the manifest names a file it cannot describe: {f!r}")
    return manifest


def _manifest_of(location: Location, name: str) -> dict[str, Any] | None:
    """The manifest stored beside archive *name* (None: unreadable, logged)."""
    side = name + _SIDECAR
    try:
        return _parse_manifest(location.get_bytes(side), location.url_of(side))
    except SnapshotSourceError:
        raise
    except SnapshotError as exc:
        log.warning("snapshot.unreadable_manifest name=%s error=%s", name, exc)
        return None


def _complete(names: list[str]) -> list[str]:
    """Names of the snapshots whose archive and manifest are both there, in name order
    (which is the order they were taken in: the name starts with the time)."""
    present = set(names)
    return sorted(
        n[: -len(_SIDECAR)]
        for n in present
        if n.endswith(_SIDECAR) and n[: -len(_SIDECAR)] + _ARCHIVE in present
    )


def list_snapshots(dest: str | Path, *, location: Location | None = None) -> list[SnapshotInfo]:
    """The complete snapshots in *dest*, oldest first (an archive without its manifest
    beside it is not complete: an upload cut short, a snapshot being written)."""
    location = location or open_location(dest)
    out: list[SnapshotInfo] = []
    for name in _complete(location.names()):
        manifest = _manifest_of(location, name)
        if manifest is None:
            continue
        archive = name + _ARCHIVE
        out.append(
            SnapshotInfo(name, location.url_of(archive), manifest, size=location.size(archive))
        )
    out.sort(key=lambda s: (s.created_at_ms, s.name))
    return out


def prune_snapshots(dest: str | Path, keep: int) -> list[str]:
    """Remove all but the newest *keep* snapshots in *dest*; the names removed."""
    location = open_location(dest)
    old = list_snapshots(dest, location=location)[:-keep] if keep > 0 else []
    for snap in old:
        # The manifest first: a snapshot without one is no longer listed or used.
        location.delete(snap.name + _SIDECAR)
        location.delete(snap.name + _ARCHIVE)
        log.info("snapshot.pruned name=%s", snap.name)
    return [s.name for s in old]


def _find(src: str | Path) -> tuple[Location, str, dict[str, Any] | None]:
    """``(location, archive name, its stored manifest or None)`` of *src*: an archive, or
    a place (its newest complete snapshot, found with one listing and one read)."""
    text = str(src)
    if text.endswith(_ARCHIVE):
        if text.startswith("s3://"):
            head, _, tail = text.rpartition("/")
            return open_location(head), tail, None
        path = Path(text)
        return open_location(path.parent), path.name, None
    location = open_location(text)
    for name in reversed(_complete(location.names())):
        manifest = _manifest_of(location, name)
        if manifest is not None:
            return location, name + _ARCHIVE, manifest
    raise SnapshotError(f"no complete snapshot in {text}")


# -- read, verify, restore ----------------------------------------------------------------


class _Hashing:
    """Reads a tar member, hashing what passes."""

    def __init__(self, src: IO[bytes]) -> None:
        self.src = src
        self.digest = hashlib.sha256()
        self.size = 0

    def chunks(self) -> Iterator[bytes]:
        while chunk := self.src.read(_COPY_CHUNK):
            self.digest.update(chunk)
            self.size += len(chunk)
            yield chunk


def _read_archive(
    reader: IO[bytes],
    where: str,
    write: Callable[[str, Iterator[bytes]], None] | None,
    on_manifest: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Read an archive as a stream, checking each file against the manifest.

    *write(name, chunks)* consumes each file's bytes (None: read and discard).
    *on_manifest* sees the manifest before any file is read. Raises SnapshotError
    for anything that does not match; returns the manifest.
    """
    manifest: dict[str, Any] | None = None
    expected: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for member in tar:
                if manifest is None:
                    if member.name != MANIFEST or not member.isfile():
                        raise SnapshotError(f"{where}: not a snapshot archive (no manifest first)")
                    if member.size > _MANIFEST_LIMIT:
                        raise SnapshotError(
                            f"{where}: the manifest is {member.size} bytes, more than a "
                            f"snapshot's manifest ever is ({_MANIFEST_LIMIT})"
                        )
                    data = tar.extractfile(member)
                    assert data is not None
                    manifest = _parse_manifest(data.read(), where)
                    expected = {f["path"]: f for f in manifest["files"]}
                    if on_manifest is not None:
                        on_manifest(manifest)
                    continue
                name = member.name[len(_STORE) :] if member.name.startswith(_STORE) else ""
                entry = expected.get(name)
                if entry is None or not member.isfile() or name in seen:
                    raise SnapshotError(
                        f"{where}: the archive holds {member.name!r}, which its manifest does "
                        "not list"
                    )
                if member.size != entry["size"]:
                    raise SnapshotError(
                        f"{where}: {name} is {member.size} bytes in the archive, "
                        f"{entry['size']} in the manifest"
                    )
                data = tar.extractfile(member)
                assert data is not None
                hashing = _Hashing(data)
                if write is not None:
                    write(name, hashing.chunks())
                else:
                    for _ in hashing.chunks():
                        pass
                if hashing.size != entry["size"]:
                    raise SnapshotError(f"{where}: {name} is truncated in the archive")
                if hashing.digest.hexdigest() != entry["sha256"]:
                    raise SnapshotError(
                        f"{where}: checksum mismatch in {name} (the archive is damaged)"
                    )
                seen.add(name)
    except tarfile.TarError as exc:
        raise SnapshotError(f"{where}: the archive is damaged or truncated ({exc})") from None
    except EOFError as exc:
        raise SnapshotError(f"{where}: the archive is truncated ({exc})") from None
    if manifest is None:
        raise SnapshotError(f"{where}: the archive is empty")
    missing = sorted(set(expected) - seen)
    if missing:
        raise SnapshotError(
            f"{where}: the archive is truncated: {len(missing)} file(s) of its manifest are "
            f"missing ({', '.join(missing[:3])}{'...' if len(missing) > 3 else ''})"
        )
    return manifest


def verify_snapshot(src: str | Path) -> SnapshotInfo:
    """Read a whole snapshot and check every file against its manifest."""
    location, archive, _ = _find(src)
    url = location.url_of(archive)
    with location.open(archive) as reader:
        manifest = _read_archive(reader, url, None)
    return SnapshotInfo(archive[: -len(_ARCHIVE)], url, manifest, size=location.size(archive))


def check_against(manifest: dict[str, Any], config: Config, where: str) -> dict[str, str]:
    """Check the snapshot's views against the config's; ``{view: what seeding does}``.

    A configured view held under another topic or codecs is an error naming what
    differs. A configured view the snapshot lacks is bootstrapped from Kafka; a
    snapshot view the config lacks is left out; an index added since is backfilled.
    """
    views: dict[str, Any] = manifest["views"]
    plan: dict[str, str] = {}
    problems: list[str] = []
    for vc in config.views:
        entry = views.get(vc.name)
        if entry is None:
            plan[vc.name] = "not in the snapshot: bootstrapped from Kafka"
            continue
        diffs = [
            f"{what} {entry.get(what)!r} in the snapshot, {want!r} in the config"
            for what, want in (("topic", vc.topic), ("key", vc.key), ("value", vc.value))
            if entry.get(what) != want
        ]
        if not diffs and entry.get("fingerprint") != vc.fingerprint():
            diffs.append("its config fingerprint differs")
        if diffs:
            problems.append(f"view {vc.name!r}: {'; '.join(diffs)}")
            continue
        added = [f for f in vc.indexes if f not in entry.get("indexes", [])]
        plan[vc.name] = "seeded" + (f"; index(es) {', '.join(added)} backfilled" if added else "")
    if problems:
        raise SnapshotError(
            f"{where} does not match the config: {'; '.join(problems)}; use a snapshot of "
            "these views, or bootstrap from Kafka"
        )
    for name in views:
        if all(vc.name != name for vc in config.views):
            plan[name] = "in the snapshot, not configured: left out"
    return plan


def store_is_empty(path: Path) -> bool:
    """Whether *path* holds no view data: missing, an empty directory, or a store of
    ours whose database has no view's family (a fresh one)."""
    path = Path(path)
    if not path.exists():
        return True
    if not path.is_dir():
        return False
    if not any(path.iterdir()):
        return True
    if not (path / MARKER).is_file():
        return False
    try:
        families = Storage.list_families(path)
    except StorageError:
        return False  # damaged: opening it decides (on_corruption), then it may be seeded
    return families is None or not any(family_owner(f) is not None for f in families)


def _leftovers(store: Path) -> Iterator[Path]:
    """What an interrupted restore left beside *store*: its work directory (marked as
    such) and the empty store it was replacing (marked as a store)."""
    for p in store.parent.glob(f".{store.name}.restore-*"):
        if (p / _WORK_MARK).is_file():
            yield p
    for p in store.parent.glob(f".{store.name}.replaced-*"):
        if (p / MARKER).is_file():
            yield p


@dataclass(frozen=True)
class Restored:
    """What a restore did: the snapshot, its plan per view, how long it took."""

    snapshot: SnapshotInfo
    plan: dict[str, str]
    seconds: float
    bytes: int


def restore(src: str | Path, store: Path, config: Config) -> Restored:
    """Fill the empty store at *store* from the snapshot *src* (see the module's docstring)."""
    started = time.monotonic()
    store = Path(store)
    if not store_is_empty(store):
        raise SnapshotError(
            f"the store at {store} already holds views; a snapshot seeds only an empty store "
            "(move the directory away first)"
        )
    location, archive, stored = _find(src)
    url = location.url_of(archive)
    if stored is not None:
        # Checked before a byte of the archive is read: a wrong snapshot fails at once.
        check_against(stored, config, url)
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {store.parent}: {exc}") from exc
    for old in _leftovers(store):
        log.info("snapshot.restore_leftover_removed path=%s", old)
        shutil.rmtree(old, ignore_errors=True)
    work = store.parent / f".{store.name}.restore-{os.getpid()}-{secrets.token_hex(3)}"
    written = 0
    plan: dict[str, str] = {}
    try:
        work.mkdir()
        (work / _WORK_MARK).write_text("an interrupted restore; removed by the next one\n")
        _failpoint("begin")

        def on_manifest(manifest: dict[str, Any]) -> None:
            plan.update(check_against(manifest, config, url))

        def write(name: str, chunks: Iterator[bytes]) -> None:
            nonlocal written
            with open(work / name, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    written += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if name.startswith("MANIFEST"):
                _failpoint("files")

        with location.open(archive) as reader:
            manifest = _read_archive(reader, url, write, on_manifest)
        _failpoint("downloaded")
        fsync_dir(work)
        _finish(work, manifest, config)
        _failpoint("opened")
        (work / MARKER).write_text(
            "This directory is a statestore store (RocksDB files). statestore moves it aside "
            "or\nremoves it only while this file is here.\n",
            encoding="utf-8",
        )
        fsync_dir(work)
        _place(work, store)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    info = SnapshotInfo(archive[: -len(_ARCHIVE)], url, manifest, size=written)
    seconds = time.monotonic() - started
    log.info(
        "snapshot.restored name=%s url=%s store=%s bytes=%d seconds=%.3f plan=%s",
        info.name,
        url,
        store,
        written,
        seconds,
        "; ".join(f"{v}: {p}" for v, p in plan.items()),
    )
    return Restored(info, plan, seconds, written)


def _finish(work: Path, manifest: dict[str, Any], config: Config) -> None:
    """Open the restored database (RocksDB checks what it reads) and leave out the
    snapshot's views the config does not have."""
    configured = {v.name for v in config.views}
    try:
        storage = _open_copy(work)
    except StateStoreError as exc:
        raise SnapshotError(f"the restored database does not open: {exc}") from exc
    try:
        for view, entry in manifest["views"].items():
            slot = slot_id(view, int(entry["generation"]))
            if storage.get(META, caught_up_key(slot)) is None or not storage.has_family(
                entity_family(slot)
            ):
                raise SnapshotError(f"the snapshot's view {view!r} is not in its database")
        kept = {v: e for v, e in manifest["views"].items() if v in configured}
        if len(kept) < len(manifest["views"]):
            _prune(storage, {slot_id(v, int(e["generation"])) for v, e in kept.items()}, set(kept))
    finally:
        storage.close()


def _place(work: Path, store: Path) -> None:
    """Rename *work* to *store*; an existing (empty) store is moved aside first."""
    aside: Path | None = None
    try:
        if store.exists():
            aside = store.parent / f".{store.name}.replaced-{os.getpid()}"
            shutil.rmtree(aside, ignore_errors=True)
            store.rename(aside)
            _failpoint("aside")
        work.rename(store)
        fsync_dir(store.parent)
        (store / _WORK_MARK).unlink()
    except OSError as exc:
        raise StorageError(f"cannot move the restored store into {store}: {exc}") from exc
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


# -- taken by a running store -----------------------------------------------------------

_LAST_KEY = b"snapshot/last"
# The snapshot the store was seeded from (url, at): written once the seeded store opens.
SEEDED_KEY = b"snapshot/seeded"


@dataclass
class SnapshotStatus:
    """The snapshots a store took (kept in its metadata) and the one it was seeded from."""

    dest: str | None = None
    every_s: float | None = None
    keep: int | None = None
    last_name: str | None = None
    last_url: str | None = None
    last_at: float | None = None  # seconds since the epoch
    last_seconds: float | None = None
    last_size: int | None = None
    taken: int = 0  # by this process
    failures: int = 0  # by this process
    last_error: str | None = None
    last_error_at: float | None = None
    running: bool = False
    seeded_from: str | None = None
    seed_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Snapshotter:
    """Takes a store's snapshots one at a time: on request, and every ``[snapshots] every``."""

    def __init__(self, storage: Storage, config: Config, version: str) -> None:
        self._storage = storage
        self._config = config
        self._version = version
        self._lock = threading.Lock()
        snaps = config.snapshots
        self.status = SnapshotStatus(
            dest=snaps.dest,
            every_s=snaps.every if snaps.dest else None,
            keep=snaps.keep if snaps.dest else None,
        )
        raw = storage.get(META, _LAST_KEY)
        if raw is not None:
            with contextlib.suppress(orjson.JSONDecodeError, TypeError, KeyError):
                last = orjson.loads(raw)
                self.status.last_name = last["name"]
                self.status.last_url = last["url"]
                self.status.last_at = last["at"]
                self.status.last_seconds = last["seconds"]
                self.status.last_size = last["size"]

        raw = storage.get(META, SEEDED_KEY)
        if raw is not None:
            with contextlib.suppress(orjson.JSONDecodeError, TypeError, KeyError):
                self.status.seeded_from = orjson.loads(raw)["url"]

    def take(
        self, dest: str | Path | None = None, views: list[str] | None = None, *, wait: bool = True
    ) -> SnapshotInfo:
        """Take a snapshot into *dest* (default ``[snapshots] dest``); prune when scheduled.

        One at a time: with *wait* False, a snapshot already running is an error.
        """
        target = dest if dest is not None else self._config.snapshots.dest
        if target is None:
            raise SnapshotError("no destination: give one, or set [snapshots] dest")
        if not self._lock.acquire(blocking=wait):
            raise SnapshotError("a snapshot is being taken already; try again when it is done")
        try:
            self.status.running = True
            try:
                info = create_snapshot(
                    self._storage, self._config, target, views, version=self._version
                )
            except StateStoreError as exc:
                self.status.failures += 1
                self.status.last_error = str(exc)
                self.status.last_error_at = time.time()
                raise
            now = time.time()
            last = {
                "name": info.name,
                "url": info.url,
                "at": now,
                "seconds": info.seconds,
                "size": info.size,
            }
            with contextlib.suppress(StateStoreError):
                batch = self._storage.batch()
                batch.put(META, _LAST_KEY, orjson.dumps(last))
                self._storage.write(batch)
            self.status.taken += 1
            self.status.last_name = info.name
            self.status.last_url = info.url
            self.status.last_at = now
            self.status.last_seconds = info.seconds
            self.status.last_size = info.size
            self.status.last_error = None
            if dest is None or str(dest) == str(self._config.snapshots.dest):
                prune_snapshots(target, self._config.snapshots.keep)
            return info
        finally:
            self.status.running = False
            self._lock.release()

    def idle(self) -> None:
        """Return once no snapshot is being taken (the store may then be closed)."""
        with self._lock:
            pass

    def run(self, stop: threading.Event, ready: Callable[[], bool]) -> None:
        """Take a snapshot every ``[snapshots] every`` until *stop*.

        The first is due *every* after the last one the store recorded. A snapshot
        waits until *ready* (views still bootstrapping have nothing to give); a failure
        is logged, counted and tried again a minute later (or at the next turn).
        """
        every = self._config.snapshots.every
        last = self.status.last_at
        next_at = (last if last is not None else time.time()) + every
        while not stop.wait(max(0.0, next_at - time.time())):
            if not ready():
                next_at = time.time() + min(every, 5.0)
                continue
            try:
                self.take()
                next_at = time.time() + every
            except StateStoreError as exc:
                log.error("snapshot.failed dest=%s error=%s", self._config.snapshots.dest, exc)
                next_at = time.time() + min(every, 60.0)
