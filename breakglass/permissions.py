"""Who may do what in the break-glass app (one definition, read by services, selectors and pages)."""

from __future__ import annotations

from typing import Any

from accounts.roles import is_governance_admin, is_security_officer


def may_set_policy(actor: Any) -> bool:
    """Security officers and governance admins set the break-glass policy of a classification."""
    if actor is None or not getattr(actor, "is_active", False):
        return False
    return bool(getattr(actor, "is_superuser", False)) or is_security_officer(actor) or is_governance_admin(actor)
