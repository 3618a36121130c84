"""S3Location against the real local S3 server (s3proxy): objects, listing, errors, resumed reads."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from s3_support import ENDPOINT, FaultProxy, closed_port

from statestore import SnapshotSourceError
from statestore import s3 as s3_module
from statestore.locations import open_location
from statestore.s3 import S3Location

pytestmark = [pytest.mark.integration, pytest.mark.s3]

MB = 1 << 20

Make = Callable[..., S3Location]


def _read_all(reader: io.BufferedIOBase | Any, piece: int = 64 * 1024) -> bytes:
    out = bytearray()
    while chunk := reader.read(piece):
        out += chunk
    return bytes(out)


# -- objects and listing -------------------------------------------------------------------


def test_bytes_round_trip_with_size_listing_and_delete(location: Make, bucket: str) -> None:
    """put_bytes then get_bytes, size and names give the object back; delete removes it."""
    loc = location("snaps")
    loc.put_bytes("a.json", b'{"x": 1}')
    loc.put_bytes("b.tar", b"")
    assert loc.get_bytes("a.json") == b'{"x": 1}'
    assert loc.size("a.json") == 8
    assert loc.size("b.tar") == 0
    assert loc.get_bytes("b.tar") == b""
    assert loc.names() == ["a.json", "b.tar"]
    assert loc.url == f"s3://{bucket}/snaps"
    assert loc.url_of("a.json") == f"s3://{bucket}/snaps/a.json"
    loc.delete("a.json")
    loc.delete("a.json")  # gone already: no error
    assert loc.names() == ["b.tar"]


def test_put_bytes_replaces_an_object(location: Make) -> None:
    """Writing a name again replaces the object as a whole."""
    loc = location()
    loc.put_bytes("m.json", b"first version")
    loc.put_bytes("m.json", b"second")
    assert loc.get_bytes("m.json") == b"second"
    assert loc.names() == ["m.json"]


def test_prefix_slashes_are_normalised(location: Make, bucket: str, s3_admin: Any) -> None:
    """``s3://b/p/`` names the same objects as ``s3://b/p``."""
    location("deep/er/").put_bytes("x.json", b"1")
    assert s3_admin.get_object(Bucket=bucket, Key="deep/er/x.json")["Body"].read() == b"1"
    assert location("deep/er").names() == ["x.json"]


def test_names_lists_only_direct_children_with_valid_names(
    location: Make, bucket: str, s3_admin: Any
) -> None:
    """names() ignores other prefixes, deeper keys and objects whose names statestore never writes."""
    for key in (
        "pre/a.tar",
        "pre/b.json",
        "pre/sub/c.tar",  # below the prefix, not in it
        "pre/.partial",  # not a snapshot object name
        "pre/bad name",
        "prefix2/d.tar",  # another prefix that starts the same
        "e.tar",  # the bucket's top
    ):
        s3_admin.put_object(Bucket=bucket, Key=key, Body=b"x")
    assert location("pre").names() == ["a.tar", "b.json"]
    assert location().names() == ["e.tar"]
    assert location("nothing-here").names() == []


