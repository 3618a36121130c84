"""The HTTP protocol `statestore serve` runs: uvicorn's httptools protocol, with a bound
on each request's head.

uvicorn's httptools protocol reads request heads of any size, for as long as the client
likes. Both are bounded here, before any authentication runs: a request line and headers
larger than ``[api] max_header_kb`` are answered 431 and the connection closed; a head
not complete within ``[api] header_timeout_s`` of its first byte closes the connection
(408). Idle keep-alive connections close after uvicorn's ``timeout_keep_alive``, and
connections and requests beyond ``[api] max_connections`` are answered 503 by uvicorn
(``limit_concurrency``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["BoundedHttpTools", "bounded_http"]

_STATUS = {408: b"408 Request Timeout", 431: b"431 Request Header Fields Too Large"}
_TOO_LARGE = "the request line and headers are too large"


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop reading a head past the limit."""


class BoundedHttpTools(HttpToolsProtocol):
    """HttpToolsProtocol that bounds the size and read time of every request head."""

    max_head_bytes = 64 * 1024
    head_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._parsed = 0
        self._too_large = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head()
        super().connection_lost(exc)

    def _start_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _stop_head(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, status: int, text: str) -> None:
        self._stop_head()
        body = text.encode()
        self.transport.write(
            b"HTTP/1.1 "
            + _STATUS[status]
            + b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: "
            + str(len(body)).encode()
            + b"\r\nconnection: close\r\n\r\n"
            + body
        )
        self.transport.close()

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._refuse(408, "the request head was not sent in time")

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # A head still incomplete: what it has sent so far counts (a chunk that
        # completes the head may carry a body too, so a complete one is measured in
        # on_header instead).
        too_big = self._in_head and self._head_bytes > self.max_head_bytes
        if too_big and not self.transport.is_closing():
            self._refuse(431, _TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._parsed = 0
        if not self._in_head:  # the next request on a kept-alive connection
            self._start_head()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, n: int) -> None:
        self._parsed += n
        if self._parsed > self.max_head_bytes:
            self._too_large = True
            raise _HeadTooLarge  # stops the parser; uvicorn then calls send_400_response

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            self._refuse(431, _TOO_LARGE)
        else:
            super().send_400_response(msg)

    def on_headers_complete(self) -> None:
        self._stop_head()
        super().on_headers_complete()


def bounded_http(max_header_kb: int, header_timeout_s: float) -> type[BoundedHttpTools]:
    """The protocol class for uvicorn's ``http=``, with these bounds."""
    return type(
        "BoundedHttpTools",
        (BoundedHttpTools,),
        {"max_head_bytes": max_header_kb * 1024, "head_timeout_s": header_timeout_s},
    )
