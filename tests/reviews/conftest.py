"""A review world: a Restricted and an Internal dataset owned by `owner`, with a steward, grants in
force (the analyst's, the owner's own, a role's), an ended grant, and a role membership."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.utils import timezone
from guardian.shortcuts import assign_perm

from accounts.models import User
from accounts.roles import REQUESTERS
from governance.models import Dataset, Grant, GrantStatus, Role, RoleMembership
from tests.provisioning.conftest import target_dbname, target_source  # noqa: F401 - the real target (test_on_target.py)

DAY = dt.timedelta(days=1)


def make_grant(dataset: Dataset, *, user: User | None = None, role: Role | None = None, age_days: int = 100,
               days_left: int = 60, level: str = "read") -> Grant:  # fmt: skip
    now = timezone.now()
    return Grant.objects.create(
        grantee_user=user, grantee_role=role, dataset=dataset, level=level, status=GrantStatus.ACTIVE,
        starts_at=now - age_days * DAY, ends_at=now + days_left * DAY, reason="arranged",
    )  # fmt: skip


@dataclass
class World:
    owner: User
    steward: User
    analyst: User
    officer: User
    restricted: Dataset
    internal: Dataset
    role: Role
    analyst_grant: Grant  # restricted, analyst
    owner_grant: Grant  # restricted, the owner's own access
    role_grant: Grant  # internal, the role
    young_grant: Grant  # internal, analyst, started 5 days ago
    membership: RoleMembership  # analyst in the role


@pytest.fixture
def review_world(
    make_dataset: Callable[..., Dataset], make_user: Callable[..., User], owner: User, analyst: User, officer: User,
) -> World:  # fmt: skip
    steward = make_user("steward", REQUESTERS)
    restricted = make_dataset("salaries", classification="restricted", owner=owner, schema="hr")
    internal = make_dataset("orders", classification="internal", owner=owner)
    for ds in (restricted, internal):
        assign_perm("steward_dataset", steward, ds)
    role_owner = make_user("role_owner", REQUESTERS)
    role = Role.objects.create(name="Finance analysts", slug="finance-analysts", owner=role_owner)
    membership = RoleMembership.objects.create(role=role, user=analyst, starts_at=timezone.now() - 200 * DAY)
    world = World(
        owner=owner, steward=steward, analyst=analyst, officer=officer, restricted=restricted, internal=internal,
        role=role, analyst_grant=make_grant(restricted, user=analyst), owner_grant=make_grant(restricted, user=owner),
        role_grant=make_grant(internal, role=role), young_grant=make_grant(internal, user=analyst, age_days=5),
        membership=membership,
    )  # fmt: skip
    # Ended long ago: never in scope.
    make_grant(restricted, user=steward, age_days=100, days_left=-10)
    return world


def campaign_of(actor: Any, **fields: Any) -> Any:
    from reviews.services.campaigns import review_campaign_create

    return review_campaign_create(actor=actor, name=fields.pop("name", "Q4 review"), **fields)
