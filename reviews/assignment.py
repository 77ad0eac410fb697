"""Who reviews an item, and who else may: the one home of the reviewer rules (docs/reviews.md).

- a grant: the dataset's owner, else a steward of the dataset (`steward_dataset` object permission,
  a person's or their group's), else a security officer;
- a role membership: the role's owner, else a security officer;
- nobody reviews access that reaches them (separation of duties, the same rule as approvals:
  `governance.policy.separation_refusal`): such a candidate is skipped and the next one in that
  order reviews.

Eligible for a delegation or an escalation: any candidate of the item (owner, stewards, security
officers; for a membership the role's owner and security officers) that separation of duties does
not exclude.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth import get_user_model
from guardian.shortcuts import get_users_with_perms

from accounts.roles import SECURITY_OFFICERS, is_governance_admin, is_security_officer
from governance.models import Dataset, Role
from governance.policy import separation_refusal

from .models import AssignedVia, ReviewItem


def own_access_refusal(user: Any, item: ReviewItem) -> str | None:
    """Why `user` may not review `item` because the access reaches them, or None."""
    if user is None or not getattr(user, "is_active", False):
        return "Only an active user can review access."
    if item.membership_id is not None:
        if user.pk == item.subject_user_id:
            return "You cannot review your own role membership (separation of duties)."
        return None
    return separation_refusal(
        user=user, requester_id=None, grantee_user_id=item.subject_user_id, grantee_role_id=item.subject_role_id
    )


class Candidates:
    """The reviewer candidates, read once per campaign start (stewards per dataset, officers)."""

    def __init__(self) -> None:
        self._stewards: dict[int, list[Any]] = {}
        self._officers: list[Any] | None = None
        self._role_owners: dict[int, Any] = {}

    def officers(self) -> list[Any]:
        if self._officers is None:
            self._officers = list(
                get_user_model()
                .objects.filter(groups__name=SECURITY_OFFICERS, is_active=True)
                .distinct()
                .order_by("pk")
            )
        return self._officers

    def stewards(self, dataset: Dataset) -> list[Any]:
        if dataset.pk not in self._stewards:
            people = get_users_with_perms(
                dataset, only_with_perms_in=["steward_dataset"], with_group_users=True, with_superusers=False
            )
            self._stewards[dataset.pk] = [
                p
                for p in people.filter(is_active=True).distinct().order_by("pk")  # type: ignore[union-attr]
                if p.pk != dataset.owner_id
            ]
        return self._stewards[dataset.pk]

    def ordered(self, item: ReviewItem) -> list[tuple[Any, str]]:
        """Every candidate of the item, in the order of the rules, with how they came to it."""
        found: list[tuple[Any, str]] = []
        if item.membership_id is not None:
            role: Role | None = item.subject_role
            if role is not None and role.owner is not None and role.owner.is_active:
                found.append((role.owner, AssignedVia.ROLE_OWNER))
        else:
            dataset = item.dataset
            assert dataset is not None
            if dataset.owner is not None and dataset.owner.is_active:
                found.append((dataset.owner, AssignedVia.OWNER))
            found += [(p, AssignedVia.STEWARD) for p in self.stewards(dataset)]
        found += [(p, AssignedVia.OFFICER) for p in self.officers()]
        return found

    def first(self, item: ReviewItem, *, skip: Iterable[int] = ()) -> tuple[Any, str] | tuple[None, str]:
        """The reviewer of the item: the first candidate that separation of duties allows."""
        skipped = set(skip)
        for person, via in self.ordered(item):
            if person.pk not in skipped and own_access_refusal(person, item) is None:
                return person, via
        return None, AssignedVia.OFFICER


def eligible_refusal(user: Any, item: ReviewItem) -> str | None:
    """Why `user` may not be given `item` (delegation), or None."""
    if refusal := own_access_refusal(user, item):
        return refusal
    if any(person.pk == user.pk for person, _ in Candidates().ordered(item)):
        return None
    return (
        f"{user.username} cannot review this access: reviewers are the dataset's owner and stewards "
        "(the role's owner for a membership) and security officers."
    )


def escalation_target(item: ReviewItem, candidates: Candidates) -> Any:
    """The security officer an undecided item goes to at the deadline (not its current reviewer,
    never the holder of the access); None when there is none."""
    for person in candidates.officers():
        if person.pk != item.reviewer_id and own_access_refusal(person, item) is None:
            return person
    return None


def may_manage_campaigns(user: Any) -> bool:
    """Security officers and governance admins create, start, close campaigns and delegate items."""
    return bool(user is not None and (is_security_officer(user) or is_governance_admin(user)))
