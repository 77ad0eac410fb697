"""The API's JSON parser: DRF's, with a size limit and a nesting limit.

**Size.** DRF reads the request stream itself, so Django's DATA_UPLOAD_MAX_MEMORY_SIZE (which bounds
`request.body` and forms) does not bound what the API reads. No body of this API is more than a few
kilobytes, so at most `API_MAX_BODY_BYTES` (2 MiB by default) are read: a longer body is refused with
a 413 `payload_too_large` in the error envelope, before it is decoded or scanned, and memory and time
per request stay bounded whatever the client sends.

**Depth.** Python's `json` recurses once per level: a body of ~1,000 nested arrays raises
`RecursionError` (a 500), and a shallower one still parses into a structure that later code
(validation, error flattening, JSONB) walks recursively. No body of this API nests more than a few
levels, so anything deeper than `API_JSON_MAX_DEPTH` (32 by default) is refused before it is parsed,
with a 400 `parse_error` in the error envelope.

The depth check costs nothing measurable for normal bodies: a body holding no more opening brackets
than the limit (counted by `str.count`) cannot nest deeper than the limit. Only bodies with more
brackets are scanned, in C and in linear time: strings removed by one regular expression, everything
but brackets by another, the running depth summed by `itertools.accumulate`.
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Any

from django.conf import settings
from rest_framework import exceptions, parsers, status
from rest_framework.exceptions import ParseError
from rest_framework.utils import json

# A JSON string: a quote, then runs of anything but a quote or a backslash separated by escapes
# (a backslash and any character), then the closing quote *if there is one*. The optional closing
# quote keeps the scan linear: a string that never closes (invalid JSON) is matched to the end of
# the text instead of failing, which would make the engine retry the match from every later quote
# (quadratic: a 64 KB body of escaped quotes took seconds). On valid JSON every string closes, so
# the matches are exactly those of the strict pattern `"(?:[^"\\]|\\.)*"`; the unrolled form also
# spares the engine one alternation per character.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def max_depth() -> int:
    return int(getattr(settings, "API_JSON_MAX_DEPTH", 32))


def max_body_bytes() -> int:
    return int(getattr(settings, "API_MAX_BODY_BYTES", 2 * 1024 * 1024))


def nesting_exceeds(text: str, limit: int) -> bool:
    """Whether the JSON text nests arrays and objects deeper than `limit` levels (linear time)."""
    if text.count("[") + text.count("{") <= limit:
        return False  # no more brackets than levels: the common case, no scan
    brackets = _NOT_BRACKETS.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit


def too_deep(limit: int) -> ParseError:
    return ParseError(f"JSON body nested deeper than {limit} levels of arrays and objects.")


class BodyTooLarge(exceptions.APIException):
    """A request body longer than API_MAX_BODY_BYTES: 413, `payload_too_large` in the envelope."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"


def too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"Request body larger than {limit} bytes; no request to this API needs that much.")


class JSONParser(parsers.JSONParser):
    """DRF's JSONParser, refusing bodies longer than `API_MAX_BODY_BYTES` (413, payload_too_large)
    and bodies nested deeper than `API_JSON_MAX_DEPTH` (400, parse_error)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = parsers.get_encoding(parser_context or {})  # type: ignore[attr-defined]
        size_limit = max_body_bytes()
        # One byte more than allowed tells "too long" from "exactly the limit" without reading the
        # rest (the stream is Django's, bounded by Content-Length; the server discards the rest).
        raw = stream.read(size_limit + 1) if stream is not None else b""
        if len(raw) > size_limit:
            raise too_large(size_limit)
        limit = max_depth()
        try:
            text = raw.decode(encoding)
            if nesting_exceeds(text, limit):
                raise too_deep(limit)
            return json.loads(text, parse_constant=json.strict_constant if self.strict else None)
        except RecursionError:  # a recursion limit set lower than the depth limit
            raise too_deep(limit) from None
        except ValueError as exc:  # bad JSON, or bytes that are not in the declared encoding
            raise ParseError(f"JSON parse error - {exc}") from None
