"""Framings: how a key or value names its writer schema, and Apicurio's native API.

The bytes in front of a body mean what the view's ``framing`` / ``id_kind`` say,
never what the id looks like (:class:`Framing`); ``Schemas.resolve()`` reads
them. Apicurio's Kafka serdes write, besides the Confluent format:

* ``apicurio_8byte``: magic byte 0 + 8-byte big-endian id (``Legacy8ByteIdHandler``,
  and 2.x's default id handler);
* ``apicurio_headers``: the id in an ``apicurio.value.contentId`` or
  ``apicurio.value.globalId`` header (``apicurio.key.*`` for keys), 8-byte
  big-endian, and a bare body. avro.header_hook folds it in front of the body as
  ``APICURIO_MARK`` + a kind byte + the 8-byte id, so stored values carry their
  framing and decode the same way on read. An ``apicurio.value.encoding = JSON``
  header (the serde's ``apicurio.registry.avro.encoding = JSON``: the body is Avro's
  JSON encoding) sets ``JSON_BIT`` in the kind byte; binary bodies' folds are
  unchanged;
* ``auto``: any of these per record. Headers name their kind; a magic-byte id
  is of the configured ``id_kind``; four zero bytes after magic byte 0 mean an
  8-byte id (no registry hands out id 0; Apicurio's own fallback reads the same).

A global id (one per artifact version) names its schema only in Apicurio's
native API: :func:`content_id_of_global` asks it for the content id, which the
ccompat API serves like any schema id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from .errors import RegistryUnavailableError

__all__ = [
    "APICURIO_FRAME",
    "APICURIO_MARK",
    "BAD_HEADER",
    "CONFLUENT",
    "GUID_FRAME",
    "ID_FRAME",
    "JSON_BIT",
    "LONG_FRAME",
    "NO_ID_HEADER",
    "Framing",
    "content_id_of_global",
    "frame_length",
    "framing_of",
    "json_encoded",
]

ID_FRAME = 5  # magic byte 0 + 4-byte schema id
GUID_FRAME = 17  # magic byte 1 + 16-byte GUID
LONG_FRAME = 9  # magic byte 0 + 8-byte id (Apicurio's Legacy8ByteIdHandler, 2.x's default)
# Put in front of a body whose schema-id header is malformed (see avro.header_hook).
BAD_HEADER = b"\xfe"
# An Apicurio id header folded in front of a bare body: the mark, a kind byte
# (b"c" content id, b"g" global id; upper case: the header was not 8 bytes, whose length
# follows instead), the 8-byte id. Only read where the view's framing takes Apicurio headers.
APICURIO_MARK = 0xFD
APICURIO_FRAME = 10
# Set in the kind byte of an 8-byte id (b"c" | JSON_BIT, b"g" | JSON_BIT): the body is
# Avro's JSON encoding, not the binary one.
JSON_BIT = 0x80
# The kind byte of another folded outcome: no id header.
NO_ID_HEADER = b"n"


_FIXED_FRAME = {
    "confluent": ID_FRAME,
    "apicurio_8byte": LONG_FRAME,
    "apicurio_headers": APICURIO_FRAME,
    "auto": 0,
}


@dataclass(frozen=True, slots=True)
class Framing:
    """How one side (key or value) of a view names its writer schema (see the module doc)."""

    kind: Literal["confluent", "auto", "apicurio_headers", "apicurio_8byte"] = "confluent"
    ids: Literal["content", "global"] = "content"

    @property
    def fixed(self) -> int:
        """The id frame's length when every record has the same one (0: told per record;
        GUID frames, 17 bytes, aside)."""
        return _FIXED_FRAME[self.kind]

    def describe(self, what: str) -> str:
        """The framing as an error message names it."""
        if self.kind == "apicurio_headers":
            return f"apicurio.{what}.contentId/globalId headers with a bare body"
        if self.kind == "apicurio_8byte":
            return f"magic byte 0 + 8-byte {self.ids} id"
        return f"magic byte 0 + 4-byte {self.ids} id or magic byte 1 + 16-byte GUID"


CONFLUENT = Framing()


def framing_of(
    kind: Literal["confluent", "auto", "apicurio_headers", "apicurio_8byte"] = "confluent",
    ids: Literal["content", "global"] = "content",
) -> Framing:
    """The framing of a view's setting; the default one is ``CONFLUENT`` itself (the
    fast paths test for it by identity)."""
    return CONFLUENT if (kind, ids) == ("confluent", "content") else Framing(kind, ids)


def frame_length(raw: bytes, framing: Framing) -> int:
    """The length of the id frame in front of *raw*'s body under *framing* (under
    ``auto``, a GUID frame's: 17)."""
    n = framing.fixed
    if n:
        return n
    first = raw[:1]
    if first == b"\x00":
        return LONG_FRAME if raw[1:5] == b"\x00\x00\x00\x00" else ID_FRAME
    if first == b"\x01":
        return GUID_FRAME
    return APICURIO_FRAME


def json_encoded(raw: bytes) -> bool:
    """Whether *raw*, read under a framing that takes Apicurio headers, is a folded
    header frame in front of an Avro JSON-encoded body."""
    return len(raw) > 1 and raw[0] == APICURIO_MARK and raw[1] & JSON_BIT != 0


def content_id_of_global(base: str, global_id: int, conf: dict[str, Any], what: str) -> int | None:
    """The content id of *global_id* from Apicurio's native API at *base* (``.../v3`` or
    ``.../v2``); None when the registry does not know it. RegistryUnavailableError when
    it cannot answer, or *base* is no such API (404: the search itself is missing)."""
    if re.search(r"/v2/?$", base):
        found = _get(f"{base}/search/artifacts", {"globalId": global_id}, conf, what)
        for artifact in found.get("artifacts") or ():
            group = artifact.get("groupId") or "default"
            versions = _get(
                f"{base}/groups/{group}/artifacts/{artifact['id']}/versions",
                {"limit": 10000},
                conf,
                what,
            )
            for v in versions.get("versions") or ():
                if v.get("globalId") == global_id and isinstance(v.get("contentId"), int):
                    return int(v["contentId"])
        return None
    found = _get(f"{base}/search/versions", {"globalId": global_id}, conf, what)
    matches = found.get("versions") or []
    content_id = matches[0].get("contentId") if matches else None
    return content_id if isinstance(content_id, int) else None


def _get(url: str, params: dict[str, Any], conf: dict[str, Any], what: str) -> dict[str, Any]:
    import httpx

    auth = conf.get("basic.auth.user.info")
    try:
        response = httpx.get(
            url,
            params=params,
            timeout=float(conf.get("timeout", 10.0)),
            auth=tuple(auth.split(":", 1)) if auth else None,
        )
    except httpx.HTTPError as exc:
        raise RegistryUnavailableError(
            f"schema registry at {url} is unreachable while resolving {what}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if response.status_code == 404:
        # The search answers 200 with no match for an unknown id: 404 is a missing API.
        raise RegistryUnavailableError(
            f"{url} answered 404 while resolving {what}: not Apicurio's native API "
            "(a Confluent registry has no global ids); check [schema_registry] apicurio_url"
        )
    if response.status_code != 200:
        raise RegistryUnavailableError(
            f"schema registry at {url} answered HTTP {response.status_code} for {what}: "
            f"{response.text[:200]}"
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise RegistryUnavailableError(f"{url} answered {what} with something not JSON")
    return body
