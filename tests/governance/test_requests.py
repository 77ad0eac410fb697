"""The request lifecycle: each transition, each refusal, and the audit event each one leaves."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from governance.errors import ConflictError, InvalidInput, NotPermitted, PolicyViolation
from governance.models import AccessRequest, Approval, Grant, GrantStatus, RequestState
from governance.services.requests import (
    access_request_approve,
    access_request_cancel,
    access_request_deny,
    access_request_submit,
    access_requests_expire_stale,
)

pytestmark = pytest.mark.django_db
DAYS = dt.timedelta(days=1)


def events(**filters: Any) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(**filters).order_by("id"))


def submit_restricted(analyst: Any, dataset: Any, **kw: Any) -> AccessRequest:
    kw.setdefault("justification", "Quarterly attrition analysis for the board")
    kw.setdefault("duration", 14 * DAYS)
    return access_request_submit(requester=analyst, dataset=dataset, **kw)


def test_restricted_two_stage_flow_creates_grant(analyst, owner, officer, restricted_dataset):
    req = submit_restricted(analyst, restricted_dataset)
    assert req.state == RequestState.PENDING
    assert req.required_stages == ["owner", "security_officer"]
    assert req.current_stage == "owner"
    # Restricted: PII columns only on explicit request, so the whole-table ask covers the rest.
    assert req.covered_columns == ["employee_id", "department", "salary"]

    access_request_approve(access_request=req, approver=owner, stage="owner", comment="ok for the board pack")
    req.refresh_from_db()
    assert (req.state, req.current_stage) == (RequestState.PENDING, "security_officer")
    assert not Grant.objects.exists()

    access_request_approve(access_request=req, approver=officer, stage="security_officer")
    req.refresh_from_db()
    assert req.state == RequestState.APPROVED
    grant = Grant.objects.get(source_request=req)
    assert grant.grantee_user == analyst
    assert grant.status == GrantStatus.APPROVED
    assert grant.columns == ["employee_id", "department", "salary"]
    assert grant.ends_at - grant.starts_at == 14 * DAYS
    assert Grant.objects.active().filter(pk=grant.pk).exists()

    actions = [(e.action, e.actor_username, e.outcome) for e in events()]
    assert actions == [
        ("access_request.submitted", "analyst", "success"),
        ("access_request.stage_approved", "owner", "success"),
        ("access_request.approved", "officer", "success"),
        ("grant.created", "officer", "success"),
    ]
    approved = events(action="access_request.approved")[0]
    assert approved.target_type == "governance.accessrequest"
    assert approved.target_id == str(req.pk)
    assert approved.changes == {"state": ["pending", "approved"]}


def test_pii_columns_requested_explicitly(analyst, owner, officer, restricted_dataset):
    ssn = restricted_dataset.columns.get(name="ssn")
    emp = restricted_dataset.columns.get(name="employee_id")
    req = submit_restricted(analyst, restricted_dataset, columns=[emp, ssn])
    assert req.covered_columns == ["employee_id", "ssn"]
    assert req.policy["pii_included"] == ["ssn"]


def test_self_approval_refused_and_recorded(owner, restricted_dataset):
    req = submit_restricted(owner, restricted_dataset)
    with pytest.raises(NotPermitted, match="your own request"):
        access_request_approve(access_request=req, approver=owner)
    req.refresh_from_db()
    assert req.state == RequestState.PENDING
    assert not Approval.objects.exists()
    denied = events(outcome="denied")
    assert [(e.action, e.actor_username) for e in denied] == [("access_request.approve", "owner")]
    assert "own request" in denied[0].reason


def test_wrong_owner_refused(analyst, other_owner, restricted_dataset):
    req = submit_restricted(analyst, restricted_dataset)
    with pytest.raises(NotPermitted, match="not an owner or steward"):
        access_request_approve(access_request=req, approver=other_owner)
    assert events(outcome="denied")[0].action == "access_request.approve"


def test_superuser_is_not_an_approver(analyst, superuser, restricted_dataset):
    req = submit_restricted(analyst, restricted_dataset)
    with pytest.raises(NotPermitted):
        access_request_approve(access_request=req, approver=superuser)


def test_officer_cannot_skip_owner_stage(analyst, officer, restricted_dataset):
    req = submit_restricted(analyst, restricted_dataset)
    with pytest.raises(NotPermitted, match="not an owner or steward"):
        access_request_approve(access_request=req, approver=officer)
    with pytest.raises(ConflictError, match="waiting for the dataset owner"):
        access_request_approve(access_request=req, approver=officer, stage="security_officer")


def test_one_person_cannot_decide_two_stages(analyst, owner, officer, restricted_dataset):
    from guardian.shortcuts import assign_perm

    assign_perm("approve_access", officer, restricted_dataset)
    req = submit_restricted(analyst, restricted_dataset)
    access_request_approve(access_request=req, approver=officer, stage="owner")
    with pytest.raises(NotPermitted, match="another person"):
        access_request_approve(access_request=req, approver=officer, stage="security_officer")


def test_over_long_duration_refused_with_limit_in_message(analyst, restricted_dataset):
    with pytest.raises(PolicyViolation, match="at most 30 days") as exc:
        submit_restricted(analyst, restricted_dataset, duration=45 * DAYS)
    assert exc.value.field == "duration"
    assert not AccessRequest.objects.exists()
    denied = events(outcome="denied")
    assert [(e.action, e.actor_username) for e in denied] == [("access_request.submit", "analyst")]
    assert "45 days" in denied[0].reason


def test_longest_allowed_clips(analyst, restricted_dataset):
    req = submit_restricted(analyst, restricted_dataset, duration=90 * DAYS, longest_allowed=True)
    assert req.duration == 30 * DAYS


def test_missing_reason_refused(analyst, restricted_dataset):
    with pytest.raises(PolicyViolation, match="requires a justification"):
        submit_restricted(analyst, restricted_dataset, justification="   ")
    assert not AccessRequest.objects.exists()
    assert events(outcome="denied")[0].action == "access_request.submit"


def test_internal_needs_no_reason_but_write_does(analyst, owner, make_dataset):
    ds = make_dataset("orders", classification="internal", owner=owner)
    req = access_request_submit(requester=analyst, dataset=ds, duration=10 * DAYS)
    assert req.required_stages == ["owner"]
    with pytest.raises(PolicyViolation, match="justification"):
        access_request_submit(requester=analyst, dataset=ds, level="write", duration=10 * DAYS)


def test_public_read_auto_approves(analyst, make_dataset):
    ds = make_dataset("campaigns", classification="public")
    req = access_request_submit(requester=analyst, dataset=ds, duration=30 * DAYS)
    assert req.state == RequestState.APPROVED
    grant = Grant.objects.get(source_request=req)
    assert grant.grantee_user == analyst
    assert [e.action for e in events()] == [
        "access_request.submitted",
        "access_request.auto_approved",
        "grant.created",
    ]


def test_public_write_does_not_auto_approve(analyst, owner, make_dataset):
    ds = make_dataset("campaigns", classification="public", owner=owner)
    req = access_request_submit(requester=analyst, dataset=ds, level="write", justification="fix typos", duration=DAYS)
    assert req.state == RequestState.PENDING
    assert req.required_stages == ["owner"]


def test_pii_not_allowed_when_policy_forbids(analyst, make_dataset, classifications):
    classifications["confidential"].allow_pii_access = False
    classifications["confidential"].save()
    ds = make_dataset("customers", classification="confidential", columns=("id", "email"), pii={"email": "email"})
    with pytest.raises(PolicyViolation, match="does not allow access to PII"):
        access_request_submit(
            requester=analyst, dataset=ds, justification="x", duration=DAYS, columns=[ds.columns.get(name="email")]
        )


def test_admin_level_on_pii_table_must_name_columns(analyst, restricted_dataset):
    with pytest.raises(PolicyViolation, match="name every column explicitly"):
        submit_restricted(analyst, restricted_dataset, level="admin")


def test_unknown_column_refused(analyst, restricted_dataset, make_dataset):
    other = make_dataset("other")
    with pytest.raises(InvalidInput, match="not a column of"):
        submit_restricted(analyst, restricted_dataset, columns=[other.columns.first()])


def test_duplicate_pending_request_conflicts(analyst, restricted_dataset):
    first = submit_restricted(analyst, restricted_dataset)
    with pytest.raises(ConflictError, match=f"#{first.pk}"):
        submit_restricted(analyst, restricted_dataset)


def test_vanished_dataset_cannot_be_requested(analyst, restricted_dataset):
    restricted_dataset.is_present = False
    restricted_dataset.save()
    with pytest.raises(PolicyViolation, match="no longer exists"):
        submit_restricted(analyst, restricted_dataset)


def test_deny_requires_comment_and_ends_request(analyst, owner, restricted_dataset):
    req = submit_restricted(analyst, restricted_dataset)
    with pytest.raises(InvalidInput, match="Say why"):
        access_request_deny(access_request=req, approver=owner, comment=" ")
    access_request_deny(access_request=req, approver=owner, comment="Use the aggregated view instead")
    req.refresh_from_db()
    assert req.state == RequestState.DENIED
    assert req.decision_reason == "Use the aggregated view instead"
    assert events(action="access_request.denied")[0].reason == "Use the aggregated view instead"
    assert not Grant.objects.exists()


def test_cancel_by_requester_only(analyst, owner, restricted_dataset):
    req = submit_restricted(analyst, restricted_dataset)
    with pytest.raises(NotPermitted):
        access_request_cancel(access_request=req, actor=owner)
    access_request_cancel(access_request=req, actor=analyst, reason="no longer needed")
    req.refresh_from_db()
    assert req.state == RequestState.CANCELLED


@pytest.mark.parametrize("final_state", ["approved", "denied", "cancelled", "expired"])
def test_every_illegal_transition_conflicts(final_state, analyst, owner, officer, restricted_dataset):
    req = submit_restricted(analyst, restricted_dataset)
    if final_state == "approved":
        access_request_approve(access_request=req, approver=owner)
        access_request_approve(access_request=req, approver=officer)
    elif final_state == "denied":
        access_request_deny(access_request=req, approver=owner, comment="no")
    elif final_state == "cancelled":
        access_request_cancel(access_request=req, actor=analyst)
    else:
        AccessRequest.objects.filter(pk=req.pk).update(submitted_at=timezone.now() - 30 * DAYS)
        assert access_requests_expire_stale() == 1
    req.refresh_from_db()
    assert req.state == final_state
    before = AuditEvent.objects.filter(outcome="success").count()
    for attempt in (
        lambda: access_request_approve(access_request=req, approver=officer),
        lambda: access_request_deny(access_request=req, approver=owner, comment="late"),
        lambda: access_request_cancel(access_request=req, actor=analyst),
    ):
        with pytest.raises(ConflictError, match=f"already {final_state}"):
            attempt()
    req.refresh_from_db()
    assert req.state == final_state
    assert AuditEvent.objects.filter(outcome="success").count() == before
    assert AuditEvent.objects.filter(outcome="denied").count() == 3


def test_expire_stale_only_old_pending(analyst, owner, make_dataset):
    old_ds, new_ds = make_dataset("a", owner=owner), make_dataset("b", owner=owner)
    old = access_request_submit(requester=analyst, dataset=old_ds, duration=DAYS)
    new = access_request_submit(requester=analyst, dataset=new_ds, duration=DAYS)
    AccessRequest.objects.filter(pk=old.pk).update(submitted_at=timezone.now() - 15 * DAYS)
    assert access_requests_expire_stale() == 1
    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.state, new.state) == (RequestState.EXPIRED, RequestState.PENDING)
    event = events(action="access_request.expired")[0]
    assert event.actor is None and "14 days" in event.reason


def test_failing_service_leaves_no_change_and_no_event(analyst, restricted_dataset, monkeypatch):
    """A crash after the request row was written rolls back the row and its event together."""
    import governance.services.requests as svc

    def boom(*a: Any, **k: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(svc.audit, "record", boom)
    with pytest.raises(RuntimeError):
        submit_restricted(analyst, restricted_dataset)
    assert not AccessRequest.objects.exists()
    assert not AuditEvent.objects.exists()


def test_named_columns_stay_a_list_even_when_all_are_named(analyst, owner, make_dataset):
    """A column added later must not fall under a grant nobody reviewed it for."""
    ds = make_dataset("orders", owner=owner, columns=("id", "amount"))
    req = access_request_submit(requester=analyst, dataset=ds, duration=DAYS, columns=list(ds.columns.all()))
    assert req.covered_columns == ["id", "amount"]


def test_restricted_whole_table_without_pii_is_still_a_column_list(analyst, owner, make_dataset):
    ds = make_dataset("payroll", classification="restricted", owner=owner, columns=("id", "total"))
    req = submit_restricted(analyst, ds)
    assert req.covered_columns == ["id", "total"]


def test_admin_level_names_all_or_nothing(analyst, owner, make_dataset):
    ds = make_dataset("orders", owner=owner, columns=("id", "amount"))
    with pytest.raises(PolicyViolation, match="name every column or none"):
        access_request_submit(
            requester=analyst, dataset=ds, level="admin", justification="x", duration=DAYS, columns=[ds.columns.first()]
        )
    req = access_request_submit(requester=analyst, dataset=ds, level="admin", justification="x", duration=DAYS)
    assert req.covered_columns == []


def test_auto_approval_is_recorded_as_the_system_not_the_requester(analyst, make_dataset):
    from audit import context

    with context.bind(context.RequestContext(request_id="r1", source="web", user_id=analyst.pk)):
        access_request_submit(requester=analyst, dataset=make_dataset("pub", classification="public"), duration=DAYS)
    auto = AuditEvent.objects.get(action="access_request.auto_approved")
    assert auto.actor is None and auto.actor_username == ""
    assert AuditEvent.objects.get(action="grant.created").actor is None
    assert AuditEvent.objects.get(action="access_request.submitted").actor == analyst


def test_acting_on_a_request_by_id_records_its_target_and_a_missing_id_is_clear(analyst, owner, restricted_dataset):
    req = submit_restricted(analyst, restricted_dataset)
    with pytest.raises(NotPermitted):
        access_request_approve(access_request=req.pk, approver=analyst)
    denied = AuditEvent.objects.get(outcome="denied")
    assert (denied.target_type, denied.target_id) == ("governance.accessrequest", str(req.pk))
    with pytest.raises(InvalidInput, match="no access request #999999"):
        access_request_approve(access_request=999999, approver=owner)


def test_plan_change_between_stages_is_a_conflict(analyst, owner, officer, gov_admin, make_dataset, classifications):
    """The officer must not approve something different from what the owner saw."""
    from governance.services.catalog import dataset_update

    ds = make_dataset("payroll", classification="restricted", owner=owner, columns=("id", "total"))
    req = submit_restricted(analyst, ds)
    access_request_approve(access_request=req, approver=owner)
    dataset_update(dataset=ds, actor=gov_admin, description="x")  # unrelated: the plan is the same
    from governance.models import Column

    Column.objects.create(dataset=ds, name="bonus", data_type="numeric", ordinal=3)  # the table changed
    with pytest.raises(ConflictError, match="changed after the dataset owner or steward stage"):
        access_request_approve(access_request=req, approver=officer)
    req.refresh_from_db()
    assert req.state == RequestState.PENDING and not Grant.objects.exists()
