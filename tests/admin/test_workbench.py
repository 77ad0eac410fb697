"""The approval workbench in Django admin, driven through Django's test client (real sessions, CSRF
middleware on, real PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from governance.models import AccessRequest, Grant, RequestState

pytestmark = pytest.mark.django_db


# The column treatment rules inline of the classification page (none posted).
NO_TREATMENT_RULES = {"treatment_rules-TOTAL_FORMS": "0", "treatment_rules-INITIAL_FORMS": "0"}


def login(user: Any) -> Client:
    client = Client(HTTP_USER_AGENT="pytest-browser/1.0", REMOTE_ADDR="10.1.2.3")
    client.force_login(user)
    return client


def submit(client: Client, dataset: Any, **data: Any) -> Any:
    payload = {"dataset": dataset.pk, "level": "read", "duration_days": "14", "justification": "Board attrition pack"}
    payload.update(data)
    return client.post(reverse("admin:governance_accessrequest_submit"), payload)


def decide(client: Client, req: AccessRequest, decision: str, stage: str = "", comment: str = "") -> Any:
    return client.post(
        reverse("admin:governance_accessrequest_decide", args=[req.pk]),
        {"decision": decision, "stage": stage, "comment": comment},
        follow=True,
    )


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_restricted_flow_end_to_end_in_admin(analyst, owner, officer, restricted_dataset):
    analyst_client, owner_client, officer_client = login(analyst), login(owner), login(officer)

    response = submit(analyst_client, restricted_dataset)
    assert response.status_code == 302, response.content[:2000]
    req = AccessRequest.objects.get()
    assert req.requester == analyst and req.state == RequestState.PENDING

    # The owner's page shows the policy, the stages and the buttons.
    page = owner_client.get(reverse("admin:governance_accessrequest_change", args=[req.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert "Restricted" in html and "at most 30 days" in html
    assert "Approve dataset owner or steward stage" in html
    assert "Security officer" in html and "officer" in html

    response = decide(owner_client, req, "approve", stage="owner", comment="fine")
    assert "stage approved" in " ".join(messages_of(response))
    response = decide(officer_client, req, "approve", stage="security_officer")
    req.refresh_from_db()
    assert req.state == RequestState.APPROVED
    grant = Grant.objects.get(source_request=req)
    assert grant.grantee_user == analyst

    # Who, what, from where: the admin's request context is on each event.
    approved = AuditEvent.objects.get(action="access_request.approved")
    assert approved.actor == officer
    assert approved.source == "admin"
    assert approved.ip_address == "10.1.2.3"
    assert approved.user_agent == "pytest-browser/1.0"
    assert re.fullmatch(r"[0-9a-f]{32}", approved.request_id)
    assert response.redirect_chain  # followed back to the request page

    # The analyst sees the grant in the admin list.
    grants_page = analyst_client.get(reverse("admin:governance_grant_changelist"))
    assert "employees" in grants_page.content.decode()


@pytest.mark.parametrize(
    ("proxies", "forwarded", "request_id", "want_ip", "want_id"),
    [
        (0, "6.6.6.6", "req-abc-123", "10.1.2.3", None),  # no proxy: forgeable headers ignored
        (1, "6.6.6.6, 203.0.113.9", "req-abc-123", "203.0.113.9", "req-abc-123"),
        (2, "6.6.6.6, 203.0.113.9, 10.0.0.5", "bad id;drop", "203.0.113.9", None),
    ],
)
def test_client_ip_and_request_id_behind_proxies(
    settings, analyst, restricted_dataset, proxies, forwarded, request_id, want_ip, want_id
):
    settings.TRUSTED_PROXY_COUNT = proxies
    response = login(analyst).post(
        reverse("admin:governance_accessrequest_submit"),
        {"dataset": restricted_dataset.pk, "level": "read", "duration_days": "3", "justification": "x"},
        HTTP_X_REQUEST_ID=request_id,
        HTTP_X_FORWARDED_FOR=forwarded,
    )
    event = AuditEvent.objects.get(action="access_request.submitted")
    assert event.ip_address == want_ip
    assert event.request_id == (want_id or response["X-Request-ID"])
    if want_id is None:
        assert re.fullmatch(r"[0-9a-f]{32}", event.request_id)


def test_self_approval_refused_in_admin(owner, restricted_dataset):
    client = login(owner)
    submit(client, restricted_dataset)
    req = AccessRequest.objects.get()
    page = client.get(reverse("admin:governance_accessrequest_change", args=[req.pk])).content.decode()
    assert "You cannot decide this request" in page and "your own request" in page
    response = decide(client, req, "approve", stage="owner")
    assert any("your own request" in m for m in messages_of(response))
    req.refresh_from_db()
    assert req.state == RequestState.PENDING
    event = AuditEvent.objects.get(outcome="denied")
    assert (event.action, event.actor, event.source) == ("access_request.approve", owner, "admin")


def test_wrong_owner_refused_in_admin(analyst, other_owner, restricted_dataset):
    submit(login(analyst), restricted_dataset)
    req = AccessRequest.objects.get()
    # The other owner cannot even see the request: it is not on a dataset they own.
    client = login(other_owner)
    assert client.get(reverse("admin:governance_accessrequest_change", args=[req.pk])).status_code == 302
    response = client.post(
        reverse("admin:governance_accessrequest_decide", args=[req.pk]), {"decision": "approve", "stage": "owner"}
    )
    assert response.status_code == 404
    req.refresh_from_db()
    assert req.state == RequestState.PENDING


def test_wrong_owner_who_can_see_is_refused_with_message(analyst, other_owner, auditor, restricted_dataset):
    """An auditor sees every request but may not decide: refused with a message and a denied event."""
    submit(login(analyst), restricted_dataset)
    req = AccessRequest.objects.get()
    response = decide(login(auditor), req, "approve", stage="owner")
    assert any("not an owner or steward" in m for m in messages_of(response))
    assert AuditEvent.objects.get(outcome="denied").actor == auditor


def test_over_long_duration_is_a_form_error(analyst, restricted_dataset):
    response = submit(login(analyst), restricted_dataset, duration_days="45")
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert "at most 30 days" in errors["duration"][0]
    assert not AccessRequest.objects.exists()
    assert AuditEvent.objects.get(outcome="denied").action == "access_request.submit"


def test_missing_reason_is_a_form_error(analyst, restricted_dataset):
    response = submit(login(analyst), restricted_dataset, justification="")
    assert "requires a justification" in response.context["form"].errors["justification"][0]
    assert not AccessRequest.objects.exists()
    assert AuditEvent.objects.get(outcome="denied").action == "access_request.submit"


def test_deny_from_admin_needs_reason(analyst, owner, restricted_dataset):
    submit(login(analyst), restricted_dataset)
    req = AccessRequest.objects.get()
    client = login(owner)
    response = decide(client, req, "deny", stage="owner")
    assert any("Say why" in m for m in messages_of(response))
    decide(client, req, "deny", stage="owner", comment="Use the anonymised extract")
    req.refresh_from_db()
    assert req.state == RequestState.DENIED
    assert req.decision_reason == "Use the anonymised extract"


def test_bulk_approve_and_deny(analyst, owner, make_dataset):
    datasets = [make_dataset(f"t{i}", owner=owner) for i in range(3)]
    analyst_client = login(analyst)
    for ds in datasets:
        submit(analyst_client, ds)
    reqs = list(AccessRequest.objects.order_by("pk"))
    client = login(owner)
    url = reverse("admin:governance_accessrequest_changelist")
    # First POST shows the confirmation page, the second applies.
    page = client.post(url, {"action": "approve_selected", "_selected_action": [reqs[0].pk, reqs[1].pk]})
    assert page.status_code == 200 and b"You are about to approve" in page.content
    client.post(url, {"action": "approve_selected", "_selected_action": [reqs[0].pk, reqs[1].pk], "confirm": "yes"})
    client.post(url, {"action": "deny_selected", "_selected_action": [reqs[2].pk], "confirm": "yes", "comment": "dup"})
    states = [r.state for r in AccessRequest.objects.order_by("pk")]
    assert states == ["approved", "approved", "denied"]
    assert Grant.objects.count() == 2


def test_stale_stage_button_conflicts(analyst, owner, other_owner, restricted_dataset):
    """An owner who loaded the page before a colleague decided gets a conflict, not a second decision."""
    from guardian.shortcuts import assign_perm

    assign_perm("approve_access", other_owner, restricted_dataset)
    submit(login(analyst), restricted_dataset)
    req = AccessRequest.objects.get()
    decide(login(owner), req, "approve", stage="owner")
    response = decide(login(other_owner), req, "approve", stage="owner")
    assert any("someone decided it meanwhile" in m for m in messages_of(response))


def test_audit_admin_is_read_only_even_for_superuser(superuser, analyst, restricted_dataset):
    submit(login(analyst), restricted_dataset)
    event = AuditEvent.objects.earliest("id")
    client = login(superuser)
    assert client.get(reverse("admin:audit_auditevent_changelist")).status_code == 200
    assert client.get(reverse("admin:audit_auditevent_add")).status_code == 403
    assert client.get(reverse("admin:audit_auditevent_delete", args=[event.pk])).status_code == 403
    page = client.get(reverse("admin:audit_auditevent_change", args=[event.pk]))
    assert page.status_code == 200 and b'name="_save"' not in page.content
    response = client.post(reverse("admin:audit_auditevent_change", args=[event.pk]), {"action": "x"})
    assert response.status_code == 403
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.update(action="x")


def test_datasource_password_is_write_only(superuser, classifications):
    from governance import crypto
    from governance.models import DataSource

    client = login(superuser)
    response = client.post(
        reverse("admin:governance_datasource_add"),
        {
            "name": "payments",
            "kind": "postgresql",
            "host": "db.internal",
            "port": "5432",
            "database": "payments",
            "username": "portal",
            "password": "s3cr3t-canary-value",
            "sslmode": "verify-full",
            "include_schemas": "",
            "role_prefix": "gov_",
        },
    )
    assert response.status_code == 302, response.content[:3000]
    source = DataSource.objects.get(name="payments")
    assert crypto.decrypt(source.password_encrypted) == "s3cr3t-canary-value"
    page = client.get(reverse("admin:governance_datasource_change", args=[source.pk])).content.decode()
    assert "s3cr3t-canary-value" not in page and source.password_encrypted not in page
    event = AuditEvent.objects.get(action="datasource.created")
    assert "s3cr3t-canary-value" not in str(event.changes) and "s3cr3t" not in str(event.metadata)
    # Leaving the field empty keeps the stored password.
    client.post(
        reverse("admin:governance_datasource_change", args=[source.pk]),
        {
            "name": "payments",
            "kind": "postgresql",
            "host": "db2.internal",
            "port": "5432",
            "database": "payments",
            "username": "portal",
            "password": "",
            "sslmode": "verify-full",
            "include_schemas": "",
            "role_prefix": "gov_",
        },
    )
    source.refresh_from_db()
    assert source.host == "db2.internal"
    assert crypto.decrypt(source.password_encrypted) == "s3cr3t-canary-value"
    updated = AuditEvent.objects.get(action="datasource.updated")
    assert updated.changes == {"host": ["db.internal", "db2.internal"]}


def test_classification_edit_goes_through_service(superuser, classifications):
    client = login(superuser)
    c = classifications["confidential"]
    response = client.post(
        reverse("admin:governance_classification_change", args=[c.pk]),
        {
            "name": "Confidential",
            "description": c.description,
            "approval_stages": ["owner", "security_officer"],
            "min_duration_0": "4",
            "min_duration_1": "hours",
            "max_duration_0": "60",
            "max_duration_1": "days",
            "justification_required": "on",
            "allow_pii_access": "on",
            "terminate_sessions_on_revoke": "on",
            **NO_TREATMENT_RULES,
        },
    )
    assert response.status_code == 302
    c.refresh_from_db()
    assert c.max_duration_days == 60 and c.approval_stages == ["owner", "security_officer"]
    assert c.terminate_sessions_on_revoke
    assert c.min_duration == dt.timedelta(hours=4)
    event = AuditEvent.objects.get(action="classification.updated")
    assert event.changes["max_duration"] == [90 * 86400, 60 * 86400]  # seconds
    assert event.changes["min_duration"] == [3600, 4 * 3600]
    assert event.changes["terminate_sessions_on_revoke"] == [False, True]


def test_classification_durations_refused_in_words(superuser, classifications):
    c = classifications["confidential"]
    response = login(superuser).post(
        reverse("admin:governance_classification_change", args=[c.pk]),
        {
            "name": "Confidential",
            "description": c.description,
            "approval_stages": ["owner"],
            "min_duration_0": "3",
            "min_duration_1": "days",
            "max_duration_0": "36",
            "max_duration_1": "hours",
            "allow_pii_access": "on",
            **NO_TREATMENT_RULES,
        },
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["min_duration"] == ["The shortest duration (3 days) is longer than the longest (1 day 12 hours)."]
    c.refresh_from_db()
    assert c.max_duration_days == 90 and not AuditEvent.objects.filter(action="classification.updated").exists()


def test_every_policy_problem_is_reported_on_its_field(analyst, restricted_dataset):
    response = submit(login(analyst), restricted_dataset, justification="", duration_days="45")
    errors = response.context["form"].errors
    assert "requires a justification" in errors["justification"][0]
    assert "at most 30 days" in errors["duration"][0]
    assert not AccessRequest.objects.exists()
    denied = AuditEvent.objects.get(outcome="denied")
    assert "justification" in denied.reason and "30 days" in denied.reason


@pytest.mark.django_db(transaction=True)
def test_sync_action_on_unreachable_source_shows_the_failure_on_its_operation_page(superuser, classifications):
    from governance.models import DataSource

    source = DataSource.objects.create(name="gone", host="127.0.0.1", port=1, database="x", username="x")
    from governance.models import Operation
    from tests.provisioning.conftest import finish_operation

    client = login(superuser)
    response = client.post(
        reverse("admin:governance_datasource_changelist"),
        {"action": "sync_catalog", "_selected_action": [source.pk]},
    )
    operation = Operation.objects.get(source=source)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:governance_operation_change", args=[operation.pk])
    finish_operation(operation.pk)
    page = client.get(response["Location"]).content.decode()
    assert "Failed" in page and "Could not sync gone: " in page
    source.refresh_from_db()
    assert source.last_sync_error
    assert AuditEvent.objects.get(action="datasource.sync").outcome == "failed"
    assert AuditEvent.objects.get(action="operation.failed").actor == superuser


def test_group_membership_change_in_user_admin_is_audited(superuser, analyst):
    from django.contrib.auth.models import Group

    from accounts.roles import SECURITY_OFFICERS

    client = login(superuser)
    url = reverse("admin:accounts_user_change", args=[analyst.pk])
    form = client.get(url).context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and k != "password"}
    data.update(
        {
            "groups": [g.pk for g in analyst.groups.all()] + [Group.objects.get(name=SECURITY_OFFICERS).pk],
            "user_permissions": [],
            "date_joined_0": analyst.date_joined.strftime("%Y-%m-%d"),
            "date_joined_1": analyst.date_joined.strftime("%H:%M:%S"),
        }
    )
    for key in ("is_active", "is_staff", "is_superuser", "is_service_account"):
        if data.get(key):
            data[key] = "on"
        else:
            data.pop(key, None)
    data.pop("date_joined", None)
    data.pop("last_login", None)
    response = client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    event = AuditEvent.objects.get(action="user.updated")
    assert event.actor == superuser
    before, after = event.changes["groups"]
    assert SECURITY_OFFICERS not in before and SECURITY_OFFICERS in after


def test_governance_admin_cannot_grant_themselves_privileges(gov_admin, superuser, analyst):
    from django.contrib.auth.models import Group

    from accounts.roles import SECURITY_OFFICERS

    client = login(gov_admin)
    url = reverse("admin:accounts_user_change", args=[gov_admin.pk])
    page = client.get(url)
    form = page.context["adminform"].form
    assert not {"is_superuser", "groups", "user_permissions", "is_staff"} & set(form.fields)
    # A forged POST with the privileged fields changes nothing.
    client.post(
        url,
        {
            "username": gov_admin.username,
            "email": gov_admin.email,
            "is_active": "on",
            "is_superuser": "on",
            "groups": [Group.objects.get(name=SECURITY_OFFICERS).pk],
        },
    )
    gov_admin.refresh_from_db()
    assert not gov_admin.is_superuser
    assert not gov_admin.groups.filter(name=SECURITY_OFFICERS).exists()
    # Nor can they set an approver's password (impersonation).
    response = client.get(reverse("admin:auth_user_password_change", args=[analyst.pk]))
    assert response.status_code == 403


def test_refused_admin_save_is_a_message_and_the_denied_event_survives(gov_admin, analyst, make_user):
    from governance.models import RoleMembership
    from governance.services.roles import role_create, role_member_add

    role = role_create(actor=gov_admin, name="Analysts")
    role_member_add(role=role, user=analyst, actor=gov_admin)
    client = login(gov_admin)
    response = client.post(
        reverse("admin:governance_rolemembership_add"),
        {"role": role.pk, "user": analyst.pk, "ends_at_0": "", "ends_at_1": "", "reason": "again"},
        follow=True,
    )
    assert response.status_code == 200
    assert any("already a member" in m for m in messages_of(response))
    assert not any("successfully" in m for m in messages_of(response))
    assert RoleMembership.objects.count() == 1
    denied = AuditEvent.objects.get(outcome="denied")
    assert (denied.action, denied.actor, denied.source) == ("role.member_add", gov_admin, "admin")


def test_decide_with_an_unknown_stage_is_refused_not_a_500(analyst, owner, restricted_dataset):
    submit(login(analyst), restricted_dataset)
    req = AccessRequest.objects.get()
    response = decide(login(owner), req, "approve", stage="janitor")
    assert response.status_code == 200
    assert any("Unknown approval stage" in m for m in messages_of(response))
    req.refresh_from_db()
    assert req.state == RequestState.PENDING


def test_bulk_approve_uses_the_stage_shown_on_the_confirmation_page(analyst, owner, officer, restricted_dataset):
    from guardian.shortcuts import assign_perm

    assign_perm("approve_access", officer, restricted_dataset)
    submit(login(analyst), restricted_dataset)
    req = AccessRequest.objects.get()
    url = reverse("admin:governance_accessrequest_changelist")
    officer_client = login(officer)
    page = officer_client.post(url, {"action": "approve_selected", "_selected_action": [req.pk]})
    assert f'name="stage_{req.pk}" value="owner"' in page.content.decode()
    decide(login(owner), req, "approve", stage="owner")  # meanwhile, the owner decides the owner stage
    response = officer_client.post(
        url,
        {"action": "approve_selected", "_selected_action": [req.pk], "confirm": "yes", f"stage_{req.pk}": "owner"},
        follow=True,
    )
    assert any("someone decided it meanwhile" in m for m in messages_of(response))
    req.refresh_from_db()
    assert req.state == RequestState.PENDING and req.current_stage == "security_officer"
