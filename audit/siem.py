"""Every audit event, once committed, is also one JSON line on the `audit.siem` logger (structlog's
JSON renderer), for shipping to a SIEM (docs/operations.md). Events of a transaction that rolls back
are never written; the fields are the event's own, secrets already redacted by audit.record()."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import structlog

from .models import AuditEvent

_stdlib = logging.getLogger("audit.siem")
_render = structlog.processors.JSONRenderer(sort_keys=True)
# A record (its lines and the handler's newline) stays within PIPE_BUF (4,096 bytes on Linux): a
# write that size to a pipe is atomic, so processes sharing standard output never interleave lines.
RECORD_BYTES = 4_000


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
    """One JSON line per event. Lines are grouped into records of at most RECORD_BYTES (an event
    larger than that goes alone, as it always did): a record per event costs more than rendering it,
    and the stream is read line by line either way."""
    if not _stdlib.isEnabledFor(logging.INFO):
        return  # nothing is rendered for a logger that would drop it
    group: list[str] = []
    size = 0
    for event in events:
        line = str(_render(None, "info", {"event": "audit_event", **fields(event)}))
        length = len(line.encode()) + 1
        if group and size + length > RECORD_BYTES:
            _stdlib.info("\n".join(group))
            group, size = [], 0
        group.append(line)
        size += length
    if group:
        _stdlib.info("\n".join(group))


def emit_anchor(doc: dict[str, Any]) -> None:
    """The signed head of the chain (audit/anchors.py), as one `audit_anchor` line: the SIEM keeps a
    copy of every anchor outside the database, as the witnesses do."""
    if _stdlib.isEnabledFor(logging.INFO):
        _stdlib.info(str(_render(None, "info", {"event": "audit_anchor", **doc})))
