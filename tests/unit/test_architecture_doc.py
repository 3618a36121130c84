"""docs/architecture.md's table of who owns what names every module there is, and no other."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
NAME = re.compile(r"`([A-Za-z_][A-Za-z0-9_.]*)`")


def _table() -> dict[str, list[str]]:
    """Each row of the ownership table: its module cell -> the names in its owns cell."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Who owns what", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[1] in ("module", "---"):
            continue
        rows[cells[1]] = NAME.findall(cells[2])
    return rows


def _modules(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "__main__")}


def test_every_library_module_is_named_once() -> None:
    named: list[str] = []
    for cell in _table():
        if not cell.startswith("`statestore."):
            named += NAME.findall(cell)
    assert sorted(named) == sorted(set(named)), "a module is named twice"
    assert set(named) == _modules(ROOT / "statestore")


def test_every_front_end_module_is_named() -> None:
    table = _table()
    assert set(table["`statestore.api`"]) == _modules(ROOT / "api")
    assert set(table["`statestore.cli`"]) == _modules(ROOT / "statestore" / "cli")


def test_the_picture_is_kept_as_text() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert text.count("```mermaid") == 1
    assert "flowchart" in text.split("```mermaid", 1)[1].split("```", 1)[0]
