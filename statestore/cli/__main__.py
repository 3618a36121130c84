"""``python -m statestore.cli``."""

from . import main

main()
