"""`statestore` commands as subprocesses: a clean environment, free ports, servers that are
waited for with a deadline, their output and JSON log lines, and stopping them with a signal.

A process's output goes to a file, never to a pipe nobody reads (a busy server would block
on a full one); :class:`Proc` remembers where its own part of that file starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from statestore import load_config

from .waits import eventually

REPO = Path(__file__).resolve().parents[2]
STATESTORE = REPO / ".venv" / "bin" / "statestore"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI run: none of the caller's STATESTORE_* settings leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATESTORE_")}
    env.update(extra)
    return env


def api_port(config: Path) -> int:
    """The [api] port written into the config file *config*."""
    port: int = load_config(config, environ={}).api.port
    return port


def run(
    args: Sequence[str | Path],
    cwd: Path,
    *,
    exe: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``statestore *args*`` (or *exe*) to its end and capture its output."""
    return subprocess.run(
        [str(exe or STATESTORE), *map(str, args)],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_script(name: str, command: str, env: dict[str, str], timeout: float = 240) -> None:
    """``scripts/<name> <command>`` (a local service: ``local-kafka start``) with *env*;
    fails with its output when it does not succeed."""
    done = subprocess.run(
        [str(REPO / "scripts" / name), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"scripts/{name} {command} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )


def spawn(
    args: Sequence[str | Path], cwd: Path, *, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``statestore *args*`` with stdout and stderr as text pipes, for a test that reads
    the output line by line as it comes (see :func:`finish`)."""
    return subprocess.Popen(
        [str(STATESTORE), *map(str, args)],
        cwd=cwd,
        env=env or clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_200(
    url: str,
    proc: subprocess.Popen[Any],
    *,
    timeout: float = 180,
    headers: dict[str, str] | None = None,
    output: Callable[[], str] = lambda: "",
) -> None:
    """Until GET *url* answers 200 (``/readyz``: every view caught up); fails when *proc*
    exits first or time is up, with the end of its *output*."""

    answered: list[bool] = []

    def answered_or_exited() -> bool:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, headers=headers, timeout=5).status_code == 200:
                answered.append(True)
                return True
        return proc.poll() is not None

    try:
        eventually(answered_or_exited, f"{url} answering 200", timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{output()[-3000:]}") from None
    if not answered:
        raise AssertionError(
            f"the server exited with {proc.returncode} before {url} answered:\n{output()[-3000:]}"
        )


def finish(proc: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 60) -> str:
    """Send *sig* to *proc* (when still running), wait for its exit; what it wrote on stderr.
    A process that does not end within *timeout* is killed and the test fails."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        reap(proc)
        raise AssertionError(f"{proc.args!r} did not end within {timeout:g}s of {sig!r}") from None
    return stderr or ""


def reap(proc: subprocess.Popen[str]) -> None:
    """Kill *proc* when it still runs and collect it (for a ``finally:``)."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


class Proc:
    """A `statestore` subprocess whose output goes to a log file that can be searched."""

    def __init__(
        self,
        args: Sequence[str | Path],
        cwd: Path,
        log: Path,
        *,
        exe: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = log
        self._log = log.open("ab")
        self._offset = log.stat().st_size
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            [str(exe or STATESTORE), *map(str, args)],
            cwd=cwd,
            env=env or clean_env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def output(self) -> str:
        """What this process wrote so far."""
        with self.log_path.open("rb") as f:
            f.seek(self._offset)
            return f.read().decode("utf-8", "replace")

    def json_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far, parsed (librdkafka's own ``%`` lines and the
        closing ``error:`` message to the operator are not JSON and are left out)."""
        out: list[dict[str, Any]] = []
        for line in self.output().splitlines():
            if line.strip() and not line.startswith(("%", "error: ")):
                out.append(json.loads(line))
        return out

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_for_line(self, needle: str, timeout: float) -> bool:
        """True once *needle* appears in the output; False when the process ended or time is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.output():
                return True
            if not self.alive():
                return needle in self.output()
            time.sleep(0.02)
        return False

    def kill(self) -> int:
        """SIGKILL and reap; the exit status."""
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGKILL)
        return self.wait(60)

    def terminate(self, timeout: float = 60, sig: int = signal.SIGTERM) -> int:
        """*sig* (SIGTERM), wait, SIGKILL if it does not end; the exit status."""
        if self.alive():
            self.popen.send_signal(sig)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait(30)
        self._log.close()
        return code

    def wait(self, timeout: float) -> int:
        code = self.popen.wait(timeout)
        self._log.close()
        return code

    def rss_bytes(self) -> int | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None


class Server(Proc):
    """`statestore serve` on *config*, on a loopback *port* (given with ``--port``)."""

    def __init__(
        self,
        config: Path,
        port: int,
        cwd: Path,
        log: Path,
        *,
        options: Sequence[str] = (),
        exe: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        args: list[str | Path] = [*options, "-c", config, "serve", "--port", str(port)]
        super().__init__(args, cwd, log, exe=exe, env=env)
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def wait_ready(
        self,
        timeout: float = 180,
        *,
        path: str = "/readyz",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Until *path* answers 200 (``/readyz``: every view caught up; ``/healthz``:
        answering); fails when the process exits first or time is up."""
        wait_for_200(
            f"{self.url}{path}", self.popen, timeout=timeout, headers=headers, output=self.output
        )

    def view_info(self, view: str) -> dict[str, Any]:
        response = self.http.get(f"/views/{view}")
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def wait_caught_up(self, view: str, ends: dict[int, int], timeout: float = 180) -> None:
        """Until the view's positions reach *ends* (partition -> high watermark)."""
        info: dict[str, Any] = {}

        def reached() -> bool:
            nonlocal info
            with contextlib.suppress(httpx.TransportError):
                info = self.view_info(view)
                pos = {p["partition"]: p["position"] for p in info["partitions"]}
                return all(pos.get(p, 0) >= e for p, e in ends.items())
            return False

        try:
            eventually(reached, f"view {view} reaching {ends}", timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen: {info}") from None

    def close(self, sig: int = signal.SIGTERM) -> int:
        """Stop with *sig*; the exit status."""
        self.http.close()
        return self.terminate(sig=sig)

    def stop(self, sig: int = signal.SIGTERM) -> str:
        """Stop with *sig*; what the server wrote."""
        self.close(sig)
        return self.output()


def start_server(
    config: Path,
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    exe: Path | None = None,
    path: str = "/readyz",
    headers: dict[str, str] | None = None,
) -> Server:
    """`statestore serve` on the config's [api] port, its log in *cwd*/serve.log, once *path*
    answers (``/readyz``: every view caught up); stopped again when that never happens."""
    server = Server(config, api_port(config), cwd, cwd / "serve.log", exe=exe, env=env)
    try:
        server.wait_ready(path=path, headers=headers)
    except BaseException:
        server.close()
        raise
    return server
