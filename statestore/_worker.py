"""``python -m statestore._worker FD``: a worker process (see ``workers``).

Its spec arrives pickled on stdin from the owning process; its reports leave
through the pipe whose file descriptor is the argument.
"""

from __future__ import annotations

import pickle
import sys
from multiprocessing.connection import Connection


def main() -> None:
    spec = pickle.loads(sys.stdin.buffer.read())
    spec.run(Connection(int(sys.argv[1])))


if __name__ == "__main__":
    main()
