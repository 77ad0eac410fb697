"""Who may do what in the quality app (one definition, read by services, selectors and pages)."""

from __future__ import annotations

from typing import Any

from accounts.roles import is_governance_admin
from governance.models import Dataset
from governance.policy import holds_dataset_perm


def may_define_checks(actor: Any, dataset: Dataset) -> bool:
    """The dataset's owner and stewards, governance admins (and superusers) define and run its checks."""
    if actor is None or not getattr(actor, "is_active", False):
        return False
    if getattr(actor, "is_superuser", False) or is_governance_admin(actor):
        return True
    return holds_dataset_perm(actor, dataset, "steward_dataset")
