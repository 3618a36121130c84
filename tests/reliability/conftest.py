"""Fixtures of the reliability suite: the run mode (CI or ``--soak``), the shared broker,
a private broker that tests may stop and start, and the figures report.

CI mode (the default) keeps every scenario lean; ``--soak`` (``make soak``) runs the same
scenarios at their long settings and the timed soak for ``--soak-minutes`` (default 10).
The brokers and the registry are required: when one is missing the tests fail, never skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from run_mode import CI_MODE, Figures, Mode, OwnBroker, set_mode, soak_mode

from tests.support.processes import REPO, free_port

RESULTS = REPO / "var" / "reliability"
OWN_BROKERS = RESULTS / "own-brokers"
_FIGURES_PATH = pytest.StashKey[Path]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reliability")
    group.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="run the reliability suite at its long settings (>= 200 kills, timed soak)",
    )
    group.addoption(
        "--soak-minutes",
        type=float,
        default=float(os.environ.get("STATESTORE_SOAK_MINUTES", "10")),
        help="minutes of steady ingest plus query load in the soak test (with --soak; default 10)",
    )


def _mode(config: pytest.Config) -> Mode:
    if config.getoption("--soak", default=False):
        return soak_mode(float(config.getoption("--soak-minutes", default=10.0)))
    return CI_MODE


def pytest_configure(config: pytest.Config) -> None:
    set_mode(_mode(config))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--soak", default=False):
        return
    # Soak settings run far longer than the CI per-test timeout allows.
    minutes = float(config.getoption("--soak-minutes", default=10.0))
    for item in items:
        if item.path.is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.timeout(int(3600 + minutes * 60 * 2)))


@pytest.fixture(scope="session")
def mode(pytestconfig: pytest.Config) -> Mode:
    return _mode(pytestconfig)


@pytest.fixture(scope="session")
def figures(mode: Mode, pytestconfig: pytest.Config) -> Iterator[Figures]:
    """Figures the tests report (kills, bounces, bad inputs, mismatches), written at the end."""
    report = Figures(mode.name)
    yield report
    if report.data:
        pytestconfig.stash[_FIGURES_PATH] = report.write(RESULTS)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    path = config.stash.get(_FIGURES_PATH, None)
    if path is not None:
        terminalreporter.write_sep("-", f"reliability figures ({path})")
        terminalreporter.write_line(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def shared_bootstrap(bootstrap_servers: str) -> str:
    """The shared local broker (``topics`` makes topics there); fails (never skips) when it
    is not running. Tests that stop a broker use ``own_broker`` instead."""
    return bootstrap_servers


_OWN_BROKER = pytest.StashKey["PendingBroker"]()


class PendingBroker:
    """A private broker whose start was launched in the background at collection time,
    so the JVM and KRaft start-up overlap with the tests that run before it is needed.

    Each one is recorded under var/reliability/own-brokers/ with the pid of its pytest
    process: one left running by a session that was killed is stopped by the next session.
    """

    def __init__(self) -> None:
        shared_var = Path(os.environ.get("STATESTORE_VAR", REPO / "var"))
        libs = shared_var / "kafka" / "libs"
        self.problem: str | None = None
        if not any(libs.glob("kafka_2.13-*.jar")):
            self.problem = f"no Kafka jars in {libs}: run `scripts/local-kafka start` once first"
        self.var = Path(tempfile.mkdtemp(prefix="statestore-own-broker-"))
        (self.var / "kafka").mkdir()
        (self.var / "kafka" / "libs").symlink_to(libs, target_is_directory=True)
        port, controller = free_port(), free_port()
        self.broker = _own_broker(self.var, port, controller)
        self.record = OWN_BROKERS / f"{os.getpid()}-{self.var.name}.json"
        OWN_BROKERS.mkdir(parents=True, exist_ok=True)
        self.record.write_text(
            json.dumps({"pid": os.getpid(), "var": str(self.var), "ports": [port, controller]})
        )
        self.starting: subprocess.Popen[str] | None = None
        self.closed = False
        if self.problem is None:
            self.starting = subprocess.Popen(
                [str(REPO / "scripts" / "local-kafka"), "start"],
                env=self.broker.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def wait(self) -> OwnBroker:
        if self.problem is not None:
            pytest.fail(self.problem)
        assert self.starting is not None
        output, _ = self.starting.communicate(timeout=300)
        if self.starting.returncode != 0:
            pytest.fail(f"the private broker did not start:\n{output}")
        return self.broker

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.starting is not None:
            if self.starting.poll() is None:
                self.starting.communicate(timeout=300)
            with contextlib.suppress(AssertionError):
                self.broker.stop()
        shutil.rmtree(self.var, ignore_errors=True)
        self.record.unlink(missing_ok=True)


def _own_broker(var: Path, port: int, controller: int) -> OwnBroker:
    env = {
        **os.environ,
        "STATESTORE_VAR": str(var),
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(controller),
        "KAFKA_HEAP": "-Xms128m -Xmx512m",
        "KAFKA_STOP_TIMEOUT": "20",
    }
    return OwnBroker(f"127.0.0.1:{port}", env, var)


def _stop_leftover_brokers() -> None:
    """Stop the private brokers of sessions that were killed before they could."""
    for record in OWN_BROKERS.glob("*.json") if OWN_BROKERS.is_dir() else ():
        with contextlib.suppress(OSError, ValueError, KeyError):
            data = json.loads(record.read_text())
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(data["pid"]), 0)  # signal 0: only asks whether it is alive
                continue
            var = Path(data["var"])
            if (var / "kafka").is_dir():
                with contextlib.suppress(AssertionError):
                    _own_broker(var, *data["ports"]).stop()
            shutil.rmtree(var, ignore_errors=True)
            record.unlink(missing_ok=True)


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    _stop_leftover_brokers()
    if any("own_broker" in getattr(item, "fixturenames", ()) for item in session.items):
        pending = PendingBroker()
        session.config.stash[_OWN_BROKER] = pending
        # Runs however the session ends (failures, -x, Ctrl-C).
        session.config.add_cleanup(pending.close)


@pytest.fixture(scope="session")
def own_broker(pytestconfig: pytest.Config) -> OwnBroker:
    """A broker of this test session alone, so stopping it never disturbs the shared one.

    It reuses the jars the shared broker was started with (no download); it is started in
    the background when the session begins and stopped when it ends.
    """
    pending = pytestconfig.stash.get(_OWN_BROKER, None)
    if pending is None:
        pending = pytestconfig.stash[_OWN_BROKER] = PendingBroker()
        pytestconfig.add_cleanup(pending.close)
    return pending.wait()
