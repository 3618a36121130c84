"""The REST app is imported only as ``statestore.api``.

The repository keeps its source in ``api/`` (linked as ``statestore/api``); the wheel
installs it only under ``statestore``. An ``import api`` anywhere would work from a
checkout (the repository root is on ``sys.path``) and fail when installed -- and would
load a second copy of every app module beside ``statestore.api``'s.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_no_module_imports_the_top_level_api_package() -> None:
    offenders: list[str] = []
    for top in ("statestore", "tests", "bench", "scripts"):
        for path in sorted((REPO / top).rglob("*.py")):
            if "api" in path.relative_to(REPO).parts[:2] and top == "statestore":
                continue  # statestore/api is the app itself (relative imports)
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                offenders += [
                    f"{path.relative_to(REPO)}:{node.lineno}: {name}"
                    for name in names
                    if name == "api" or name.startswith("api.")
                ]
    assert offenders == []


def test_statestore_api_is_the_repository_api_folder() -> None:
    link = REPO / "statestore" / "api"
    assert link.is_symlink() and link.resolve() == (REPO / "api").resolve()
