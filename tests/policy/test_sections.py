"""The other sections of a policy document on the real target's catalog: the embedded quality
checks (planned and applied by quality.as_code in the same transaction, audited as gitops, their
problems named under `quality.`), and the standing grants a plan refuses by path before anything
is written (no worker needed: nothing is provisioned)."""

from __future__ import annotations

from typing import Any

import pytest

from audit.models import AuditEvent
from governance.models import Grant
from governance.services.roles import role_create
from policy.document import DocumentError
from policy.plans import plan
from policy.services import policy_apply
from quality.models import QualityCheck

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_quality_section_is_planned_and_applied_with_the_rest(target_source: Any, gov_admin: Any) -> None:
    key = f"{target_source.name}:finance.ledger"
    check = {"name": "amount present", "kind": "completeness", "column": "amount"}
    document: dict[str, Any] = {
        "version": 1,
        "quality": {"version": 1, "datasets": [{"dataset": key, "checks": [check]}]},
    }
    planned = plan(document, gov_admin)
    text = planned.render()
    assert text.startswith(f"quality\n  {key}\n    + amount present: kind completeness, column amount\n"), text
    assert text.endswith("\n1 to create, 0 to change, 0 to remove.\n")
    done = policy_apply(planned=planned, actor=gov_admin, origin="test")
    assert done.count == 1
    made = QualityCheck.objects.get(name="amount present")
    event = AuditEvent.objects.get(action="quality_check.created", target_id=str(made.pk))
    assert (event.source, event.actor_id, event.metadata["document"]) == ("gitops", gov_admin.pk, planned.digest)
    assert event.metadata["via"] == "gitops"  # the policy document's marks, not the embedded section's
    assert plan(document, gov_admin).count == 0

    document["quality"]["datasets"][0]["checks"][0]["column"] = "amont"
    with pytest.raises(DocumentError) as refused:
        plan(document, gov_admin)
    assert refused.value.message.startswith("quality.datasets[0].checks[0].column: 'amont' is not a column")


def test_standing_grants_a_plan_refuses_by_path(target_source: Any, gov_admin: Any) -> None:
    role_create(actor=gov_admin, name="ETL readers")
    ledger = f"{target_source.name}:finance.ledger"
    cases = [
        ({"role": "ETL readers", "dataset": f"{target_source.name}:finance.nothing", "level": "read"},
         "standing_grants[0].dataset: "),
        ({"role": "ETL readers", "dataset": ledger, "level": "read", "columns": ["amount", "secret"]},
         "standing_grants[0].columns: finance.ledger has no column 'secret'."),
        ({"role": "ETL readers", "dataset": ledger, "level": "read", "until": "2020-01-01"},
         "standing_grants[0].until: The end (until) is in the past."),
        ({"role": "ETL readers", "dataset": ledger, "level": "read", "until": "2030-02-30"},
         "standing_grants[0].until: '2030-02-30' is not a date."),
        ({"user": "nobody", "dataset": ledger, "level": "read"}, "standing_grants[0].user: there is no user 'nobody'."),
        ({"role": "ETL readers", "user": "govadmin", "dataset": ledger, "level": "read"},
         "standing_grants[0]: name the grantee with `role` or `user` (one of them)."),
    ]  # fmt: skip
    for entry, message in cases:
        with pytest.raises(DocumentError) as refused:
            plan({"version": 1, "standing_grants": [entry]})
        assert refused.value.message.startswith(message), (entry, refused.value.message)
    twice = {"role": "ETL readers", "dataset": ledger, "level": "read"}
    with pytest.raises(DocumentError, match=r"standing_grants\[1\]\.dataset: standing_grants\[0\] is the same grant"):
        plan({"version": 1, "standing_grants": [twice, twice]})
    assert not Grant.objects.exists()
