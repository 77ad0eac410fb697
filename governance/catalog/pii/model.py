"""What discovery hands back (findings and suggestions) and what a column's type can hold."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

DEFAULT_THRESHOLD = 0.6
# Fewer non-empty samples than this are not enough to call a column by its values alone.
DEFAULT_MIN_VALUES = 5
EVIDENCE_MAX = 255


class Finding(NamedTuple):
    """One reason behind a suggestion, in a form a steward can read and a sync can compare.

    Never carries a value: `shape` describes the form that matched (`name@domain.tld`, `NNN-NN-NNNN`,
    `token "email" in the name`), `matched`/`sampled` the share of the sample behind it.
    """

    detector: str  # which detector spoke: "name", "email", "phone", "person_name", ...
    basis: str  # "name" (the column's name) or "values" (sampled values)
    shape: str
    matched: int = 0
    sampled: int = 0

    @property
    def share(self) -> float:
        return round(self.matched / self.sampled, 4) if self.sampled else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "detector": self.detector,
            "basis": self.basis,
            "shape": self.shape,
            "matched": self.matched,
            "sampled": self.sampled,
            "share": self.share,
        }


class Suggestion(NamedTuple):
    """One suggested tag: (tag, confidence in 0..1, evidence shown to the steward, its findings)."""

    tag: str
    confidence: float
    evidence: str
    findings: tuple[Finding, ...] = ()


# --- types --------------------------------------------------------------------------------------

TEXT = "text"
NUMBER = "number"
DATE = "date"
NETWORK = "network"
BOOLEAN = "boolean"
JSON = "json"
ARRAY = "array"
OTHER = "other"

# pg_type.typcategory (domains inherit their base type's category) to the kinds the rules use.
_CATEGORY_KINDS = {"S": TEXT, "N": NUMBER, "D": DATE, "I": NETWORK, "B": BOOLEAN, "A": ARRAY}


def value_kind(data_type: str, type_category: str = "") -> str:
    """What a column can hold, from `format_type()` output and `pg_type.typcategory`.

    The category is authoritative when given (it sees through domains and `citext`); the type name
    is a fallback for callers that only have the name.
    """
    if type_category:
        if type_category in _CATEGORY_KINDS:
            return _CATEGORY_KINDS[type_category]
        if data_type.split("(")[0].strip().lower() in {"json", "jsonb"}:
            return JSON
        return OTHER
    base = data_type.split("(")[0].strip().lower()
    if base.endswith("[]"):
        return ARRAY
    if base in {"text", "character varying", "varchar", "character", "char", "bpchar", "citext", "name"}:
        return TEXT
    if base in {"smallint", "integer", "bigint", "numeric", "decimal", "real", "double precision", "int", "int4"}:
        return NUMBER
    if base in {"date"} or base.startswith(("timestamp", "time")):
        return DATE
    if base in {"inet", "cidr"}:
        return NETWORK
    if base in {"boolean", "bool"}:
        return BOOLEAN
    if base in {"json", "jsonb"}:
        return JSON
    return OTHER


# --- shapes without values ------------------------------------------------------------------------

_ALNUM_RE = re.compile(r"[^\W_]")


def mask(value: str) -> str:
    """A value's form with every digit as N and every letter as A: `123-45-6789` -> `NNN-NN-NNNN`."""
    return _ALNUM_RE.sub(lambda m: "N" if m.group().isdigit() else "A", value)


def dominant_mask(values: Iterable[str], *, min_masked: int = 4) -> str | None:
    """The most common masked form of `values`, only when it cannot give a value away: at least
    `min_masked` characters masked, and not itself one of the values (`NNNN` for the value "NNNN")."""
    counts: dict[str, int] = {}
    seen: set[str] = set()
    for v in values:
        seen.add(v)
        m = mask(v)
        counts[m] = counts.get(m, 0) + 1
    if not counts:
        return None
    best = max(sorted(counts), key=lambda k: counts[k])
    if sum(1 for ch in best if ch in "NA") < min_masked or best in seen or len(best) > 40:
        return None
    return best
