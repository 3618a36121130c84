"""REST load with wrk (a separate process): GET by key and POST lookup of 100 keys.

Keys are drawn at random (in the wrk Lua script) among the keys that hold an
entity. Results: requests/s and latency percentiles as wrk reports them
(``--latency``), and the count of non-2xx answers (which must be 0).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from .common import PYTHON, ROOT, STATESTORE, VIEW, log, stop
from .topics import TOMBSTONE_EVERY

_GET_LUA = """
math.randomseed(%(seed)d)
local n = %(keys)d
request = function()
  local i = math.random(0, n - 1)
  if i %% %(every)d == 0 then i = (i + 1) %% n end
  return wrk.format("GET", string.format("/views/%(view)s/entities/key-%%08d", i))
end
"""

_LOOKUP_LUA = """
math.randomseed(%(seed)d)
local n = %(keys)d
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local parts = {}
  for j = 1, 100 do
    local i = math.random(0, n - 1)
    if i %% %(every)d == 0 then i = (i + 1) %% n end
    parts[j] = string.format('"key-%%08d"', i)
  end
  return wrk.format(nil, "/views/%(view)s/lookup", nil, '{"keys": [' .. table.concat(parts, ",") .. ']}')
end
"""


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


class Server:
    """The REST server under load, in the background until stopped.

    *fast*: the product, ``statestore serve --workers N`` (httptools + uvloop, as it runs
    when they are installed; N = 1: the ingesting process serves, N > 1: N serving
    processes over secondary copies of the store). Otherwise ``python -m bench.serve``:
    the product's app on h11 + asyncio in one process, for comparison. Both log warnings
    only (no access line per request).
    """

    def __init__(self, config: Path, port: int, workers: int = 1, fast: bool = True) -> None:
        if not fast and workers != 1:
            raise ValueError("the h11 + asyncio comparison runs in one process")
        self.port = port
        self.workers = workers
        if fast:
            args = [STATESTORE, "--log-level", "warning", "-c", str(config), "serve"]
            args += ["--port", str(port), "--workers", str(workers)]
        else:
            args = [PYTHON, "-m", "bench.serve", str(config), "--port", str(port)]
            args += ["--http", "h11", "--loop", "asyncio"]
        self.proc = subprocess.Popen(
            args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120.0) -> None:
        """Until every serving process has answered /readyz 200 (each names itself)."""
        deadline = time.monotonic() + timeout
        ready: set[str] = set()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bench server exited: {self.proc.stderr.read()[-3000:]}")  # type: ignore[union-attr]
            try:
                # A new connection each time: the kernel hands it to any serving process.
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/readyz", timeout=2
                ) as resp:
                    if resp.status == 200:
                        ready.add(resp.headers.get("X-Statestore-Worker", "0"))
                        if len(ready) >= self.workers and self.proc.poll() is None:
                            return
                        continue
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("bench server did not become ready")

    def stop(self) -> None:
        stop(self.proc)


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def parse_wrk(out: str) -> dict[str, Any]:
    res: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["req_per_s"] = round(float(m.group(1))) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+\w+)", out)
    res["requests"] = int(m.group(1)) if m else None
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+\w+)", out, re.M)
        res[f"p{pct}_ms"] = round(_ms(m.group(1)), 3) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", out)
    res["socket_errors"] = m.group(1).strip() if m else None
    return res


def wrk(
    port: int, script: Path, connections: int, seconds: float, threads: int = 1
) -> dict[str, Any]:
    """Run wrk against 127.0.0.1:*port* with *script*; parsed results."""
    args = [
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
    ]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=seconds + 60)
    res = parse_wrk(out.stdout)
    res["clients"] = connections
    res["seconds"] = seconds
    if res["req_per_s"] is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out.stdout}\n{out.stderr}")
    return res


def scripts(workdir: Path, keys: int) -> dict[str, Path]:
    params = {"keys": keys, "every": TOMBSTONE_EVERY, "view": VIEW, "seed": 7}
    get = workdir / "get.lua"
    get.write_text(_GET_LUA % params)
    lookup = workdir / "lookup.lua"
    lookup.write_text(_LOOKUP_LUA % params)
    return {"get": get, "lookup": lookup}


def check(port: int, keys: int) -> None:
    """One GET must answer 200 with the entity (a wrong URL would be all 404s)."""
    url = f"http://127.0.0.1:{port}/views/{VIEW}/entities/key-{1:08d}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.loads(resp.read())
    if body.get("key") != "key-00000001":
        raise RuntimeError(f"unexpected answer from {url}: {body}")
    log(f"REST check ok on port {port} ({keys:,} keys)")
