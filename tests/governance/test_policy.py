"""The policy combination: strictest wins, each rule in one place."""

from __future__ import annotations

import datetime as dt

import pytest

from governance.errors import InvalidInput, PolicyViolation
from governance.policy import classification_policy, effective_policy, resolve_duration

pytestmark = pytest.mark.django_db
DAYS = dt.timedelta(days=1)


def test_defaults_match_the_documented_table(classifications):
    rows = {
        slug: (p.stages, p.max_duration.days, p.justification_required, p.auto_approve, p.pii_requires_explicit_request)
        for slug, p in ((s, classification_policy(c)) for s, c in classifications.items())
    }
    assert rows == {
        "public": ((), 365, False, True, False),
        "internal": (("owner",), 180, False, False, False),
        "confidential": (("owner",), 90, True, False, False),
        "restricted": (("owner", "security_officer"), 30, True, False, True),
    }


@pytest.mark.parametrize(
    ("classification", "level", "pii", "role", "stages", "reason", "auto"),
    [
        ("public", "read", False, False, (), False, True),
        ("public", "write", False, False, ("owner",), True, False),
        ("public", "read", True, False, ("owner",), True, False),
        ("public", "read", False, True, ("owner",), False, False),
        ("internal", "read", False, False, ("owner",), False, False),
        ("internal", "admin", False, False, ("owner",), True, False),
        ("restricted", "read", False, True, ("owner", "security_officer"), True, False),
    ],
)
def test_strictest_wins(classification, level, pii, role, stages, reason, auto, make_dataset):
    ds = make_dataset("t", classification=classification)
    p = effective_policy(dataset=ds, level=level, includes_pii=pii, grantee_is_role=role)
    assert (p.stages, p.justification_required, p.auto_approve) == (stages, reason, auto)
    assert len(p.notes) == sum([level != "read", pii, role])


def test_no_stage_and_no_auto_approve_falls_back_to_owner(make_dataset, classifications):
    c = classifications["internal"]
    c.approval_stages = []
    c.save()
    assert classification_policy(c).stages == ("owner",)


def test_duration_rules(classifications):
    p = classification_policy(classifications["confidential"])
    assert resolve_duration(policy=p, duration=90 * DAYS, longest_allowed=False) == 90 * DAYS
    assert resolve_duration(policy=p, duration=None, longest_allowed=True) == 90 * DAYS
    assert resolve_duration(policy=p, duration=5 * DAYS, longest_allowed=True) == 5 * DAYS
    with pytest.raises(PolicyViolation, match="at most 90 days"):
        resolve_duration(policy=p, duration=91 * DAYS, longest_allowed=False)
    with pytest.raises(InvalidInput, match="positive"):
        resolve_duration(policy=p, duration=-DAYS, longest_allowed=False)
    with pytest.raises(InvalidInput, match="how long"):
        resolve_duration(policy=p, duration=None, longest_allowed=False)
