"""Every audit event, once committed, is also one JSON line on the `audit.siem` logger (structlog's
JSON renderer), for shipping to a SIEM (docs/operations.md). Events of a transaction that rolls back
are never written; the fields are the event's own, secrets already redacted by audit.record()."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import structlog

from .models import AuditEvent

_log = structlog.wrap_logger(
    logging.getLogger("audit.siem"),
    processors=[structlog.processors.JSONRenderer(sort_keys=True)],
)


def fields(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.pk,
        "occurred_at": event.occurred_at.isoformat(),
        "actor": event.actor_username or None,
        "actor_id": event.actor_id,
        "source": event.source,
        "ip": event.ip_address,
        "user_agent": event.user_agent,
        "request_id": event.request_id,
        "action": event.action,
        "outcome": event.outcome,
        "target": {"type": event.target_type, "id": event.target_id, "repr": event.target_repr},
        "changes": event.changes,
        "reason": event.reason,
        "metadata": event.metadata,
        "mac": event.mac,
    }


def emit(events: Iterable[AuditEvent]) -> None:
    for event in events:
        _log.info("audit_event", **fields(event))
