"""The store only ever writes into, moves or removes directories it made itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import deliveries

from statestore import StateStore, load_config
from statestore.storage import MARKER
from tests.support.config import write_config
from tests.support.kafka import Topics
from tests.support.processes import run

pytestmark = pytest.mark.integration


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_a_damaged_looking_directory_it_did_not_make_is_left_alone(
    topics: Topics, tmp_path: Path
) -> None:
    """A store path holding a junk CURRENT file, with an unrelated `<path>.damaged-notes`
    directory beside it: bootstrap refuses with a clear message (on_corruption = "rebuild"
    is the default), and neither directory is moved, removed or written into."""
    topic = topics.create(1, deliveries(3, partitions=1))
    config = write_config(tmp_path, [{"name": "v", "topic": topic}])
    victim = tmp_path / "store"
    victim.mkdir()
    (victim / "CURRENT").write_text("not a manifest name\n")
    notes = tmp_path / "store.damaged-notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me\n")
    before = (_tree(victim), _tree(notes))

    result = run(["-c", config, "bootstrap"], tmp_path)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"has no {MARKER} file" in result.stderr
    assert "leaves it alone" in result.stderr
    assert (_tree(victim), _tree(notes)) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("store")) == [
        "store",
        "store.damaged-notes",
    ]


def test_a_non_empty_directory_that_is_not_a_store_is_refused(
    topics: Topics, tmp_path: Path
) -> None:
    """A store path that is a directory of someone's files is refused before anything is
    written into it."""
    topic = topics.create(1, deliveries(3, partitions=1))
    config = write_config(tmp_path, [{"name": "v", "topic": topic}])
    own = tmp_path / "store"
    own.mkdir()
    (own / "report.csv").write_text("a,b\n1,2\n")
    before = _tree(own)

    result = run(["-c", config, "bootstrap"], tmp_path)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "is not empty and is not a statestore store" in result.stderr
    assert _tree(own) == before


def test_a_store_of_an_earlier_version_is_kept_and_marked(topics: Topics, tmp_path: Path) -> None:
    """A store made before the marker existed opens as before, keeps its data, and is marked."""
    topic = topics.create(1, deliveries(5, partitions=1))
    config = write_config(tmp_path, [{"name": "v", "topic": topic}])
    assert run(["-c", config, "bootstrap"], tmp_path).returncode == 0
    store = tmp_path / "store"
    (store / MARKER).unlink()

    with StateStore(load_config(config)) as opened:
        assert opened.view("v").status().keys == 5
    assert (store / MARKER).is_file()


def test_only_its_own_damaged_copies_are_replaced(topics: Topics, tmp_path: Path) -> None:
    """A damaged store is moved aside; of the `.damaged-*` directories beside it, only an
    earlier copy it set aside itself (marked) is removed."""
    topic = topics.create(1, deliveries(5, partitions=1))
    config = write_config(tmp_path, [{"name": "v", "topic": topic}])
    assert run(["-c", config, "bootstrap"], tmp_path).returncode == 0
    store = tmp_path / "store"
    old_copy = tmp_path / "store.damaged-20000101T000000"
    old_copy.mkdir()
    (old_copy / MARKER).write_text("set aside earlier\n")
    foreign = tmp_path / "store.damaged-by-hand"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    (store / "CURRENT").write_text("garbage\n")

    result = run(["-c", config, "bootstrap"], tmp_path)

    assert result.returncode == 0, result.stderr
    assert "store.damaged path=" in result.stderr
    assert not old_copy.exists()
    assert (foreign / "notes.txt").read_text() == "mine\n"
    copies = [p for p in tmp_path.glob("store.damaged-*") if p != foreign]
    assert len(copies) == 1 and (copies[0] / MARKER).is_file()
    assert (store / MARKER).is_file()
