"""API tokens: creation (shown once), revocation and checking, each audited.

Services in the house style: keyword arguments, one transaction, the audit event inside it. The
REST framework authentication class lives in `accounts.authentication`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from audit.models import Outcome
from governance.errors import ConflictError, InvalidInput, NotPermitted

from .models import ApiToken, TokenScope, User

PREFIX = "gov"
_TOKEN = re.compile(rf"^{PREFIX}_([a-z0-9]{{12}})_([A-Za-z0-9_-]{{43}})$")
_DURATION = re.compile(r"^(\d+)([dhm])$")
LAST_USED_EVERY = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str  # the whole token: shown once, never stored


def digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def parse_duration(text: str) -> dt.timedelta:
    """'30d', '12h', '45m' → a timedelta (what `--expires-in` accepts)."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) <= 0:
        raise InvalidInput(f"Invalid duration {text!r}: use a positive number followed by d, h or m, e.g. 30d.")
    amount, unit = int(match.group(1)), match.group(2)
    return {"d": dt.timedelta(days=amount), "h": dt.timedelta(hours=amount), "m": dt.timedelta(minutes=amount)}[unit]


def parse_scopes(text: str | list[str]) -> list[str]:
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    unknown = sorted(set(items) - set(TokenScope.values))
    if unknown or not items:
        raise InvalidInput(
            f"Unknown scope(s) {', '.join(unknown)}." if unknown else "At least one scope is needed.",
            field="scopes",
            allowed=list(TokenScope.values),
        )
    return sorted(set(items), key=list(TokenScope.values).index)


def api_token_create(
    *, user: User, scopes: list[str] | str, name: str = "", expires_in: dt.timedelta | None = None, actor: Any = None
) -> IssuedToken:
    """Issue a token for `user`; the returned secret is the only copy there will ever be."""
    scope_list = parse_scopes(scopes)
    lifetime = expires_in or dt.timedelta(days=settings.API_TOKEN_DEFAULT_DAYS)
    if lifetime > dt.timedelta(days=settings.API_TOKEN_MAX_DAYS):
        raise InvalidInput(
            f"Tokens live at most {settings.API_TOKEN_MAX_DAYS} days.",
            field="expires_in",
            max_days=settings.API_TOKEN_MAX_DAYS,
        )
    if not user.is_active:
        raise NotPermitted(f"{user.username} is inactive: no token can be issued.")
    key_id = secrets.token_hex(6)
    secret = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user,
            name=name[:100] or f"token for {user.username}",
            key_id=key_id,
            digest=digest(secret),
            scopes=scope_list,
            created_by=actor if getattr(actor, "pk", None) else None,
            expires_at=timezone.now() + lifetime,
        )
        audit.record(
            action="api_token.created",
            actor=actor,
            target=token,
            metadata={"user": user.username, "scopes": scope_list, "expires_at": token.expires_at},
        )
    return IssuedToken(token=token, secret=secret)


def api_token_revoke(*, token: ApiToken, actor: Any, reason: str = "") -> ApiToken:
    from governance.services.common import refusal_recorded

    with refusal_recorded(action="api_token.revoke", actor=actor, target=token), transaction.atomic():
        locked = ApiToken.objects.select_for_update().get(pk=token.pk)
        if locked.revoked_at is not None:
            raise ConflictError(f"Token {locked.key_id} is already revoked.", state="revoked")
        locked.revoked_at = timezone.now()
        locked.revoked_by = actor if getattr(actor, "pk", None) else None
        locked.save(update_fields=["revoked_at", "revoked_by"])
        audit.record(action="api_token.revoked", actor=actor, target=locked, reason=reason)
    return locked


def api_token_check(raw: str) -> ApiToken | None:
    """The usable token `raw` names, or None (malformed, unknown, wrong secret, revoked, expired)."""
    match = _TOKEN.match(raw)
    if not match:
        return None
    token = ApiToken.objects.usable().select_related("user").filter(key_id=match.group(1)).first()
    if token is None or not hmac.compare_digest(token.digest, digest(raw)):
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_EVERY:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)  # at most once a minute: no write per call
        token.last_used_at = now
    return token


def api_token_scope_denied(*, token: ApiToken, scope: str, method: str, path: str) -> None:
    """Record a call refused for want of a scope (a misconfigured pipeline, or a stolen token probing)."""
    audit.record(
        action="api_token.scope_denied",
        actor=token.user,
        target=token,
        outcome=Outcome.DENIED,
        reason=f"Token {token.key_id} lacks the '{scope}' scope for {method} {path}.",
        metadata={"scopes": token.scopes, "needed": scope},
    )
