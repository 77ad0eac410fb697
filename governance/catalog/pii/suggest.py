"""Suggestions for one column: name hints and value detectors combined, with their findings."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial

from governance.models import SensitiveTag

from . import national_ids, people, values
from .model import (
    DATE,
    DEFAULT_MIN_VALUES,
    DEFAULT_THRESHOLD,
    EVIDENCE_MAX,
    NETWORK,
    TEXT,
    Finding,
    Suggestion,
    dominant_mask,
    value_kind,
)
from .names import RULE_BY_TAG, hints_birth, name_hints, name_tokens, vetoed


@dataclass(frozen=True)
class _ValueRule:
    tag: str
    detector: str
    description: str  # "... look like {description}"
    expected: str  # the form looked for, shown when the values contradict the name
    test: Callable[[str], bool]
    # The form of the matched values, without any value; `expected` when None.
    shape: Callable[[list[str]], str] | None = None


def _masked(suffix: str, fallback: str) -> Callable[[list[str]], str]:
    def shape(matched: list[str]) -> str:
        form = dominant_mask(matched)
        return f"{form}, {suffix}" if form else fallback

    return shape


def _value_rules(phone_regions: Sequence[str]) -> tuple[_ValueRule, ...]:
    """Detectors that may suggest a tag from the values alone. Dates of birth are not among them (any
    date column would do), nor addresses or PHI (free text is too varied for a value test to be
    right often enough): those come from name hints only."""
    return (
        _ValueRule(SensitiveTag.EMAIL.value, "email", "email addresses", "name@domain.tld", values.is_email),
        _ValueRule(
            SensitiveTag.PHONE.value,
            "phone",
            "phone numbers",
            "phone number valid per phonenumbers",
            partial(values.is_phone, regions=phone_regions),
            partial(values.phone_shape, regions=phone_regions),
        ),
        _ValueRule(
            SensitiveTag.SSN.value,
            "ssn",
            "US social security numbers",
            "NNN-NN-NNNN within the SSA's issuing rules",
            values.is_ssn,
            _masked("within the SSA's issuing rules", "NNN-NN-NNNN within the SSA's issuing rules"),
        ),
        _ValueRule(
            SensitiveTag.NATIONAL_ID.value,
            "national_id",
            "national identifiers (checksums)",
            "national identifier with a valid checksum",
            national_ids.is_national_id,
            national_ids.national_id_shape,
        ),
        _ValueRule(
            SensitiveTag.CARD_NUMBER.value,
            "card_number",
            "card numbers (Luhn)",
            "13-19 digits starting 2-6, Luhn-valid",
            values.is_card_number,
            values.card_shape,
        ),
        _ValueRule(SensitiveTag.IBAN.value, "iban", "IBANs (mod-97)", "IBAN, mod-97 valid", values.iban_valid),
        _ValueRule(
            SensitiveTag.IP_ADDRESS.value,
            "ip_address",
            "IP addresses",
            "IP host address",
            values.is_ip_address,
            values.ip_shape,
        ),
        _ValueRule(
            SensitiveTag.PERSON_NAME.value,
            "person_name",
            "person names (a known given name and a family name)",
            "Given-name Family-name",
            people.is_person_name,
            people.person_name_shape,
        ),
    )


# A person-name column that its name announces (`first_name`, `surname`) holds single words too.
_NAME_PARTS = _ValueRule(
    SensitiveTag.PERSON_NAME.value,
    "person_name",
    "names or parts of names",
    "Capitalised name or Given-name Family-name",
    people.is_name_part,
    lambda matched: "Capitalised name or Given-name Family-name",
)

# Names that say what the values are *not*: a column of car models, cities or usernames can hold
# values that read like people's names ("Mercedes Sprinter", "Florence Nightingale Road").
_NOT_PEOPLE_WORDS = """
    product products item items sku brand model make city cities town country region state company companies
    organisation organization org employer vendor supplier merchant store shop street road title titles username
    usernames login handle nickname alias slug hostname host server file path url team department category genre
    venue hotel building site project song album book film movie series character pet breed
