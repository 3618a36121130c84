"""The ``statestore`` command line: serve, bootstrap, rebuild, status, get, get-by, quarantine,
snapshot.

Exit codes: 0 success, 1 a view failed / an entity is absent / a runtime error,
2 bad usage or configuration (unknown view, invalid config, store in use), 130
interrupted (SIGINT or SIGTERM, after finishing the batch in flight); a second
signal exits at once with 128 + the signal's number.
"""

from __future__ import annotations

from ._app import app
from ._catchup import bootstrap, rebuild
from ._reads import get, get_by, quarantine
from ._serve import serve
from ._snapshot import snapshot_app
from ._status import status

__all__ = ["app", "main"]

# Registered here, in the order `statestore --help` lists them.
app.command()(serve)
app.command()(bootstrap)
app.command()(rebuild)
app.command()(status)
app.command()(get)
app.command("get-by")(get_by)
app.command()(quarantine)
app.add_typer(snapshot_app)


def main() -> None:
    """Console-script entry point."""
    app()
