"""How deeply a JSON document may nest, checked over the raw bytes before anything decodes it.

msgspec (like every recursive JSON decoder) recurses once per level of `[` / `{`, so a body
of a few thousand `[` ends in a `RecursionError` inside the decoder, typed or not (unknown
fields are skipped recursively too). Every decode of untrusted JSON (API bodies, intake
uploads, ERP JSON Lines rows, webhooks) runs `check_depth` first, which refuses such input
with `NestingTooDeep` (400 `nesting-too-deep`) instead.

The scan is linear and runs at C speed (bytes methods, no Python loop per byte):

1. fast path: a document with at most `limit` openers cannot nest deeper than `limit`;
2. drop escaped backslashes, then escaped quotes, so every remaining `"` delimits a string
   (backslash runs pair from the left, exactly as JSON reads them);
3. keep the text outside strings (every other piece between quotes), and of that only the
   brackets; the depth is the highest running count of openers minus closers.

Input that is not JSON at all may be misjudged, but only up to the point where the decoder
itself would stop at the first invalid character, so what the decoder would recurse into
is always measured.
"""

from __future__ import annotations

import itertools

from availability.domain.errors import InvalidEvent

#: default nesting limit (Settings.max_json_depth); no documented body nests beyond ~6
MAX_DEPTH = 64

_BRACKETS = b"[]{}"
_NOT_MARKS = bytes(b for b in range(256) if b not in _BRACKETS + b'"')
_STEP = [0] * 256
_STEP[ord("[")] = _STEP[ord("{")] = 1
_STEP[ord("]")] = _STEP[ord("}")] = -1


class NestingTooDeep(InvalidEvent):
    """JSON nested deeper than the limit: refused before decoding (a decoder would recurse
    once per level and fail). An `InvalidEvent`, so a row of an upload dead-letters with it."""

    status = 400
    slug = "nesting-too-deep"


def json_depth(data: bytes | bytearray | str) -> int:
    """The deepest nesting of arrays and objects outside strings (0 for a scalar)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Only quotes and brackets matter from here on (and far fewer bytes to split).
    marks = raw.translate(None, _NOT_MARKS)
    if b'"' in marks:
        # Two adjacent quotes are an empty string or the end of one and the start of the
        # next: dropping them changes which brackets are inside strings not at all.
        marks = b"".join(marks.replace(b'""', b"").split(b'"')[::2])
    if not marks:
        return 0
    return max(0, max(itertools.accumulate(map(_STEP.__getitem__, marks))))


def check_depth(data: bytes | bytearray | str, limit: int = MAX_DEPTH, *, what: str = "JSON") -> None:
    """Raise `NestingTooDeep` when `data` nests deeper than `limit` levels."""
    if isinstance(data, str):
        openers = data.count("[") + data.count("{")
    else:
        openers = data.count(b"[") + data.count(b"{")
    if openers <= limit:
        return
    depth = json_depth(data)
    if depth > limit:
        raise NestingTooDeep(
            f"{what} nests {depth} levels deep; at most {limit} are accepted", max_depth=limit, depth=depth
        )
