"""National identifiers other than the US SSN, through python-stdnum's validators.

Each kind has a checksum (or, for the UK's NINO, strict issuing rules), which is what makes it worth
more than a hand-written pattern: nine or eleven bare digits are everywhere in databases, and only
the checksum tells a Dutch BSN or a Polish PESEL from an order number. A random digit string of the
right length still passes a mod-11 check about one time in eleven; the share of the sample a value
detector needs (60% by default) absorbs that.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from stdnum.br import cpf
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.gb import nhs
from stdnum.it import codicefiscale
from stdnum.nl import bsn
from stdnum.pl import pesel

# UK National Insurance number: two prefix letters (D, F, I, Q, U, V never; O never second; a few
# pairs never issued), six digits, suffix A-D. No checksum exists, so the issuing rules are all.
_NINO_RE = re.compile(r"^([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]) ?\d{2} ?\d{2} ?\d{2} ?[A-D]$")
_NINO_NEVER = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})


def _is_nino(text: str) -> bool:
    m = _NINO_RE.match(text.upper())
    return m is not None and m.group(1) not in _NINO_NEVER


_DIGITS_WRITTEN_RE = re.compile(r"[\d .\-/]+")


def _digits_written(*lengths: int) -> Callable[[str], bool]:
    """Only digits with spaces, dots or dashes, `lengths` digits in all: the validators' `compact()`
    also drops other characters, and a value with letters in it is not a bare number."""

    def check(text: str) -> bool:
        return _DIGITS_WRITTEN_RE.fullmatch(text) is not None and len(re.sub(r"\D", "", text)) in lengths

    return check


def _shaped(pattern: str) -> Callable[[str], bool]:
    compiled = re.compile(pattern)
    return lambda text: compiled.fullmatch(text) is not None


_NINE = _digits_written(9)
_TEN = _digits_written(10)
_ELEVEN = _digits_written(11)
_FIFTEEN = _digits_written(15)

# (kind, what a steward reads, shape filter, validator); the first that accepts a value names it.
_KINDS: tuple[tuple[str, str, Callable[[str], bool], Callable[[str], bool]], ...] = (
    ("gb_nino", "UK National Insurance number (AA NN NN NN A, issuing rules)", lambda t: True, _is_nino),
    ("fr_nir", "French NIR (15 digits, mod-97 key)", _FIFTEEN, nir.is_valid),
    (
        "it_codice_fiscale",
        "Italian codice fiscale (check character)",
        _shaped(r"[A-Za-z0-9 ]{16,19}"),
        codicefiscale.is_valid,
    ),
    ("es_dni", "Spanish DNI (8 digits, check letter)", _shaped(r"\d{8}[ -]?[A-Za-z]"), dni.is_valid),
    (
        "es_nie",
        "Spanish NIE (X/Y/Z, 7 digits, check letter)",
        _shaped(r"[XYZxyz][ -]?\d{7}[ -]?[A-Za-z]"),
        nie.is_valid,
    ),
    ("br_cpf", "Brazilian CPF (NNN.NNN.NNN-NN, two check digits)", _ELEVEN, cpf.is_valid),
    ("pl_pesel", "Polish PESEL (11 digits, birth date and checksum)", _ELEVEN, pesel.is_valid),
    ("de_idnr", "German Steuer-IdNr (11 digits, check digit)", _ELEVEN, idnr.is_valid),
    ("nl_bsn", "Dutch BSN (9 digits, 11-proof)", _NINE, bsn.is_valid),
    ("gb_nhs", "NHS number (10 digits, mod 11)", _TEN, nhs.is_valid),
)
LABELS = {kind: label for kind, label, _, _ in _KINDS}


def national_id_kind(value: str) -> str | None:
    """Which national identifier `value` validly is (`nl_bsn`, `fr_nir`, ...), or None."""
    text = value.strip()
    if not 8 <= len(text) <= 24:
        return None
    for kind, _, shaped, valid in _KINDS:
        if shaped(text) and _accepts(valid, text):
            return kind
    return None


def _accepts(valid: Callable[[str], bool], text: str) -> bool:
    try:
        return bool(valid(text))
    except Exception:  # noqa: BLE001 - a validator that chokes on odd input has not matched
        return False


def is_national_id(value: str) -> bool:
    return national_id_kind(value) is not None


def national_id_shape(values: Sequence[str]) -> str:
    counts: dict[str, int] = {}
    for v in values:
        kind = national_id_kind(v)
        if kind:
            counts[kind] = counts.get(kind, 0) + 1
    kinds = sorted(counts, key=lambda k: (-counts[k], k))
    return "; ".join(LABELS[k] for k in kinds[:3]) or "national identifier with a valid checksum"
