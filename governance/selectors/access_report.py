"""The effective access report: who holds what on a source right now, and when they last used it.

One row per person and grant in force: a person's own grants, and each grant of a portal Role once
per member in force of that Role (`via` names the role); a Role with no member in force shows once
with no person. Officers, governance admins and auditors see every dataset of the source; a
dataset's owners and stewards see the datasets they decide on (the same rule as "who has access"
on a dataset's page). Read by the portal page (and its CSV) and the API; docs/usage.md.

Queries do not grow with rows: the grants of a page in one query (with their last-used facts and
their source's state), the members of the Roles among them in one more.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from accounts.roles import sees_everything

from ..errors import NotPermitted
from ..models import DataSource, Grant, RoleMembership
from .catalog import datasets_approvable_by
from .usage import LastUse, last_use_of

REFUSAL = "Only the dataset's owners and stewards, officers, admins and auditors see who has access."

CSV_HEADER = [
    "source",
    "dataset",
    "classification",
    "person",
    "via",
    "level",
    "columns",
    "grant",
    "starts_at",
    "ends_at",
    "last_use",
    "last_used_at",
    "used_as",
    "no_use_seen_since",
    "cannot_tell_reason",
    "flagged_unused",
]


@dataclass(frozen=True)
class AccessRow:
    grant: Grant
    person: Any  # a User, or None for a Role with no member in force
    via: str  # "direct", or "role <name>"
    last_use: LastUse

    def csv(self) -> list[str]:
        g, use = self.grant, self.last_use
        return [
            g.dataset.source.name,
            g.dataset.qualified_name,
            g.dataset.classification.name,
            self.person.username if self.person is not None else "",
            self.via,
            g.level,
            " ".join(g.columns),
            str(g.pk),
            g.starts_at.isoformat(),
            g.ends_at.isoformat(),
            use.text,
            use.last_used_at.isoformat() if use.last_used_at else "",
            use.used_as,
            use.since.isoformat() if use.since else "",
            use.reason,
            "yes" if use.flagged else "no",
        ]


def report_sources(user: Any) -> QuerySet[DataSource]:
    """The sources `user` may see a report of (everything, or those of the datasets they decide on)."""
    sources = DataSource.objects.select_related("usage").order_by("name")
    if sees_everything(user):
        return sources
    return sources.filter(datasets__in=datasets_approvable_by(user)).distinct()


def report_grants(user: Any, source: DataSource, *, now: dt.datetime | None = None) -> QuerySet[Grant]:
    """The grants in force on `source` that `user` may see in the report; NotPermitted when none
    could ever be (not an officer, admin, auditor, owner or steward of any of its datasets)."""
    grants = Grant.objects.active(now).filter(dataset__source=source)
    if not sees_everything(user):
        approvable = datasets_approvable_by(user).filter(source=source)
        if not approvable.exists():
            raise NotPermitted(REFUSAL)
        grants = grants.filter(dataset__in=approvable)
    return grants.select_related(
        "dataset__source__usage", "dataset__classification", "grantee_user", "grantee_role", "usage"
    ).order_by("dataset__schema", "dataset__name", "pk")


def report_rows(grants: Iterable[Grant], *, now: dt.datetime | None = None) -> Iterator[AccessRow]:
    """The rows of these grants (loaded by :func:`report_grants`), Role grants once per member."""
    at = now or timezone.now()
    grants = list(grants)
    role_ids = {g.grantee_role_id for g in grants if g.grantee_role_id}
    members: dict[int, list[Any]] = {}
    if role_ids:
        for membership in (
            RoleMembership.objects.active(at)
            .filter(role_id__in=role_ids)
            .select_related("user")
            .order_by("user__username")
        ):
            members.setdefault(membership.role_id, []).append(membership.user)
    for grant in grants:
        use = last_use_of(grant, now=at)
        if grant.grantee_role_id:
            via = f"role {grant.grantee_role.name}"  # type: ignore[union-attr]
            for person in members.get(grant.grantee_role_id, []) or [None]:
                yield AccessRow(grant, person, via, use)
        else:
            yield AccessRow(grant, grant.grantee_user, "direct", use)
