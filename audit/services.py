"""`record()`: the one way an audit event is written."""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import io
import json
import uuid
from collections.abc import Mapping
from typing import Any

from django.contrib.auth import get_user_model
from django.db import models, transaction
from django.utils import timezone
from psycopg2.extras import Json

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
    connection = transaction.get_connection()
    # The MAC covers the event's id (its position: a copy under another id is not genuine), so the
    # id is drawn from the table's sequence before the insert: one more round trip per event. A
    # block of ids cached per process would save it but hand out ids far from commit order, which
    # the sealer's late window and the reading of the trail rely on.
    with connection.cursor() as cur:
        cur.execute(NEXT_ID, [AuditEvent._meta.db_table])
        event.pk = cur.fetchone()[0]
    event.mac = chain.event_mac(chain.row_of(event), event.pk)
    if connection.in_atomic_block:
        event.save(force_insert=True)
    else:
        with transaction.atomic():
            event.save(force_insert=True)
    transaction.on_commit(lambda: siem.emit([event]))
    return event


# Sequence values are never rolled back: an id drawn by a transaction that rolls back is a gap,
# as it always was with the column's default.
NEXT_ID = "SELECT nextval(pg_get_serial_sequence(%s, 'id'))"
NEXT_IDS = "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)"


def record_many(events: list[AuditEvent]) -> list[AuditEvent]:
    """Write events made by :func:`build` with one COPY, in the caller's transaction (a batch of
    provisioning jobs records thousands of outcomes at once).

    COPY, not a multi-row INSERT: Django's bulk_create spends ~70 us per event compiling and
    adapting parameters, several times what the server needs to store the row. The ids are drawn
    from the table's sequence first (one round trip), so the events come back saved, with their
    ids, exactly as bulk_create returned them, and each MAC is computed over its event's id. What is
    stored is what ``save()`` would store (pinned, byte for byte and MAC for MAC, by
    tests/audit/test_chain.py).
    """
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        raise RuntimeError("record_many() must run inside the transaction of the change it records")
    if not events:
        return events
    columns, converters = _copy_plan(connection)
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    buffer = io.StringIO()
    with connection.cursor() as cur:
        cur.execute(NEXT_IDS, [AuditEvent._meta.db_table, len(events)])
        ids = [row[0] for row in cur.fetchall()]
        for pk, event in zip(ids, events, strict=True):
            event.mac = chain.event_mac(chain.row_of(event), pk)
            buffer.write(str(pk))
            for attname, convert in converters:
                buffer.write("\t")
                buffer.write(convert(getattr(event, attname)))
            buffer.write("\n")
        buffer.seek(0)
        cur.cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN", buffer)
    for pk, event in zip(ids, events, strict=True):
        event.pk = pk
        event._state.adding = False
        event._state.db = connection.alias
    transaction.on_commit(lambda: siem.emit(events))
    return events


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
NULL = "\\N"


def _copy_text(value: Any) -> str:
    """One value in COPY's text format: \\N for NULL, backslash escapes for the separators."""
    if value is None:
        return NULL
    if isinstance(value, Json):
        value = value.dumps(value.adapted)
    elif isinstance(value, dt.datetime):
        value = value.isoformat()
    elif isinstance(value, bool):
        value = "t" if value else "f"
    return str(value).translate(_COPY_ESCAPES)


def _copy_plan(connection: Any) -> tuple[str, list[tuple[str, Any]]]:
    """The column list, and one converter per field to COPY text. Text columns (most of an event)
    skip Django's per-value preparation, which would cost more than the server spends storing the
    row; any other field goes through its own ``get_db_prep_save``."""
    fields = [f for f in AuditEvent._meta.concrete_fields if not f.primary_key]
    converters: list[tuple[str, Any]] = []
    for f in fields:
        if isinstance(f, (models.CharField, models.TextField)) and not f.null:
            converters.append((f.attname, _text))
        elif isinstance(f, models.JSONField):
            converters.append((f.attname, functools.partial(_json, f.encoder)))
        elif isinstance(f, (models.ForeignKey, models.GenericIPAddressField)):
            converters.append((f.attname, _text_or_null))
        elif isinstance(f, models.DateTimeField):
            converters.append((f.attname, _aware_datetime))
        else:
            converters.append((f.attname, functools.partial(_prepared, f, connection)))
    columns = ", ".join(connection.ops.quote_name(c) for c in ["id", *(f.column for f in fields)])
    return columns, converters


def _text(value: Any) -> str:
    if value is None:  # save() would fail on the NOT NULL column; so must COPY, not store "None"
        raise ValueError("an audit event's text field is None")
    return str(value).translate(_COPY_ESCAPES)


def _text_or_null(value: Any) -> str:
    # "" is NULL for an inet (Django's adapt_ipaddressfield_value) and cannot be a foreign key.
    return NULL if value is None or value == "" else str(value).translate(_COPY_ESCAPES)


def _json(encoder: Any, value: Any) -> str:
    return NULL if value is None else json.dumps(value, cls=encoder).translate(_COPY_ESCAPES)


def _aware_datetime(value: Any) -> str:
    if value is None:
        return NULL
    if timezone.is_naive(value):
        raise ValueError("audit events carry aware datetimes (USE_TZ)")
    return str(value.isoformat())


def _prepared(field: Any, connection: Any, value: Any) -> str:
    return _copy_text(field.get_db_prep_save(value, connection))


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
    """An unsaved audit event with the current context (who, from where, which request). Its MAC
    is computed when it is written (`record`, `record_many`), once its id is known."""
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
        metadata=to_jsonable({**dict(metadata or {}), **dict(ctx.marks)}),
    )
    return event