def test_names_follows_pagination(
    location: Make, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing longer than one page is read to its end."""
    monkeypatch.setattr(s3_module, "_LIST_PAGE", 2)
    loc = location("p")
    names = [f"n{i:02d}.json" for i in range(7)]
    for name in names:
        loc.put_bytes(name, b"{}")
    assert loc.names() == names


def test_put_file_uploads_in_parts_and_open_reads_it_back_exactly(
    location: Make, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """A 40 MB file goes up as a multipart upload and open() streams the same bytes back."""
    data = os.urandom(40 * MB)
    src = tmp_path / "archive.bin"
    src.write_bytes(data)
    location("big", endpoint=fault_proxy.url).put_file("s.tar", src)
    requests = [f"{s.method} {s.path}" for s in fault_proxy.seen]
    assert sum("?uploads" in r and r.startswith("POST") for r in requests) == 1, requests
    assert sum("partNumber=" in r and r.startswith("PUT") for r in requests) >= 2, requests
    assert sum("uploadId=" in r and r.startswith("POST") for r in requests) == 1, requests
    loc = location("big")
    assert loc.size("s.tar") == len(data)
    with loc.open("s.tar") as reader:
        first = reader.read(1000)
        buf = bytearray(4096)
        n = reader.readinto(buf)
        rest = _read_all(reader, 3 * MB + 17)
    got = first + bytes(buf[:n]) + rest
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()


def test_bad_names_are_refused_before_any_request(location: Make) -> None:
    """Names with separators or a leading dot raise SnapshotSourceError, whatever the call."""
    loc = location()
    for bad in ("a/b", "../x", ".hidden", ""):
        with pytest.raises(SnapshotSourceError, match="not a snapshot object name"):
            loc.put_bytes(bad, b"x")
        with pytest.raises(SnapshotSourceError, match="not a snapshot object name"):
            loc.open(bad)


def test_open_location_dispatches_s3_urls(s3_env: pytest.MonkeyPatch, bucket: str) -> None:
    """open_location gives an S3Location for s3:// URLs, with the endpoint from the environment."""
    loc = open_location(f"s3://{bucket}/x")
    assert isinstance(loc, S3Location)
    assert loc.endpoint == ENDPOINT
    assert loc.names() == []


# -- errors ---------------------------------------------------------------------------------


def test_missing_bucket_is_named(s3_env: pytest.MonkeyPatch) -> None:
    """Every call on a bucket that does not exist says which bucket is missing."""
    loc = S3Location("s3://ss-test-no-such-bucket/snaps")
    calls: list[Callable[[], object]] = [
        loc.names,
        lambda: loc.size("a.tar"),
        lambda: loc.get_bytes("a.json"),
        lambda: loc.put_bytes("a.json", b"{}"),
    ]
    for call in calls:
        with pytest.raises(
            SnapshotSourceError, match="bucket 'ss-test-no-such-bucket' does not exist"
        ):
            call()


def test_missing_object_is_not_found(location: Make, bucket: str) -> None:
    """size, get_bytes and open of an absent object raise SnapshotSourceError naming its URL."""
    loc = location("p")
    url = f"s3://{bucket}/p/none.tar"
    for call in (
        lambda: loc.size("none.tar"),
        lambda: loc.open("none.tar"),
        lambda: loc.get_bytes("none.tar"),
    ):
        with pytest.raises(SnapshotSourceError) as info:
            call()
        assert url in str(info.value) and "no such object" in str(info.value)


def test_wrong_secret_is_refused_credentials(location: Make, s3_env: pytest.MonkeyPatch) -> None:
    """A wrong secret key is reported as refused credentials, with the variables to check."""
    s3_env.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    loc = location()
    with pytest.raises(SnapshotSourceError, match="refused the credentials") as info:
        loc.names()
    assert "AWS_SECRET_ACCESS_KEY" in str(info.value)
    with pytest.raises(SnapshotSourceError, match="refused the credentials"):
        loc.open("a.json")


def test_no_credentials_says_which_variables(location: Make, s3_env: pytest.MonkeyPatch) -> None:
    """Without any credentials the error names the environment variables to set."""
    s3_env.delenv("AWS_ACCESS_KEY_ID")
    s3_env.delenv("AWS_SECRET_ACCESS_KEY")
    loc = location()
    with pytest.raises(SnapshotSourceError, match="no AWS credentials found") as info:
        loc.names()
    assert "AWS_ACCESS_KEY_ID" in str(info.value)
    assert "AWS_PROFILE" in str(info.value)


def test_unreachable_endpoint_is_named(s3_env: pytest.MonkeyPatch, bucket: str) -> None:
    """With nothing listening at the endpoint, the error names the endpoint and the variables."""
    dead = f"http://127.0.0.1:{closed_port()}"
    s3_env.setenv("AWS_ENDPOINT_URL", dead)
    # the user's own retry setting is honoured (and keeps this test short)
    s3_env.setenv("AWS_MAX_ATTEMPTS", "1")
    loc = S3Location(f"s3://{bucket}/p")
    for call in (loc.names, lambda: loc.open("a.tar")):
        with pytest.raises(SnapshotSourceError) as info:
            call()
        text = str(info.value)
        assert f"the S3 endpoint {dead} cannot be reached" in text
        assert "AWS_ENDPOINT_URL" in text


def test_endpoint_for_s3_wins_over_the_global_one(s3_env: pytest.MonkeyPatch, bucket: str) -> None:
    """AWS_ENDPOINT_URL_S3 is used over AWS_ENDPOINT_URL, as boto3 documents."""
    s3_env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    s3_env.setenv("AWS_ENDPOINT_URL_S3", ENDPOINT)
    loc = S3Location(f"s3://{bucket}")
    assert loc.endpoint == ENDPOINT
    loc.put_bytes("a.json", b"1")
    assert loc.names() == ["a.json"]


# -- resumed reads through the fault proxy -----------------------------------------------


def _object(loc: S3Location, name: str, size: int) -> bytes:
    data = os.urandom(size)
    loc.put_bytes(name, data)
    return data


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
def test_a_body_cut_mid_way_is_resumed_exactly(
    location: Make, fault_proxy: FaultProxy, reset: bool
) -> None:
    """A GET whose connection dies after 3 MB resumes with a Range + If-Match GET; the bytes are exact."""
    data = _object(location("r"), "s.tar", 8 * MB + 123)
    cut_at = 3 * MB + 5
    fault_proxy.cut_next_get(cut_at, reset=reset)
    with location("r", endpoint=fault_proxy.url).open("s.tar") as reader:
        got = _read_all(reader)
    assert got == data
    gets = fault_proxy.gets()
    assert [g.action for g in gets] == ["cut", "forwarded"]
    assert "range" not in gets[0].headers
    resumed_at = int(gets[1].headers["range"].removeprefix("bytes=").rstrip("-"))
    if reset:
        # a reset discards what the reader's socket held unread (all of it, at times): the
        # read resumes at or before the cut
        assert 0 <= resumed_at <= cut_at
    else:
        assert resumed_at == cut_at
    assert gets[1].headers["if-match"].strip('"')


def test_several_cuts_and_503s_within_the_budget_are_got_past(
    location: Make, fault_proxy: FaultProxy
) -> None:
    """Two cuts, the second resume answered 503 twice: the read still ends with the exact bytes."""
    data = _object(location(), "s.tar", 8 * MB)
    fault_proxy.cut_next_get(1 * MB)
    fault_proxy.cut_next_get(4 * MB)  # of the resumed body: at byte 5 MB, past what read() takes
    with location(endpoint=fault_proxy.url).open("s.tar") as reader:
        head = reader.read(2 * MB)  # past the first cut: one resume done
        fault_proxy.fail_next_gets(2)
        rest = _read_all(reader)
    assert head + rest == data
    actions = [g.action for g in fault_proxy.gets()]
    assert actions == ["cut", "cut", "failed", "failed", "forwarded"]


def test_503s_at_the_start_within_the_budget_are_retried(
    location: Make, fault_proxy: FaultProxy
) -> None:
    """A first GET answered 503 is issued again; the object is read whole."""
    data = _object(location(), "m.json", 1000)
    fault_proxy.fail_next_gets(2)
    assert location(endpoint=fault_proxy.url).get_bytes("m.json") == data
    assert [g.action for g in fault_proxy.gets()] == ["failed", "failed", "forwarded"]


def test_503s_beyond_the_budget_fail_with_the_url_offset_and_error(
    location: Make, fault_proxy: FaultProxy, bucket: str
) -> None:
    """After a cut, resumes answered 503 every time give up after the budget with a clear error."""
    _object(location(), "s.tar", 4 * MB)
    fault_proxy.cut_next_get(MB)
    reader = location(endpoint=fault_proxy.url, read_attempts=3).open("s.tar")
    fault_proxy.fail_next_gets(1000)
    with pytest.raises(SnapshotSourceError) as info, reader:
        _read_all(reader)
    text = str(info.value)
    assert f"s3://{bucket}/s.tar" in text
    assert f"at byte {MB} of {4 * MB}" in text
    assert "after 3 attempts" in text and "503 SlowDown" in text
    # the read the cut broke is the first attempt, two resumes the others
    assert [g.action for g in fault_proxy.gets()] == ["cut", "failed", "failed"]


def test_an_object_replaced_before_the_resume_is_an_error_not_a_stitch(
    location: Make, fault_proxy: FaultProxy
) -> None:
    """If the object changes between the first GET and the resume, If-Match fails the read."""
    direct = location()
    _object(direct, "s.tar", 4 * MB)
    fault_proxy.cut_next_get(MB)
    reader = location(endpoint=fault_proxy.url).open("s.tar")  # first GET answered
    direct.put_bytes("s.tar", os.urandom(4 * MB))  # same size, other bytes
    with pytest.raises(SnapshotSourceError, match="changed while it was being read"), reader:
        _read_all(reader)
    gets = fault_proxy.gets()
    assert [g.action for g in gets] == ["cut", "forwarded"]
    assert gets[1].headers["range"] == f"bytes={MB}-"
