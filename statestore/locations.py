"""Where snapshots live: a local directory or an S3-compatible bucket, behind one interface.

A location holds flat objects by name (no sub-directories). Writes are atomic: a
reader sees a whole object or none (a directory writes a temporary file and renames
it; S3 makes an object visible only once its upload is complete). Every failure to
reach or use the location is a :class:`SnapshotSourceError` naming the location.
The contract (:class:`Location`, the object names) is :mod:`statestore.location_contract`;
this module holds the directory location and :func:`open_location`, which picks one.

``open_location("s3://bucket/prefix")`` needs the ``s3`` extra (boto3): endpoint,
region and credentials come from the environment as AWS tools read them
(``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``,
profiles, instance and pod roles), never from statestore's config file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO

from .errors import SnapshotSourceError
from .location_contract import NAME, Location, check_name

__all__ = ["DirectoryLocation", "Location", "check_name", "fsync_dir", "open_location"]


class DirectoryLocation:
    """Objects as files in one local directory (created on the first write)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.url = str(self.path)

    def _fail(self, what: str, exc: OSError) -> SnapshotSourceError:
        return SnapshotSourceError(f"cannot {what} in the snapshot directory {self.path}: {exc}")

    def names(self) -> list[str]:
        try:
            entries = list(os.scandir(self.path))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._fail("list", exc) from exc
        return sorted(e.name for e in entries if e.is_file() and NAME.match(e.name))

    def size(self, name: str) -> int:
        try:
            return (self.path / check_name(name)).stat().st_size
        except OSError as exc:
            raise self._fail(f"find {name}", exc) from exc

    def _put(self, name: str, write: object) -> None:
        target = self.path / check_name(name)
        tmp = self.path / f".{name}.partial-{os.getpid()}"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as out:
                if isinstance(write, bytes):
                    out.write(write)
                else:
                    with open(write, "rb") as src:  # type: ignore[call-overload]
                        while chunk := src.read(1 << 20):
                            out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
            fsync_dir(self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise self._fail(f"write {name}", exc) from exc

    def put_file(self, name: str, path: Path) -> None:
        if Path(path).resolve().parent == self.path.resolve():
            # Written in place by the caller (a temporary name in this directory): rename.
            try:
                os.replace(path, self.path / check_name(name))
                fsync_dir(self.path)
            except OSError as exc:
                raise self._fail(f"write {name}", exc) from exc
            return
        self._put(name, path)

    def put_bytes(self, name: str, data: bytes) -> None:
        self._put(name, data)

    def get_bytes(self, name: str) -> bytes:
        try:
            return (self.path / check_name(name)).read_bytes()
        except OSError as exc:
            raise self._fail(f"read {name}", exc) from exc

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self.path / check_name(name), "rb")
        except OSError as exc:
            raise self._fail(f"read {name}", exc) from exc

    def delete(self, name: str) -> None:
        try:
            (self.path / check_name(name)).unlink(missing_ok=True)
        except OSError as exc:
            raise self._fail(f"remove {name}", exc) from exc

    def url_of(self, name: str) -> str:
        return str(self.path / name)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_location(url: str | Path) -> Location:
    """The location *url* names: ``s3://bucket[/prefix]`` or a directory path."""
    text = str(url)
    if text.startswith("s3://"):
        try:
            from .s3 import S3Location  # boto3: the s3 extra, imported on first use
        except ImportError as exc:
            raise SnapshotSourceError(
                f"{text}: S3 locations need the s3 extra (pip install 'statestore[s3]'): {exc}"
            ) from exc
        return S3Location(text)
    if "://" in text:
        raise SnapshotSourceError(
            f"{text!r}: snapshots live in a directory or at an s3://bucket/prefix URL"
        )
    return DirectoryLocation(Path(text))
