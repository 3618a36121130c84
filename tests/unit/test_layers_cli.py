"""The command line stands on the library's public API and the REST app's public package.

No module of ``statestore/cli`` imports the storage layer (``statestore.records``,
``statestore.storage``) or a module inside ``statestore.api``: it serves through
``statestore.api`` itself and reads a held store through the library
(``statestore.offline``). The import graph is the one ``test_layers`` reads from
the source, every import statement counted (inside functions too).
"""

from __future__ import annotations

from test_layers import _graph

CLI = "statestore.cli"
STORAGE_LAYER = ("statestore.records", "statestore.storage")
API = "statestore.api"


def _forbidden(target: str) -> bool:
    """Whether a CLI module may not import *target*."""
    return target in STORAGE_LAYER or target.startswith(API + ".")


def _offenders(graph: dict[str, dict[str, int]]) -> list[str]:
    return sorted(
        f"{name} -> {target} (line {line})"
        for name, edges in graph.items()
        if name == CLI or name.startswith(CLI + ".")
        for target, line in edges.items()
        if _forbidden(target)
    )


def test_the_cli_imports_neither_storage_nor_api_internals() -> None:
    """Every CLI module reaches the store through the library and the app through ``statestore.api``."""
    graph, modules = _graph()
    assert any(name.startswith(CLI + ".") for name in modules)
    offenders = _offenders(graph)
    assert offenders == [], "the CLI imports below its layer:\n" + "\n".join(offenders)


def test_the_check_names_what_it_forbids() -> None:
    """The storage modules and api's inner modules are refused; the public package is not."""
    graph = {
        "statestore.cli._x": {"statestore.storage": 3, "statestore.api": 4, "statestore": 5},
        "statestore.cli._y": {"statestore.api.app": 7, "statestore.records": 8},
        "statestore.view": {"statestore.storage": 1},
    }
    assert _offenders(graph) == [
        "statestore.cli._x -> statestore.storage (line 3)",
        "statestore.cli._y -> statestore.api.app (line 7)",
        "statestore.cli._y -> statestore.records (line 8)",
    ]
