"""Helpers for the S3 tests: the local s3proxy, an admin client, and a fault-injecting proxy.

The server is ``scripts/local-s3`` (``make test`` starts it through ``make services``).
:class:`FaultProxy` sits between a client and it on 127.0.0.1 and, when told, cuts the
body of the next GET after some bytes or answers the next GETs with a 503, so the tests
break real downloads from the real server at the byte they choose.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import boto3
from botocore.config import Config

HOST = "127.0.0.1"
PORT = int(os.environ.get("S3_PORT", "9100"))
ENDPOINT = f"http://{HOST}:{PORT}"
ACCESS_KEY = "statestore"
SECRET_KEY = "statestore-local-secret"
REGION = "us-east-1"

_HEAD_LIMIT = 64 * 1024
_IO_TIMEOUT = 30.0


def admin_client(endpoint: str = ENDPOINT) -> Any:
    """A boto3 client of the local server with its fixed keys, not reading the environment."""
    return boto3.session.Session(
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
    ).client(
        "s3",
        endpoint_url=endpoint,
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=3,
            retries={"mode": "standard", "max_attempts": 2},
        ),
    )


def unique_bucket() -> str:
    return f"ss-test-{uuid.uuid4().hex[:12]}"


def empty_and_delete(client: Any, bucket: str) -> None:
    """Remove every object of *bucket*, then the bucket (gone already: nothing to do)."""
    with contextlib.suppress(client.exceptions.NoSuchBucket):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=obj["Key"])
        client.delete_bucket(Bucket=bucket)


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
    return port


# -- the fault-injecting proxy ------------------------------------------------------------


@dataclass
class Seen:
    """A request the proxy received, and what it did with it."""

    method: str
    path: str
    headers: dict[str, str]
    action: str  # "forwarded", "cut", "failed"


@dataclass
class _Plan:
    cuts: list[tuple[int, bool]] = field(default_factory=list)  # (after body bytes, reset)
    failures: int = 0
    failure_status: int = 503
    # Only GETs whose path contains this are faulted (empty: every GET).
    match: str = ""


class FaultProxy:
    """An HTTP/1.1 proxy on 127.0.0.1 in front of the S3 server, one request per connection.

    Requests are relayed whole (they must carry no body or a Content-Length body; an
    ``Expect: 100-continue`` is answered by the proxy); every response is relayed with
    ``Connection: close``. Faults apply to GETs, in order:
    :meth:`fail_next_gets` answers them without asking the server, :meth:`cut_next_get`
    closes (or resets) the connection after some bytes of a body.
    """

    def __init__(self, upstream: tuple[str, int] = (HOST, PORT)) -> None:
        self.upstream = upstream
        self._lock = threading.Lock()
        self._plan = _Plan()
        self.seen: list[Seen] = []
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}"
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._acceptor.start()

    # -- telling it what to do

    def cut_next_get(
        self, after_bytes: int, *, reset: bool = False, path_contains: str = ""
    ) -> None:
        """The next GET not failed by :meth:`fail_next_gets` loses its connection after
        *after_bytes* bytes of its body (a TCP reset when *reset*, else a close).

        *path_contains* limits every fault to GETs of paths containing it (an object's
        reads, not the listings and manifests read before it)."""
        with self._lock:
            self._plan.cuts.append((after_bytes, reset))
            self._plan.match = path_contains

    def fail_next_gets(self, count: int, status: int = 503, *, path_contains: str = "") -> None:
        """Answer the next *count* GETs with *status* (an S3 ``SlowDown`` error body);
        *path_contains* as for :meth:`cut_next_get`."""
        with self._lock:
            self._plan.failures += count
            self._plan.failure_status = status
            self._plan.match = path_contains

    def gets(self) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.method == "GET"]

    def close(self) -> None:
        self._stopping.set()
        # shutdown() wakes the accept() blocked in the acceptor thread; close() alone does not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._acceptor.join(timeout=_IO_TIMEOUT)
        for t in self._threads:
            t.join(timeout=_IO_TIMEOUT)

    # -- the work

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(_IO_TIMEOUT)
        try:
            head, rest = _read_head(client)
            if head is None:
                return
            method, path, headers = _parse_request(head)
            if headers.get("expect", "").lower() == "100-continue":
                # botocore waits for this before sending a part; upstream gets no Expect
                client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = rest + _read_exact(client, int(headers.get("content-length", "0")) - len(rest))
            action, cut, status = self._decide(method, path)
            with self._lock:
                self.seen.append(Seen(method, path, headers, action))
            if action == "failed":
                _send_error(client, status)
                return
            self._relay(client, head, body, cut)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                client.close()

    def _decide(self, method: str, path: str) -> tuple[str, tuple[int, bool] | None, int]:
        """``(action, cut, status)`` for a request, taking its fault off the plan."""
        with self._lock:
            status = self._plan.failure_status
            if method != "GET" or self._plan.match not in path:
                return "forwarded", None, status
            if self._plan.failures:
                self._plan.failures -= 1
                return "failed", None, status
            if self._plan.cuts:
                return "cut", self._plan.cuts.pop(0), status
            return "forwarded", None, status

    def _relay(
        self, client: socket.socket, head: bytes, body: bytes, cut: tuple[int, bool] | None
    ) -> None:
        method = head.split(b" ", 1)[0]
        with socket.create_connection(self.upstream, timeout=_IO_TIMEOUT) as up:
            up.sendall(_with_connection_close(head) + body)
            response_head, rest = _read_head(up)
            if response_head is None:
                return
            client.sendall(_with_connection_close(response_head))
            status, headers = _parse_response(response_head)
            if method == b"HEAD" or status in (204, 304):
                return
            length = headers.get("content-length")
            budget = None if cut is None else cut[0]
            sent = 0
            chunk = rest
            while True:
                if chunk:
                    if budget is not None and sent + len(chunk) >= budget:
                        client.sendall(chunk[: budget - sent])
                        _abort(client, reset=cut is not None and cut[1])
                        return
                    client.sendall(chunk)
                    sent += len(chunk)
                if length is not None and sent >= int(length):
                    return
                # A chunked body (s3proxy's error answers) ends with an empty chunk.
                if length is None and chunk.endswith(b"0\r\n\r\n"):
                    return
                chunk = up.recv(256 * 1024)
                if not chunk:
                    return


def _read_head(sock: socket.socket) -> tuple[bytes | None, bytes]:
    """``(head up to and with the blank line, bytes read past it)``; None at a clean EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            if data:
                raise OSError("connection closed inside an HTTP head")
            return None, b""
        data += chunk
        if len(data) > _HEAD_LIMIT:
            raise OSError("HTTP head too long")
    end = data.index(b"\r\n\r\n") + 4
    return data[:end], data[end:]


def _read_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(min(n - len(out), 1 << 20))
        if not chunk:
            raise OSError("connection closed inside a request body")
        out += chunk
    return out


def _parse_request(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise OSError("the fault proxy relays no chunked request bodies")
    return method, path, headers


def _parse_response(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers


def _with_connection_close(head: bytes) -> bytes:
    lines = head.decode("latin-1").split("\r\n")[:-2]
    kept = [
        line
        for line in lines
        if not line.lower().startswith(("connection:", "keep-alive:", "expect:"))
    ]
    return ("\r\n".join([*kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1")


def _send_error(client: socket.socket, status: int) -> None:
    body = (
        b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
        b"<Message>Please reduce your request rate.</Message></Error>"
    )
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    client.sendall(head + body)


def _abort(sock: socket.socket, *, reset: bool) -> None:
    if reset:
        # SO_LINGER with a zero timeout: close() sends RST, the reader sees a reset.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
