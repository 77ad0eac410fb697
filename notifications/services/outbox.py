"""Writing to the outbox: what the services that cause events call, inside their transaction.

`notify()` is one INSERT (two for an event that carries a de-duplication key: none on a hot path),
and a message to the notifications worker once the transaction commits. If the transaction rolls
back, the row and the message go with it; if the broker is down at commit, the row is there and the
outbox sweeper (services/delivery.py) finds it. Nothing is sent here: never inside a request.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction

from .. import publishing
from ..models import Kind, Notification

log = logging.getLogger(__name__)

_INSERT_ONCE = (
    "INSERT INTO {table} (kind, created_at, actor_id, context, dedup_key, note)"
    " VALUES (%s, now(), %s, %s::jsonb, %s, '') ON CONFLICT (dedup_key) DO NOTHING RETURNING id"
)


def notify(kind: Kind | str, *, actor: Any = None, dedup_key: str | None = None, **context: Any) -> int | None:
    """Record that `kind` happened, with `context` (ids and plain values), in the caller's transaction.

    `actor` is whoever caused it: they are never told about their own act. With `dedup_key`, an
    event already recorded under that key is not recorded again (returns None).
    """
    if not connection.in_atomic_block:
        raise RuntimeError("notify() must run inside the transaction of the event it announces")
    actor_id = actor.pk if actor is not None and getattr(actor, "pk", None) else None
    if dedup_key is None:
        pk: int | None = Notification.objects.create(kind=kind, actor_id=actor_id, context=context).pk
    else:
        with connection.cursor() as cur:
            cur.execute(
                _INSERT_ONCE.format(table=connection.ops.quote_name(Notification._meta.db_table)),
                [str(kind), actor_id, json.dumps(context, cls=DjangoJSONEncoder), dedup_key],
            )
            row = cur.fetchone()
        pk = row[0] if row else None
    if pk is not None:
        transaction.on_commit(lambda: _publish(pk))
    return pk


def _publish(pk: int) -> None:
    try:
        publishing.deliver([pk])
    except Exception:  # the broker is down: the row is committed, the sweeper sends it
        log.exception("Could not publish notification %s; the outbox sweeper will send it", pk)
