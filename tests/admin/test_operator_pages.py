"""Operators see what is wrong: who may open the pages where provisioning jobs, overdue revocations,
drift findings and row history are, and who may act on them there.

The matrix pins the status every kind of signed-in person gets on each page, and which actions the
page offers them. Officers and governance admins act (retry a job; admins alone reconcile and repair,
which changes the targets); auditors read everything and act on nothing; requesters and owners get
a 403 (they follow their own requests and grants in the portal).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from governance.models import (
    DriftFinding,
    Grant,
    JobAction,
    JobStatus,
    Operation,
    OperationKind,
    ProvisioningJob,
    SourcePrincipal,
)

pytestmark = pytest.mark.django_db

ACTORS = ["analyst", "owner", "officer", "auditor", "gov_admin", "superuser"]


def row(*codes: int) -> dict[str, int]:
    return dict(zip(ACTORS, codes, strict=True))


OPERATORS = row(403, 403, 200, 200, 200, 200)

PAGES = [
    ("admin:governance_provisioningjob_changelist", None, "", OPERATORS),
    ("admin:governance_provisioningjob_changelist", None, "?overdue=revocations", OPERATORS),
    ("admin:governance_provisioningjob_change", "job", "", OPERATORS),
    ("admin:governance_driftfinding_changelist", None, "", OPERATORS),
    ("admin:governance_driftfinding_change", "finding", "", OPERATORS),
    ("admin:governance_sourceprincipal_changelist", None, "", OPERATORS),
    ("admin:governance_sourcehealth_changelist", None, "", OPERATORS),
    ("admin:pghistory_events_changelist", None, "", OPERATORS),
    ("admin:audit_auditevent_changelist", None, "", OPERATORS),
    ("admin:governance_operation_changelist", None, "", OPERATORS),
    ("admin:governance_operation_change", "operation", "", OPERATORS),
    ("admin:governance_operation_progress", "operation", "", OPERATORS),
]

# Which actions each changelist offers to whom.
ACTIONS = [
    ("admin:governance_provisioningjob_changelist", "retry_jobs", {"officer", "gov_admin", "superuser"}),
    ("admin:governance_driftfinding_changelist", "reconcile_and_fix", {"gov_admin", "superuser"}),
    ("admin:governance_datasource_changelist", "sync_catalog", {"gov_admin", "superuser"}),
]


@pytest.fixture
def people(analyst: Any, owner: Any, officer: Any, auditor: Any, gov_admin: Any, superuser: Any) -> dict[str, Any]:
    return {
        "analyst": analyst,
        "owner": owner,
        "officer": officer,
        "auditor": auditor,
        "gov_admin": gov_admin,
        "superuser": superuser,
    }


@pytest.fixture
def things(make_dataset: Any, analyst: Any, source: Any) -> dict[str, Any]:
    now = timezone.now()
    dataset = make_dataset("ledger", schema="finance")
    grant = Grant.objects.create(
        grantee_user=analyst, dataset=dataset, level="read", starts_at=now - dt.timedelta(days=2), ends_at=now
    )
    job = ProvisioningJob.objects.create(grant=grant, action=JobAction.REVOKE, status=JobStatus.FAILED, last_error="x")
    ProvisioningJob.objects.filter(pk=job.pk).update(queued_at=now - dt.timedelta(hours=2))
    finding = DriftFinding.objects.create(
        source=source,
        principal="gov_u_x",
        object_schema="finance",
        object_name="ledger",
        privilege="UPDATE",
        kind="unexpected",
        detail="unexpected UPDATE",
        found_at=now,
        run_id="00000000-0000-0000-0000-000000000001",
    )
    SourcePrincipal.objects.create(source=source, user=analyst, db_role="gov_u_analyst")
    operation = Operation.objects.create(kind=OperationKind.CATALOG_SYNC, source=source)
    return {"job": job, "finding": finding, "grant": grant, "operation": operation}


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    ("name", "arg", "query", "actor", "expected"),
    [
        pytest.param(name, arg, query, actor, codes[actor], id=f"{name}{query} as {actor}")
        for name, arg, query, codes in PAGES
        for actor in ACTORS
    ],
)
def test_operator_pages_answer_each_duty(
    people: dict[str, Any], things: dict[str, Any], name: str, arg: str | None, query: str, actor: str, expected: int
) -> None:
    url = reverse(name, args=[things[arg].pk] if arg else []) + query
    response = client_for(people[actor]).get(url)
    assert response.status_code == expected, (url, response.status_code)
    if name.endswith("provisioningjob_changelist") and query and expected == 200:
        # The overdue filter lists the failed revocation (access that should be gone).
        assert (
            f"Revoke grant #{things['grant'].pk}" in response.content.decode()
            or str(things["job"].pk) in response.content.decode()
        )


@pytest.mark.parametrize(("name", "action", "allowed"), ACTIONS)
def test_each_duty_is_offered_only_the_actions_it_may_take(
    people: dict[str, Any], things: dict[str, Any], name: str, action: str, allowed: set[str]
) -> None:
    for actor in ("officer", "auditor", "gov_admin", "superuser"):
        response = client_for(people[actor]).get(reverse(name))
        assert response.status_code == 200
        offered = f'value="{action}"' in response.content.decode()
        assert offered == (actor in allowed), (actor, action)


def test_an_auditor_posting_the_retry_action_changes_nothing(people: dict[str, Any], things: dict[str, Any]) -> None:
    job = things["job"]
    response = client_for(people["auditor"]).post(
        reverse("admin:governance_provisioningjob_changelist"),
        {"action": "retry_jobs", "_selected_action": [job.pk]},
    )
    assert response.status_code in (200, 302)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED


def test_an_officer_retries_a_failed_job_from_the_page(people: dict[str, Any], things: dict[str, Any]) -> None:
    job = things["job"]
    client_for(people["officer"]).post(
        reverse("admin:governance_provisioningjob_changelist"),
        {"action": "retry_jobs", "_selected_action": [job.pk]},
    )
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED


@pytest.mark.parametrize(
    ("actor", "sees"), [("analyst", False), ("owner", False), ("officer", True), ("auditor", True)]
)
def test_the_dashboard_points_operators_at_what_is_wrong(
    people: dict[str, Any], things: dict[str, Any], actor: str, sees: bool
) -> None:
    page = client_for(people[actor]).get(reverse("portal:dashboard")).content.decode()
    assert ("For operators" in page) == sees
    if sees:
        assert "revocations overdue" in page and "?overdue=revocations" in page