"""
_NOT_PEOPLE = frozenset(_NOT_PEOPLE_WORDS.split())


def should_sample(name: str, data_type: str, type_category: str = "") -> bool:
    """Whether the sync should read values of this column: text-like and network columns always
    (that is where unlabelled PII hides), date columns only when the name speaks of birth."""
    kind = value_kind(data_type, type_category)
    if kind in {TEXT, NETWORK}:
        return True
    return kind == DATE and hints_birth(name)


def _non_empty(samples: Iterable[str | None]) -> list[str]:
    return [s.strip() for s in samples if s is not None and s.strip()]


def _ratio_text(hits: int, total: int) -> str:
    return f"{round(100 * hits / total)}% of {total} sampled values"


def configured_phone_regions() -> tuple[str, ...]:
    """Setting PII_PHONE_REGIONS (regions whose national formats count), else the built-in set."""
    from django.conf import settings

    configured = getattr(settings, "PII_PHONE_REGIONS", None) if settings.configured else None
    return tuple(r.strip().upper() for r in configured if r.strip()) if configured else values.DEFAULT_PHONE_REGIONS


class _Found:
    """What has been found for one tag so far: confidence, evidence sentences, findings."""

    def __init__(self, confidence: float, evidence: str, finding: Finding) -> None:
        self.confidence = confidence
        self.evidence = [evidence]
        self.findings = [finding]

    def add(self, confidence: float, evidence: str, finding: Finding) -> None:
        self.confidence = confidence
        self.evidence.append(evidence)
        self.findings.append(finding)


def suggest_tags(
    *,
    name: str,
    data_type: str,
    type_category: str = "",
    samples: Sequence[str | None] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    min_values: int = DEFAULT_MIN_VALUES,
    today: dt.date | None = None,
    phone_regions: Sequence[str] | None = None,
) -> list[Suggestion]:
    """Every tag discovery suggests for one column, strongest first, each with its findings.

    `samples` are the column's values cast to text (None when the column was not sampled). A name
    hint alone suggests its tag; values that contradict it (an `email` column whose values are not
    addresses) lower the confidence and show as a finding, but do not drop the hint, because a
    steward should see it. Values alone suggest a tag when at least `threshold` of at least
    `min_values` non-empty samples match, unless the name says the column is about such data rather
    than the data itself (`build_version` values such as 1.4.2.0 are valid IPv4 addresses).
    """
    values_ = _non_empty(samples or [])
    enough = len(values_) >= max(1, min_values)
    found: dict[str, _Found] = {}

    for tag, phrase in name_hints(name, data_type, type_category):
        found[tag] = _Found(
            RULE_BY_TAG[tag].confidence,
            f"name matches {phrase!r}",
            Finding("name", "name", f'token "{phrase}" in the name'),
        )

    if enough:
        tokens = name_tokens(name)
        regions = tuple(phone_regions) if phone_regions is not None else configured_phone_regions()
        for vrule in _value_rules(regions):
            if vetoed(vrule.tag, tokens):
                continue
            if vrule.tag == SensitiveTag.PERSON_NAME.value:
                if vrule.tag in found:
                    vrule = _NAME_PARTS
                elif set(tokens) & _NOT_PEOPLE:
                    continue
            _judge(found, vrule, values_, threshold)
        _prefer_checksums(found)
        if SensitiveTag.DATE_OF_BIRTH.value in found:
            _judge_birth(found[SensitiveTag.DATE_OF_BIRTH.value], values_, threshold, today)

    out = [
        Suggestion(tag, round(f.confidence, 2), "; ".join(f.evidence)[:EVIDENCE_MAX], tuple(f.findings))
        for tag, f in found.items()
    ]
    out.sort(key=lambda s: (-s.confidence, s.tag))
    return out


def _judge(found: dict[str, _Found], vrule: _ValueRule, values_: list[str], threshold: float) -> None:
    matched = [v for v in values_ if vrule.test(v)]
    hits, total = len(matched), len(values_)
    ratio = hits / total
    text = f"{_ratio_text(hits, total)} look like {vrule.description}"
    current = found.get(vrule.tag)
    if ratio >= threshold:
        shape = vrule.shape(matched) if vrule.shape else vrule.expected
        finding = Finding(vrule.detector, "values", shape, hits, total)
        if current is not None:
            current.add(min(0.99, max(current.confidence, ratio) + 0.1), text, finding)
        else:
            # Names are fuzzier than checksums: a value-only person name never outranks them.
            confidence = ratio * 0.9 if vrule.tag == SensitiveTag.PERSON_NAME.value else ratio
            found[vrule.tag] = _Found(round(confidence, 2), text, finding)
    elif current is not None:
        finding = Finding(vrule.detector, "values", vrule.expected, hits, total)
        current.add(round(min(current.confidence, 0.5), 2), f"but only {text}", finding)


def _prefer_checksums(found: dict[str, _Found]) -> None:
    """A column whose values mostly pass a national identifier's checksum is not a phone column,
    even if they are also laid out like national phone numbers (a CPF's NNN.NNN.NNN-NN, an NHS
    number's NNN NNN NNNN): random phone numbers pass those checksums one time in ten or less.
    Only a phone suggestion made from the values alone is dropped; a name hint stays."""
    phone, national = found.get(SensitiveTag.PHONE.value), found.get(SensitiveTag.NATIONAL_ID.value)
    if phone is None or national is None or national.findings[-1].basis != "values":
        return
    if all(f.basis == "values" for f in phone.findings):
        del found[SensitiveTag.PHONE.value]


def _judge_birth(current: _Found, values_: list[str], threshold: float, today: dt.date | None) -> None:
    hits = sum(1 for v in values_ if values.is_plausible_birth_date(v, today))
    total = len(values_)
    low, _ = values.birth_range(today)
    text = f"{_ratio_text(hits, total)} are dates in a plausible birth range"
    finding = Finding("date_of_birth", "values", f"date from {low.year} to ten years ago", hits, total)
    if hits / total >= threshold:
        current.add(min(0.99, current.confidence + 0.15), text, finding)
    else:
        current.add(round(min(current.confidence, 0.5), 2), f"but only {text}", finding)
