"""Who may do what with data-subject requests (one definition, read by services, selectors and pages)."""

from __future__ import annotations

from typing import Any

from accounts.roles import is_governance_admin, is_privacy_officer
from governance.models import Dataset
from governance.policy import holds_dataset_perm, may_decide_tags


def _active(actor: Any) -> bool:
    return actor is not None and bool(getattr(actor, "is_active", False))


def handles_subject_requests(actor: Any) -> bool:
    """Privacy officers create, preview, approve and execute requests (superusers do not: separation
    of duties holds for platform admins too, as for access approvals)."""
    return _active(actor) and is_privacy_officer(actor)


def may_decide_identifiers(actor: Any, dataset: Dataset) -> bool:
    """Confirming a subject identifier follows the PII-tag rule: the dataset's owners and stewards,
    security officers and governance admins."""
    return _active(actor) and may_decide_tags(actor, dataset)


def may_set_handling(actor: Any, dataset: Dataset) -> bool:
    """The dataset's owners and stewards (and governance admins) say what a request does to it and
    declare its relationships."""
    if not _active(actor):
        return False
    if getattr(actor, "is_superuser", False) or is_governance_admin(actor):
        return True
    return holds_dataset_perm(actor, dataset, "steward_dataset")


def may_suggest(actor: Any) -> bool:
    """Reading a source's foreign keys and suggesting identifiers: privacy officers, governance admins."""
    if not _active(actor):
        return False
    return bool(getattr(actor, "is_superuser", False)) or is_governance_admin(actor) or is_privacy_officer(actor)
