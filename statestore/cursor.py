"""Opaque paging cursors: the last key of a page, signed so tampering is detected."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from .errors import CursorError

__all__ = ["CursorSigner"]

_MAC_BYTES = 12


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorSigner:
    """Makes and checks cursors with a per-store secret.

    A cursor names the last key returned and the scope it was issued for (view,
    and index/value for index pages); a page resumes strictly after that key,
    so a write elsewhere in the key space never makes a scan skip or repeat an
    entity.
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, scope: str, key: bytes) -> bytes:
        msg = scope.encode("utf-8") + b"\x00" + key
        return hmac.new(self._secret, msg, hashlib.sha256).digest()[:_MAC_BYTES]

    def make(self, scope: str, key: bytes) -> str:
        return _b64(key) + "." + _b64(self._mac(scope, key))

    def open(self, scope: str, cursor: str) -> bytes:
        body, sep, mac = cursor.partition(".")
        if not sep or not mac:
            raise CursorError(
                "malformed cursor: pass back the `next` value of a previous page unchanged"
            )
        try:
            key, given = _unb64(body), _unb64(mac)
        except (binascii.Error, ValueError):
            raise CursorError(
                "malformed cursor: pass back the `next` value of a previous page unchanged"
            ) from None
        if not hmac.compare_digest(given, self._mac(scope, key)):
            raise CursorError("invalid cursor: it was altered or belongs to another view or query")
        return key
