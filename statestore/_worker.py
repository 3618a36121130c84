"""``python -m statestore._worker FD``: a bulk-load worker process (see ``bulk``).

Its spec arrives pickled on stdin from the owning process; its reports leave
through the pipe whose file descriptor is the argument.
"""

from __future__ import annotations

import pickle
import sys
from multiprocessing.connection import Connection


def main() -> None:
    spec = pickle.loads(sys.stdin.buffer.read())
    from .bulk import worker_main

    worker_main(spec, Connection(int(sys.argv[1])))


if __name__ == "__main__":
    main()
