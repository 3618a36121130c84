"""What every test suite shares: the local services, `statestore` processes, configs, waits.

Modules, one job each (import them by name, e.g. ``from tests.support.kafka import Topics``):

- ``kafka``: the broker's address, the check that it answers, throwaway topics, producing.
- ``registry``: the schema registry's address and the check that it answers.
- ``schemas``: Avro record schemas built from one definition (``record``, ``with_field``)
  and the patient schemas of the repository.
- ``processes``: ``statestore`` commands as subprocesses (a clean environment, free ports,
  a ``Server`` that waits for readiness with a deadline), their JSON log lines, signals.
- ``config``: config files (TOML) for the command line and in-memory ``Config`` objects.
- ``env``: a test's topics, producer and ``Config`` maker in one (the ``env`` fixture).
- ``oracle``: the log read with a plain consumer and reduced to the view it must give.
- ``stores``: a store's positions and entities read back, to compare with the oracle.
- ``waits``: waiting for a state with a deadline (never a bare sleep).

The suites' fixtures stay in ``conftest.py`` files; the ones several suites use are in
tests/conftest.py and are built from these functions. The in-memory topic log the
broker-free tests drive ingest with is public, in ``statestore.testing``.
"""
