"""What every snapshot location is: the :class:`Location` protocol and its object names.

Below :mod:`statestore.locations` (the directory location and the dispatcher) and
:mod:`statestore.s3` (the bucket location), so both implement one contract and
accept the same names without importing each other.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import BinaryIO, Protocol

from .errors import SnapshotSourceError

__all__ = ["NAME", "Location", "check_name"]

# Object names statestore writes: letters, digits, dots, dashes, underscores.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def check_name(name: str) -> str:
    """*name* when it is a plain object name (no path separators, no leading dot)."""
    if not NAME.match(name):
        raise SnapshotSourceError(f"{name!r} is not a snapshot object name")
    return name


class Location(Protocol):
    """A flat namespace of objects (see :mod:`statestore.locations`)."""

    url: str

    def names(self) -> list[str]:
        """Names of the objects in the location, sorted."""
        ...

    def size(self, name: str) -> int:
        """The size in bytes of object *name* (SnapshotSourceError when missing)."""
        ...

    def put_file(self, name: str, path: Path) -> None:
        """Store the local file *path* as object *name*, atomically."""
        ...

    def put_bytes(self, name: str, data: bytes) -> None:
        """Store *data* as object *name*, atomically."""
        ...

    def get_bytes(self, name: str) -> bytes:
        """The whole of a small object (a manifest)."""
        ...

    def open(self, name: str) -> BinaryIO:
        """A reader of object *name* from its start (resuming after transient errors
        where the store allows); read errors it cannot get past raise SnapshotSourceError."""
        ...

    def delete(self, name: str) -> None:
        """Remove object *name* (no error when it is gone already)."""
        ...

    def url_of(self, name: str) -> str:
        """How the object is named to a user (a path, an ``s3://`` URL)."""
        ...
