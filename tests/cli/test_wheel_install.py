"""The package as a user installs it: a wheel built by `python -m build`, in a fresh venv.

The wheel is built from the sdist (what `python -m build` does when asked for both), so
the sdist is proved complete too. In a new virtual environment outside the repository:
`statestore --help` runs, the README's "Use it as a library" example bootstraps a view
from the local broker and prints an entity, the REST app serves it, and nothing is
installed under the top-level name ``api`` (a service embedding statestore may have its
own ``api`` package).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tarfile
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.config import write_config
from tests.support.kafka import Topics
from tests.support.processes import REPO, clean_env, run, start_server

README = REPO / "README.md"


@dataclass(frozen=True)
class Installed:
    wheel: Path
    sdist: Path
    python: Path
    statestore: Path


def _sh(args: list[str | Path], cwd: Path, timeout: float) -> str:
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=clean_env(),
    )
    assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """`python -m build` (sdist, then the wheel from it) and the wheel in a fresh venv."""
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    _sh([sys.executable, "-m", "build", "--outdir", dist, REPO], root, timeout=600)
    wheels = list(dist.glob("statestore-*.whl"))
    sdists = list(dist.glob("statestore-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    _sh([python, "-m", "pip", "install", "--quiet", wheels[0]], root, timeout=900)
    return Installed(wheels[0], sdists[0], python, env_dir / "bin" / "statestore")


def test_wheel_holds_the_app_under_statestore_and_no_top_level_api(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"statestore", f"{installed.wheel.name.split('-py3')[0]}.dist-info"}
    for module in ("app.py", "routes.py", "fastpath.py", "__init__.py"):
        assert f"statestore/api/{module}" in names
    assert "statestore/py.typed" in names
    for asset in ("index.html", "console.js", "console.css", "icon.svg"):
        assert f"statestore/api/console/{asset}" in names  # the operator console's files
    # the sdist carries the app's source (the wheel was built from it)
    with tarfile.open(installed.sdist) as sdist:
        members = sdist.getnames()
    assert any(m.endswith("/api/app.py") for m in members), members


def test_console_script_runs(installed: Installed, tmp_path: Path) -> None:
    result = run(["--help"], tmp_path, exe=installed.statestore)
    assert result.returncode == 0, result.stderr
    for command in ("serve", "bootstrap", "status", "snapshot"):
        assert command in result.stdout


def test_top_level_api_is_not_claimed(installed: Installed, tmp_path: Path) -> None:
    """Run outside the repository: only the installed package can answer."""
    probe = (
        "import importlib.util, statestore, statestore.api\n"
        "print(importlib.util.find_spec('api') is None)\n"
        "print(statestore.api.create_app.__module__)\n"
        "print(statestore.__file__)\n"
    )
    out = _sh([installed.python, "-c", probe], tmp_path, timeout=60).split("\n")
    assert out[0] == "True"
    assert out[1] == "statestore.api.app"
    assert out[2].startswith(str(installed.python.parent.parent))


def readme_library_example() -> str:
    """The first Python block under README's "Use it as a library"."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Use it as a library\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's 'Use it as a library' has no python block"
    return match.group(1)


def test_readme_example_and_rest_from_the_wheel(
    installed: Installed, topics: Topics, tmp_path: Path
) -> None:
    records = [
        (0, "d-0001", {"status": "created", "n": 1}),
        (1, "d-0002", {"status": "created", "n": 2}),
        (0, "d-0001", {"status": "delivered", "n": 3}),
        (2, "d-0003", {"status": "created", "n": 4}),
        (2, "d-0003", None),
    ]
    topic = topics.create(3, records)
    config = write_config(tmp_path, [{"name": "deliveries", "topic": topic}])
    example = readme_library_example()
    assert len(example.strip().splitlines()) <= 12, "the README example should stay short"
    (tmp_path / "example.py").write_text(example, encoding="utf-8")

    printed = _sh([installed.python, "example.py"], tmp_path, timeout=120)
    assert json.loads(printed.strip().splitlines()[-1]) == {"status": "delivered", "n": 3}

    server = start_server(config, tmp_path, exe=installed.statestore)
    try:
        got = httpx.get(f"{server.url}/views/deliveries/entities/d-0001", timeout=10)
        assert got.status_code == 200, got.text
        assert got.json()["value"] == {"status": "delivered", "n": 3}
        assert httpx.get(f"{server.url}/views/deliveries/entities/d-0003").status_code == 404
    finally:
        output = server.stop()
    # uvicorn ends a graceful SIGTERM shutdown by re-raising the signal
    assert server.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
