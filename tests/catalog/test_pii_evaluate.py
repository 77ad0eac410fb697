"""Precision and recall of PII discovery on the labelled fixtures, measured by the command a reader
runs (`manage.py pii_evaluate`, docs/discovery.md), with floors a little below today's figures so
that a detector that gets worse fails here."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from governance.catalog.pii import evaluate
from tests.catalog.pii_fixture import NEW, OLD

# Measured on the fixtures as committed (docs/discovery.md has the table): new 0.981 / 0.972, old 1.0 / 1.0.
FLOORS = {NEW: (0.97, 0.96), OLD: (0.99, 0.99)}
# Per tag on the new fixture: (precision, recall) floors for the detectors this fixture was made for.
TAG_FLOORS = {
    "person_name": (0.95, 0.9),
    "phone": (0.95, 0.95),
    "national_id": (0.95, 0.95),
    "email": (0.95, 0.95),
    "iban": (0.95, 0.95),
    "card_number": (0.95, 0.95),
    "ip_address": (0.85, 0.95),
}


def test_the_new_fixture_is_large_varied_and_has_traps():
    columns = json.loads(NEW.read_text(encoding="utf-8"))
    assert len(columns) >= 200
    schemas = {c["table"].split(".")[0] for c in columns}
    assert {"hr", "crm", "payments", "health", "logs"} <= schemas
    assert sum(1 for c in columns if c["trap"] and not c["tags"]) >= 35, "traps: sensitive-looking, not sensitive"
    assert all(20 <= len(c["values"]) <= 50 for c in columns)
    tags = {t for c in columns for t in c["tags"]}
    assert tags >= {"email", "phone", "ssn", "national_id", "card_number", "iban", "ip_address", "person_name"}


@pytest.mark.parametrize("path", [NEW, OLD], ids=["new", "old"])
def test_precision_and_recall_stay_above_their_floors(path):
    result = evaluate.evaluate(evaluate.load(path))
    precision_floor, recall_floor = FLOORS[path]
    assert result.overall.precision is not None and result.overall.precision >= precision_floor, result.false_positives
    assert result.overall.recall is not None and result.overall.recall >= recall_floor, result.missed
    if path == NEW:
        for tag, (p, r) in TAG_FLOORS.items():
            score = result.by_tag[tag]
            assert (score.precision or 0) >= p and (score.recall or 0) >= r, (tag, score)


def test_the_command_prints_the_table_on_stdout():
    out, err = io.StringIO(), io.StringIO()
    call_command("pii_evaluate", stdout=out, stderr=err)
    text = out.getvalue()
    assert "PII discovery on tests/catalog/data/pii_columns.json: 252 columns" in text
    assert "PII discovery on tests/catalog/data/pii_columns_old.json: 44 columns" in text
    header = "tag             expected suggested correct precision  recall"
    assert text.count(header) == 2
    overall = [line.split() for line in text.splitlines() if line.startswith("overall")]
    assert overall[1] == ["overall", "25", "25", "25", "1.000", "1.000"]
    assert "logs.app.v: ip_address (ip_address/values: IPv4 host address)" in text
    assert err.getvalue() == ""
    # What it prints about wrong suggestions names columns and shapes, never a value.
    for col in json.loads(NEW.read_text(encoding="utf-8")):
        for value in col["values"]:
            if value and len(value) >= 6:
                assert value not in text, (col["column"], value)


def test_the_command_fails_below_a_floor_and_on_bad_input(tmp_path):
    with pytest.raises(CommandError, match=r"below the floor: .*pii_columns.json: precision 0\.981"):
        call_command("pii_evaluate", str(NEW), "--min-precision", "0.99", stdout=io.StringIO())
    call_command("pii_evaluate", str(NEW), "--min-precision", "0.97", "--min-recall", "0.96", stdout=io.StringIO())
    missing = tmp_path / "nope.json"
    with pytest.raises(CommandError, match=r"nope\.json: not a file of labelled columns"):
        call_command("pii_evaluate", str(missing), stdout=io.StringIO())
    broken = tmp_path / "broken.json"
    broken.write_text('[{"column": "email"}]', encoding="utf-8")
    with pytest.raises(CommandError, match=r"broken\.json: not a file of labelled columns"):
        call_command("pii_evaluate", str(broken), stdout=io.StringIO())
    with pytest.raises(CommandError, match="--threshold must be between 0 and 1"):
        call_command("pii_evaluate", "--threshold", "2", stdout=io.StringIO())
