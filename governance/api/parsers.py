"""The API's JSON parser: DRF's, with a nesting limit.

Python's `json` recurses once per level: a body of ~1,000 nested arrays raises `RecursionError`
(a 500), and a shallower one still parses into a structure that later code (validation, error
flattening, JSONB) walks recursively. No body of this API nests more than a few levels, so anything
deeper than `API_JSON_MAX_DEPTH` (32 by default) is refused before it is parsed, with a 400
`parse_error` in the error envelope.

The check costs nothing measurable for normal bodies: a body holding no more opening brackets than
the limit (counted by `str.count`) cannot nest deeper than the limit. Only bodies with more
brackets are scanned, in C: strings removed by one regular expression, everything but brackets by
another, the running depth summed by `itertools.accumulate`.
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils import json

# A JSON string: a quote, then escapes or anything but a quote or a backslash, then a quote.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def max_depth() -> int:
    return int(getattr(settings, "API_JSON_MAX_DEPTH", 32))


def nesting_exceeds(text: str, limit: int) -> bool:
    """Whether the JSON text nests arrays and objects deeper than `limit` levels."""
    if text.count("[") + text.count("{") <= limit:
        return False  # no more brackets than levels: the common case, no scan
    brackets = _NOT_BRACKETS.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit


def too_deep(limit: int) -> ParseError:
    return ParseError(f"JSON body nested deeper than {limit} levels of arrays and objects.")


class JSONParser(parsers.JSONParser):
    """DRF's JSONParser, refusing bodies nested deeper than `API_JSON_MAX_DEPTH` (400, parse_error)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = parsers.get_encoding(parser_context or {})  # type: ignore[attr-defined]
        limit = max_depth()
        try:
            text = (stream.read() if stream is not None else b"").decode(encoding)
            if nesting_exceeds(text, limit):
                raise too_deep(limit)
            return json.loads(text, parse_constant=json.strict_constant if self.strict else None)
        except RecursionError:  # a recursion limit set lower than the depth limit
            raise too_deep(limit) from None
        except ValueError as exc:  # bad JSON, or bytes that are not in the declared encoding
            raise ParseError(f"JSON parse error - {exc}") from None
