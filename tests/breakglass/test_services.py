"""Break-glass services on the portal's database: who may break the glass and within which policy,
what a break writes (request, grant, use, audit, notification), the review and its deadline, and the
reports of unreviewed and unused uses. The real target and the worker: tests/provisioning/test_break_glass.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from breakglass.models import BreakGlassUse
from breakglass.selectors import overdue_uses, statements_of, summary, unreviewed_uses, unused_uses
from breakglass.services.activation import break_glass_activate
from breakglass.services.review import break_glass_review, break_glass_reviews_mark_overdue
from governance.errors import ConflictError, DomainError, InvalidInput, NotPermitted, PolicyViolation
from governance.models import AccessRequest, Dataset, Grant, GrantUsage, RequestState
from notifications.models import Notification
from tests.breakglass.conftest import code_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def incidents(make_dataset: Callable[..., Dataset], owner: Any) -> Dataset:
    return make_dataset(
        "incidents",
        classification="confidential",
        owner=owner,
        columns=("id", "customer_email", "status", "opened_at"),
        pii={"customer_email": "email"},
        schema="ops",
    )


def activate(user: Any, dataset: Dataset, **overrides: Any) -> BreakGlassUse:
    fields: dict[str, Any] = {"reason": "INC-4711: checkout down", "hours": 2, "otp_token": None}
    fields.update(overrides)
    if fields["otp_token"] is None:
        fields["otp_token"] = code_for(user)
    return break_glass_activate(actor=user, dataset=dataset, **fields)


def test_an_on_call_engineer_gets_read_access_at_once_marked_audited_and_announced(
    policies: Any, on_call: Any, officers: list[Any], incidents: Dataset
) -> None:
    use = activate(on_call, incidents, hours="1.5")
    grant = Grant.objects.select_related("source_request").get(pk=use.grant_id)
    assert grant.emergency and grant.grantee_user == on_call and grant.level == "read"
    # Confidential's default policy leaves PII out: the grant names today's other columns.
    assert grant.columns == ["id", "status", "opened_at"]
    assert grant.ends_at - grant.starts_at == dt.timedelta(hours=1.5)
    req = grant.source_request
    assert req is not None
    assert req.state == RequestState.APPROVED and req.requester == on_call and req.policy["emergency"] is True
    assert req.policy["break_glass"] is True and req.policy["max_hours"] == 4
    assert use.review_due_at == use.activated_at + dt.timedelta(hours=24)
    assert use.assigned_officer == officers[0] and use.hours == Decimal("1.5")
    actions = list(AuditEvent.objects.order_by("id").values_list("action", "actor__username", "outcome"))
    assert ("access_request.emergency_approved", "oncall", "success") in actions
    assert ("grant.created", "oncall", "success") in actions
    assert actions[-1] == ("break_glass.activated", "oncall", "success")
    notice = Notification.objects.get(kind="break_glass_activated")
    assert notice.context["use"] == use.pk and notice.context["reason"] == "INC-4711: checkout down"


def _refused(action: Callable[[], Any], error: type[DomainError], field: str | None, words: str) -> DomainError:
    with pytest.raises(error) as caught:
        action()
    assert caught.value.field == field and words in caught.value.message
    event = AuditEvent.objects.filter(action="break_glass.activate").latest("id")
    assert event.outcome == "denied" and event.reason == caught.value.message
    assert not BreakGlassUse.objects.exists() and not Grant.objects.exists()
    assert not AccessRequest.objects.exists()
    return caught.value


def test_refusals_name_the_field_and_are_recorded_as_denied(
    policies: Any,
    make_on_call: Callable[..., Any],
    analyst: Any,
    incidents: Dataset,
    restricted_dataset: Dataset,
) -> None:
    oncall = make_on_call()
    _refused(lambda: activate(analyst, incidents, otp_token="123456"), NotPermitted, None, "on-call group")
    _refused(lambda: activate(oncall, restricted_dataset), PolicyViolation, "dataset", "cannot be opened")
    _refused(lambda: activate(oncall, incidents, hours=5), PolicyViolation, "hours", "at most 4 hours")
    _refused(lambda: activate(oncall, incidents, hours="soon"), InvalidInput, "hours", "how many hours")
    _refused(lambda: activate(oncall, incidents, hours=0), InvalidInput, "hours", "positive")
    _refused(lambda: activate(oncall, incidents, reason="  "), InvalidInput, "reason", "Say why")
    _refused(lambda: activate(oncall, incidents, otp_token="000000"), InvalidInput, "otp_token", "wrong")
    _refused(lambda: activate(oncall, incidents, otp_token=" "), InvalidInput, "otp_token", "missing")
    no_device = make_on_call("newbie", device=False)
    _refused(
        lambda: activate(no_device, incidents, otp_token="123456"), NotPermitted, "otp_token", "second factor first"
    )


def test_a_table_of_pii_only_is_refused_and_pii_is_covered_where_the_policy_says(
    policies: Any, on_call: Any, make_dataset: Callable[..., Dataset]
) -> None:
    people = make_dataset("people", classification="internal", columns=("email",), pii={"email": "email"})
    _refused(lambda: activate(on_call, people), PolicyViolation, "dataset", "Every column")
    rules = policies["internal"]
    rules.include_pii = True
    rules.save()
    use = activate(on_call, people, otp_token=code_for(on_call, ahead=1))
    assert use.include_pii and use.grant.columns == []  # the whole table


def test_a_second_break_while_the_first_holds_is_a_conflict(policies: Any, on_call: Any, incidents: Dataset) -> None:
    first = activate(on_call, incidents)
    with pytest.raises(ConflictError, match="already hold break-glass access"):
        activate(on_call, incidents, otp_token=code_for(on_call, ahead=1))
    assert list(BreakGlassUse.objects.values_list("pk", flat=True)) == [first.pk]


def test_reviews_go_to_the_least_loaded_officer_and_only_another_officer_reviews(
    policies: Any, make_on_call: Callable[..., Any], officers: list[Any], analyst: Any, incidents: Dataset
) -> None:
    from accounts.roles import SECURITY_OFFICERS

    first = activate(make_on_call("ana"), incidents)
    # An officer on call: never assigned their own review, and cannot review it.
    officer_on_call = make_on_call("bo", SECURITY_OFFICERS)
    second = activate(officer_on_call, incidents)
    assert (first.assigned_officer, second.assigned_officer) == (officers[0], officers[1])

    def refused(actor: Any, outcome: str, note: str, error: type[DomainError], words: str) -> None:
        with pytest.raises(error, match=words):
            break_glass_review(actor=actor, use=second, outcome=outcome, note=note)
        event = AuditEvent.objects.filter(action="break_glass.review").latest("id")
        assert event.outcome == "denied" and event.actor == actor

    refused(officer_on_call, "appropriate", "", NotPermitted, "your own")
    refused(analyst, "appropriate", "", NotPermitted, "Only a security officer")
    refused(officers[1], "fine", "", InvalidInput, "outcome")
    refused(officers[1], "inappropriate", " ", InvalidInput, "what was inappropriate")
    reviewed = break_glass_review(actor=officers[1], use=second, outcome="inappropriate", note="Not an incident.")
    assert reviewed.outcome == "inappropriate" and reviewed.reviewed_by == officers[1]
    event = AuditEvent.objects.get(action="break_glass.reviewed")
    assert event.actor == officers[1] and event.changes == {"outcome": ["", "inappropriate"]}
    assert event.reason == "Not an incident." and event.metadata["person"] == "bo"
    refused(officers[0], "appropriate", "", ConflictError, "already reviewed")
    assert list(unreviewed_uses()) == [first]


def test_an_overdue_review_is_marked_once_and_announced(
    policies: Any, on_call: Any, officers: list[Any], incidents: Dataset
) -> None:
    use = activate(on_call, incidents)
    assert break_glass_reviews_mark_overdue() == 0  # within its day
    later = timezone.now() + dt.timedelta(hours=25)
    assert list(overdue_uses(now=later)) == [use]
    assert break_glass_reviews_mark_overdue(now=later) == 1
    assert break_glass_reviews_mark_overdue(now=later) == 0
    use.refresh_from_db()
    assert use.overdue_at == later
    event = AuditEvent.objects.get(action="break_glass.review_overdue")
    assert event.actor is None and event.metadata["assigned_officer"] == "officer1"
    assert Notification.objects.filter(kind="break_glass_review_overdue", dedup_key=f"break-glass-overdue:{use.pk}")
    assert summary(now=later).overdue == 1


def test_unused_access_is_reported_and_the_page_says_what_the_source_can_tell(
    policies: Any, on_call: Any, incidents: Dataset
) -> None:
    use = activate(on_call, incidents)
    assert list(unused_uses()) == []  # still in force
    after = use.grant.ends_at + dt.timedelta(seconds=1)
    assert list(unused_uses(now=after)) == [use]
    loaded = BreakGlassUse.objects.select_related("grant__usage", "grant__dataset__source__usage").get(pk=use.pk)
    told = statements_of(loaded)
    assert not told.can_tell and told.text.startswith("The source cannot tell")
    GrantUsage.objects.create(grant=use.grant, last_used_at=timezone.now(), used_as="portal_u_oncall")
    assert list(unused_uses(now=after)) == []
