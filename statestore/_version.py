"""The installed statestore's version, read from its package metadata.

pyproject.toml's ``[project] version`` is the one place the version is written; the
build copies it into the metadata read here. Library modules import it from here,
never from the package root (which imports them: a circle).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("statestore")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
