"""Who may call what: a signed-in user (session or token), and for a token, its scope.

The scope only narrows: a token never gives more than its user may do. What the user may see and
do is decided by the selectors (the queryset is the gate) and the services (policy, separation of
duties). Each view names the scope of each action in `scopes`; safe methods default to `read`.
"""

from __future__ import annotations

from typing import Any

from rest_framework import permissions
from rest_framework.request import Request

from accounts.models import ApiToken, TokenScope
from accounts.roles import is_governance_admin, sees_everything
from accounts.tokens import api_token_scope_denied


def required_scope(view: Any, request: Request) -> str | None:
    """The scope the call needs; None when any token may make it."""
    scopes: dict[str, str | None] = getattr(view, "scopes", {})
    action = getattr(view, "action", None)
    if action in scopes:
        return scopes[action]
    if request.method in permissions.SAFE_METHODS:
        return TokenScope.READ
    return scopes.get("*", TokenScope.ADMIN)


class TokenScopes(permissions.BasePermission):
    """Signed in; and when the call carries a token, the token holds the action's scope (a refusal
    is audited: it is either a misconfigured pipeline or a stolen token probing)."""

    message = "Your token lacks the scope this call needs."

    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        token = request.auth
        if not isinstance(token, ApiToken):
            return True  # session: the portal's own pages
        if hasattr(view, "action") and view.action is None:
            return True  # a method the endpoint does not have: its 405 comes next, not a scope refusal
        scope = required_scope(view, request)
        if scope is None or token.has_scope(scope):
            return True
        self.message = f"This token lacks the '{scope}' scope (it has: {', '.join(token.scopes)})."
        api_token_scope_denied(token=token, scope=scope, method=request.method or "", path=request.path)
        return False


class ReadOnlyForAuditors(permissions.BasePermission):
    """Auditors (and anyone who only reads everything) write nothing, whatever their token says."""

    message = "Auditors read everything and write nothing."

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        from accounts.roles import is_auditor

        return not is_auditor(request.user)


class GovernanceAdminOnly(permissions.BasePermission):
    """Registering sources and the like: governance admins; everything else about them is read-only
    for those who see everything (officers, auditors)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return is_governance_admin(request.user) or sees_everything(request.user)
        return is_governance_admin(request.user)
