"""Configs for the tests: TOML files for the command line, ``Config`` objects for the library.

Both point at the local broker by default, and a config file's [api] port is a free one,
never the default port: a server another test (or person) runs there would answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from statestore import ApiConfig, Config, SchemaRegistryConfig, StoreConfig, ViewConfig

from .kafka import BOOTSTRAP
from .processes import free_port


def _table(values: Mapping[str, Any]) -> list[str]:
    # A bare key when TOML allows one (``path``), else quoted (``"bootstrap.servers"``).
    return [
        f"{k if k.replace('_', '').replace('-', '').isalnum() else json.dumps(k)} = {json.dumps(v)}"
        for k, v in values.items()
    ]


def write_config(
    directory: Path,
    views: Sequence[Mapping[str, Any]],
    *,
    bootstrap: str = BOOTSTRAP,
    kafka: Mapping[str, Any] | None = None,
    store: Path | None = None,
    store_options: Mapping[str, Any] | None = None,
    port: int | None = None,
    api: Mapping[str, Any] | None = None,
    tokens: Sequence[Mapping[str, Any]] = (),
    registry: str | None = None,
    log: Mapping[str, Any] | None = None,
    cluster: Mapping[str, Any] | None = None,
    name: str = "statestore.toml",
) -> Path:
    """A config file *directory*/*name* over *views*: the broker at *bootstrap* (plus *kafka*
    settings), its store at *store* (beside the file by default), [api] on *port* (a free
    one by default) with *api* settings and *tokens*, and when given a schema *registry*
    and [log] settings (``log={"format": "json"}``) and [cluster] settings."""
    lines = ["[kafka]", *_table({"bootstrap.servers": bootstrap, **(kafka or {})}), ""]
    lines += [
        "[store]",
        *_table({"path": str(store or directory / "store"), **(store_options or {})}),
    ]
    lines += ["", "[api]", *_table({"port": port or free_port(), **(api or {})}), ""]
    for token in tokens:
        lines += ["[[api.tokens]]", *_table(token), ""]
    if registry is not None:
        lines += ["[schema_registry]", *_table({"url": registry}), ""]
    if log is not None:
        lines += ["[log]", *_table(log), ""]
    if cluster is not None:
        lines += ["[cluster]", *_table(cluster), ""]
    for view in views:
        lines += ["[[views]]", *_table(view), ""]
    path = directory / name
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def store_config(
    path: Path,
    views: Iterable[ViewConfig | Mapping[str, Any]],
    *,
    bootstrap: str = BOOTSTRAP,
    kafka: Mapping[str, Any] | None = None,
    store_options: Mapping[str, Any] | None = None,
    api: ApiConfig | None = None,
    registry: str | None = None,
) -> Config:
    """A ``Config`` over *views* (``ViewConfig``s or their fields) with its store at *path*,
    the broker at *bootstrap* and, when given, the schema *registry* (5 s timeout)."""
    return Config(
        kafka={"bootstrap.servers": bootstrap, **(kafka or {})},
        store=StoreConfig(path=path, **(store_options or {})),
        api=api or ApiConfig(),
        schema_registry=(
            SchemaRegistryConfig()
            if registry is None
            else SchemaRegistryConfig(url=registry, timeout_s=5.0)
        ),
        views=tuple(v if isinstance(v, ViewConfig) else ViewConfig(**v) for v in views),
    )
