"""A REST server for the bench: the product's app, one process or several worker processes.

``--workers 1`` serves exactly what ``statestore serve`` serves: ``api.create_app(config)``
owning the store (follows the topic). ``--workers N`` (N > 1) is the experiment the
bench reports on: N uvicorn worker processes share the listening socket, and each opens
the bootstrapped store read-only (``StateStore(config, read_only=True)``) and passes it
to ``create_app``. A read-only RocksDB instance does not see later writes; the
freshness cost of following with secondary instances is measured separately
(``bench.secondary``).

    python -m bench.serve CONFIG --port P [--workers N] [--http h11|httptools] [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

import uvicorn

from statestore import StateStore, load_config

_ENV = "STATESTORE_BENCH_CONFIG"


def read_only_app() -> Any:
    """uvicorn factory for worker processes: the app over a read-only store."""
    from statestore.api.app import create_app

    config = load_config(os.environ[_ENV])
    store = StateStore(config, read_only=True)
    return create_app(config, store=store, start=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--http", default="auto")
    ap.add_argument("--loop", default="auto")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    common: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": args.port,
        "log_level": "warning",
        "access_log": False,
        "http": args.http,
        "loop": args.loop,
    }
    if args.workers == 1:
        from statestore.api.app import create_app

        uvicorn.run(create_app(load_config(args.config)), **common)
    else:
        os.environ[_ENV] = args.config
        uvicorn.run("bench.serve:read_only_app", factory=True, workers=args.workers, **common)


if __name__ == "__main__":
    main()
