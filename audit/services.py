"""`record()`: the one way an audit event is written."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Mapping
from typing import Any

from django.contrib.auth import get_user_model
from django.db import models, transaction
from django.utils import timezone

from . import chain, context, siem
from .models import AuditEvent, Outcome

REDACTED = "[redacted]"
# Any key containing one of these words is never written to the audit trail in clear.
SECRET_KEY_WORDS = ("password", "secret", "token", "credential", "private_key", "api_key")


def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in SECRET_KEY_WORDS)


def to_jsonable(value: Any) -> Any:
    """Model instances become their pk, dates ISO strings; containers recurse."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, models.Model):
        return value.pk
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): (REDACTED if _is_secret_key(str(k)) else to_jsonable(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [to_jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, (set, frozenset)) else items
    return str(value)


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[Any]]:
    """{field: [before, after]} for the fields that changed, secrets redacted."""
    out: dict[str, list[Any]] = {}
    for key in sorted(set(before) | set(after)):
        old, new = to_jsonable(before.get(key)), to_jsonable(after.get(key))
        if old != new:
            out[key] = [REDACTED, REDACTED] if _is_secret_key(key) else [old, new]
    return out


def snapshot(instance: models.Model, fields: list[str]) -> dict[str, Any]:
    """Plain values of the given fields, for before/after diffs."""
    values: dict[str, Any] = {}
    for name in fields:
        field = instance._meta.get_field(name)
        attname = getattr(field, "attname", name)
        values[name] = getattr(instance, attname)
    return values


class _Unset:
    def __repr__(self) -> str:
        return "<from request context>"


FROM_CONTEXT: Any = _Unset()


def record(
    *,
    action: str,
    actor: Any = FROM_CONTEXT,
    target: models.Model | None = None,
    target_type: str = "",
    target_id: str | int = "",
    target_repr: str = "",
    changes: Mapping[str, Any] | None = None,
    reason: str = "",
    outcome: str = Outcome.SUCCESS,
    metadata: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Write one audit event in the caller's transaction.

    Call it inside the service's `transaction.atomic()` block for successful changes, so that the
    change and its event commit or roll back together. For refused attempts call it after the
    block that raised has rolled back (see `governance.services.common.refusal_recorded`).
    """
    event = build(
        action=action,
        actor=actor,
        target=target,
        target_type=target_type,
        target_id=target_id,
        target_repr=target_repr,
        changes=changes,
        reason=reason,
        outcome=outcome,
        metadata=metadata,
    )
    if transaction.get_connection().in_atomic_block:
        event.save()
    else:
        with transaction.atomic():
            event.save()
    transaction.on_commit(lambda: siem.emit([event]))
    return event


def record_many(events: list[AuditEvent]) -> list[AuditEvent]:
    """Write events made by :func:`build` in one statement, in the caller's transaction (a batch of
    provisioning jobs records thousands of outcomes at once)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("record_many() must run inside the transaction of the change it records")
    saved = AuditEvent.objects.bulk_create(events, batch_size=1_000)
    transaction.on_commit(lambda: siem.emit(saved))
    return saved


def build(
    *,
    action: str,
    actor: Any = FROM_CONTEXT,
    target: models.Model | None = None,
    target_type: str = "",
    target_id: str | int = "",
    target_repr: str = "",
    changes: Mapping[str, Any] | None = None,
    reason: str = "",
    outcome: str = Outcome.SUCCESS,
    metadata: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """An unsaved audit event with the current context (who, from where, which request)."""
    ctx = context.current()
    # actor=None means "the system" (auto-approval, expiry) and stays None even inside a web
    # request; only a caller that says nothing gets the signed-in user of the request.
    if actor is FROM_CONTEXT:
        actor = get_user_model().objects.filter(pk=ctx.user_id).first() if ctx.user_id is not None else None
    if target is not None:
        target_type = target_type or target._meta.label_lower
        target_id = target_id or target.pk or ""
        target_repr = target_repr or str(target)
    event = AuditEvent(
        occurred_at=timezone.now(),
        actor=actor if actor is not None and actor.pk else None,
        actor_username=getattr(actor, "username", "") if actor is not None else "",
        source=ctx.source,
        ip_address=ctx.ip,
        user_agent=ctx.user_agent,
        request_id=ctx.request_id,
        action=action,
        outcome=outcome,
        target_type=target_type,
        target_id=str(target_id),
        target_repr=target_repr[:300],
        changes={
            str(k): ([REDACTED, REDACTED] if _is_secret_key(str(k)) else to_jsonable(v))
            for k, v in (changes or {}).items()
        },
        reason=reason,
        metadata=to_jsonable(dict(metadata or {})),
    )
    event.mac = chain.event_mac(chain.row_of(event))
    return event
