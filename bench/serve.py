"""The product's REST app on a chosen HTTP stack, one process: the bench's comparison row.

``statestore serve`` runs on httptools + uvloop (installed with the project); the REST
rows of the bench run it as it is (``bench/rest.py``). This serves exactly its app,
``api.create_app(config)`` owning the store (follows the topic), on another stack (h11 +
asyncio) so that the report can show what the stack costs.

    python -m bench.serve CONFIG --port P [--http h11|httptools] [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import logging

import uvicorn

from statestore import load_config


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--http", default="auto")
    ap.add_argument("--loop", default="auto")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from statestore.api import create_app

    uvicorn.run(
        create_app(load_config(args.config)),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        http=args.http,
        loop=args.loop,
    )


if __name__ == "__main__":
    main()
