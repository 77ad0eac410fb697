"""A small world for API tests: people in every duty, datasets, a pending request, a grant, a job,
a drift finding, and a token factory."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from accounts.tokens import api_token_create
from governance.models import (
    AccessRequest,
    Dataset,
    DataSource,
    DriftFinding,
    Grant,
    JobStatus,
    ProvisioningJob,
)
from governance.services.requests import access_request_approve, access_request_submit

DAYS = dt.timedelta(days=1)


@dataclass
class World:
    source: DataSource
    ledger: Dataset  # internal, owned by `owner`
    employees: Dataset  # restricted, owned by `owner`
    other: Dataset  # internal, owned by `other_owner`
    pending: AccessRequest  # analyst → ledger, waits for the owner
    granted: Grant  # analyst's active grant on other
    job: ProvisioningJob  # the failed job of that grant
    finding: DriftFinding
    users: dict[str, User]
    campaign: Any = None  # an open access review of other_owner's datasets
    review_item: Any = None  # its one item: the analyst's `granted`, reviewed by other_owner
    operation: Any = None  # a catalog sync of `source` the governance admin started (still queued)
    quality_check: Any = None  # the owner's completeness check on ledger.amount
    quality_run: Any = None  # a run of it (recorded, not measured: the world's source is not real)
    subject_request: Any = None  # a privacy officer's draft erasure request (docs/subjects.md)
    subject_identifier: Any = None  # a suggested subject identifier on ledger.id
    subject_relationship: Any = None  # ledger.id -> payments.id, declared


@pytest.fixture
def world(
    source: DataSource,
    make_dataset: Callable[..., Dataset],
    restricted_dataset: Dataset,
    analyst: User,
    owner: User,
    other_owner: User,
    officer: User,
    auditor: User,
    gov_admin: User,
) -> World:
    ledger = make_dataset("ledger", owner=owner, schema="finance")
    other = make_dataset("payments", owner=other_owner, schema="finance")
    pending = access_request_submit(requester=analyst, dataset=ledger, justification="close", duration=7 * DAYS)
    req = access_request_submit(requester=analyst, dataset=other, justification="audit", duration=7 * DAYS)
    access_request_approve(access_request=req, approver=other_owner)
    granted = Grant.objects.get(source_request=req)
    job = ProvisioningJob.objects.create(grant=granted, action="apply", status=JobStatus.FAILED, last_error="boom")
    finding = DriftFinding.objects.create(
        source=source,
        principal="gov_u_x",
        object_schema="finance",
        object_name="ledger",
        privilege="UPDATE",
        kind="unexpected",
        detail="unexpected UPDATE",
        found_at=dt.datetime.now(dt.UTC),
        run_id="00000000-0000-0000-0000-000000000001",
    )
    from governance.models import Role, RoleMembership

    role = Role.objects.create(name="Finance analysts", slug="finance-analysts", owner=owner)
    RoleMembership.objects.create(role=role, user=analyst, added_by=owner)
    users = {
        "analyst": analyst,
        "owner": owner,
        "other_owner": other_owner,
        "officer": officer,
        "auditor": auditor,
        "gov_admin": gov_admin,
    }
    from reviews.models import ReviewItem
    from reviews.services.campaigns import review_campaign_create, review_campaign_start

    campaign = review_campaign_create(actor=officer, name="Payments review", dataset_owner=other_owner)
    review_campaign_start(campaign=campaign, actor=officer)
    review_item = ReviewItem.objects.get(campaign=campaign)
    from governance.models import Operation, OperationKind

    operation = Operation.objects.create(kind=OperationKind.CATALOG_SYNC, source=source, started_by=gov_admin)
    from quality.models import QualityRun
    from quality.services.checks import quality_check_create

    quality_check = quality_check_create(
        actor=owner, dataset=ledger, name="amount present", kind="completeness", column="amount"
    )
    now = dt.datetime.now(dt.UTC)
    quality_run = QualityRun.objects.create(
        dataset=ledger, trigger="schedule", started_at=now, finished_at=now, duration_ms=1.0, status="passing"
    )
    from django.contrib.auth.models import Group

    from accounts.roles import PRIVACY_OFFICERS, ensure_portal_groups
    from subjects.services.requests import subject_request_create

    if not Group.objects.filter(name=PRIVACY_OFFICERS).exists():
        ensure_portal_groups()
    privacy_officer = User.objects.create_user(username="privacy_officer", email="privacy@example.com")
    privacy_officer.groups.add(Group.objects.get(name=PRIVACY_OFFICERS))
    subject_request = subject_request_create(
        actor=privacy_officer, kind="erasure", identifiers={"email": "someone@example.com"}
    )
    from subjects.models import Relationship, SubjectIdentifier

    subject_identifier = SubjectIdentifier.objects.create(column=ledger.columns.get(name="id"), kind="customer_id")
    subject_relationship = Relationship.objects.create(
        dataset=ledger, columns=["id"], referenced=other, referenced_columns=["id"], origin="declared"
    )
    return World(
        source,
        ledger,
        restricted_dataset,
        other,
        pending,
        granted,
        job,
        finding,
        users,
        campaign,
        review_item,
        operation,
        quality_check,
        quality_run,
        subject_request,
        subject_identifier,
        subject_relationship,
    )


# Every scope but SCIM's: the sweeps (schemathesis, JSON depth, body size) reach every route, the
# policy-as-code routes included (they need their own scopes, docs/policy-as-code.md#api).
ALL_SCOPES = "read,request,approve,admin,policy:read,policy:apply"


@pytest.fixture
def token_for() -> Callable[..., str]:
    def make(user: User, scopes: str = ALL_SCOPES) -> str:
        return api_token_create(user=user, scopes=scopes, name="test").secret

    return make


@pytest.fixture
def api(token_for: Callable[..., str]) -> Callable[..., APIClient]:
    """An API client authenticated with a fresh token of `user` (anonymous when `user` is None)."""

    def make(user: User | None, scopes: str = ALL_SCOPES) -> APIClient:
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user, scopes)}")
        return client

    return make


def error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])
