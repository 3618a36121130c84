"""Snapshot locations: DirectoryLocation round trips and atomic writes, names, open_location."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from statestore import SnapshotSourceError
from statestore.locations import DirectoryLocation, check_name, open_location


def test_bytes_and_files_round_trip(tmp_path: Path) -> None:
    """put_bytes / put_file store objects that get_bytes, open, size and names give back."""
    loc = DirectoryLocation(tmp_path / "snaps")
    assert loc.names() == []  # not created until the first write
    loc.put_bytes("m.json", b'{"a": 1}')
    src = tmp_path / "elsewhere.bin"
    data = os.urandom(3 << 20)
    src.write_bytes(data)
    loc.put_file("s.tar", src)
    assert src.exists()  # copied from another directory, not moved
    assert loc.names() == ["m.json", "s.tar"]
    assert loc.get_bytes("m.json") == b'{"a": 1}'
    assert loc.size("s.tar") == len(data)
    with loc.open("s.tar") as reader:
        assert reader.read() == data
    assert loc.url_of("s.tar") == str(tmp_path / "snaps" / "s.tar")
    loc.delete("m.json")
    loc.delete("m.json")  # gone already: no error
    assert loc.names() == ["s.tar"]


def test_put_file_from_inside_the_directory_renames_it(tmp_path: Path) -> None:
    """A file the caller wrote in the location's own directory is renamed into place."""
    loc = DirectoryLocation(tmp_path)
    staged = tmp_path / ".s.tar.tmp"
    staged.write_bytes(b"archive")
    loc.put_file("s.tar", staged)
    assert not staged.exists()
    assert loc.get_bytes("s.tar") == b"archive"


def test_a_failed_write_leaves_no_object_and_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the final rename fails, the name stays absent and the temporary file is removed."""
    loc = DirectoryLocation(tmp_path)
    loc.put_bytes("keep.json", b"old")

    def refuse(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(SnapshotSourceError, match="cannot write new.json") as info:
        loc.put_bytes("new.json", b"x" * 1000)
    assert str(tmp_path) in str(info.value)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["keep.json"]
    assert loc.names() == ["keep.json"]


def test_an_unreadable_source_file_is_a_snapshot_source_error(tmp_path: Path) -> None:
    """put_file of a file that cannot be read raises SnapshotSourceError and writes nothing."""
    loc = DirectoryLocation(tmp_path / "snaps")
    with pytest.raises(SnapshotSourceError):
        loc.put_file("s.tar", tmp_path / "missing.bin")
    assert loc.names() == []
    assert not any(p.name.startswith(".") for p in (tmp_path / "snaps").iterdir())


def test_names_ignore_partial_files_directories_and_other_names(tmp_path: Path) -> None:
    """A writer's temporary file, a sub-directory and odd names are not objects."""
    loc = DirectoryLocation(tmp_path)
    loc.put_bytes("a.tar", b"1")
    (tmp_path / ".b.tar.partial-1234").write_bytes(b"half")  # a crashed writer's leftover
    (tmp_path / "sub").mkdir()
    (tmp_path / "with space").write_bytes(b"")
    assert loc.names() == ["a.tar"]


@pytest.mark.parametrize("bad", ["", ".hidden", "a/b", "../up", "a\\b", "x" * 202, "é.tar"])
def test_bad_names_are_refused(tmp_path: Path, bad: str) -> None:
    """Names with separators, a leading dot, other characters or too long raise SnapshotSourceError."""
    loc = DirectoryLocation(tmp_path)
    with pytest.raises(SnapshotSourceError, match="not a snapshot object name"):
        check_name(bad)
    with pytest.raises(SnapshotSourceError):
        loc.put_bytes(bad, b"x")
    with pytest.raises(SnapshotSourceError):
        loc.get_bytes(bad)
    assert list(tmp_path.iterdir()) == []


def test_missing_objects_are_snapshot_source_errors(tmp_path: Path) -> None:
    """Reading, sizing or opening an absent object names the directory."""
    loc = DirectoryLocation(tmp_path)
    for call in (
        lambda: loc.get_bytes("a.tar"),
        lambda: loc.size("a.tar"),
        lambda: loc.open("a.tar"),
    ):
        with pytest.raises(SnapshotSourceError, match=re.escape(str(tmp_path))):
            call()


def test_open_location_dispatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path gives a DirectoryLocation, an s3:// URL an S3Location (made without any request)."""
    from statestore.s3 import S3Location

    loc = open_location(tmp_path / "d")
    assert isinstance(loc, DirectoryLocation) and loc.path == tmp_path / "d"
    assert isinstance(open_location(str(tmp_path)), DirectoryLocation)
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no lookup off 127.0.0.1
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    s3 = open_location("s3://bucket/some/prefix/")
    assert isinstance(s3, S3Location)
    assert (s3.bucket, s3.prefix, s3.url) == ("bucket", "some/prefix", "s3://bucket/some/prefix")
    assert s3.url_of("x.tar") == "s3://bucket/some/prefix/x.tar"
    top = open_location("s3://bucket")
    assert isinstance(top, S3Location) and top.url_of("x.tar") == "s3://bucket/x.tar"


@pytest.mark.parametrize("url", ["gs://bucket/x", "https://example.com/snaps", "file:///tmp/x"])
def test_unknown_schemes_are_refused(url: str) -> None:
    """URLs of other schemes raise SnapshotSourceError saying what is accepted."""
    with pytest.raises(SnapshotSourceError, match="s3://bucket/prefix"):
        open_location(url)


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "s3://bucket/a//b", "s3://buck et/x"])
def test_malformed_s3_urls_are_refused(url: str) -> None:
    """An s3:// URL without a bucket, or with an empty path segment, raises SnapshotSourceError."""
    with pytest.raises(SnapshotSourceError, match="s3://bucket/prefix"):
        open_location(url)
