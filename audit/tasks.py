"""The audit trail's periodic work: sealing new events into the chain, anchoring its head outside the
database, and verifying it."""

from __future__ import annotations

import logging

from celery import shared_task

from . import anchors, chain, partitions
from .context import task_context

log = logging.getLogger(__name__)

# Events this process already reported: the sealer finds them again every few seconds until an
# operator acts, and one error line per event is enough.
_reported: set[tuple[str, int]] = set()
_blocked: dict[str, str] = {}


@shared_task(name="audit.tasks.seal_audit_events")
def seal_audit_events() -> int:
    result = chain.seal_pending()
    for event_id in result.refused:
        if ("forged", event_id) not in _reported:
            _reported.add(("forged", event_id))
            log.error("audit event #%s has no valid MAC: written behind the portal (or a copy); not sealed", event_id)
    for event_id in result.late:
        if ("late", event_id) not in _reported:
            _reported.add(("late", event_id))
            log.error(
                "audit event #%s was already older than AUDIT_SEAL_MAX_DELAY_SECONDS when the chain's head was sealed: "
                "its seal was removed or it was slipped in; not sealed (see audit_accept_unsealed)",
                event_id,
            )
    if result.blocked and _blocked.get("last") != result.blocked:
        log.error("audit sealing stopped: %s", result.blocked)
    _blocked["last"] = result.blocked
    return result.sealed


@shared_task(name="audit.tasks.anchor_audit_trail")
def anchor_audit_trail() -> int:
    """The head, signed, to the SIEM stream and the witnesses; problems are logged and recorded."""
    with task_context("anchor_audit_trail"):
        return anchors.anchor_head().head


@shared_task(name="audit.tasks.verify_audit_trail")
def verify_audit_trail() -> bool:
    run, result, _ = chain.verify_and_record()
    for problem in result.first_by_kind():
        log.error("audit trail: %s", problem.message)
    return bool(run.ok)


@shared_task(name="audit.tasks.ensure_audit_partitions")
def ensure_audit_partitions() -> list[str]:
    """The current month's partition of the audit events and the next AUDIT_PARTITIONS_AHEAD."""
    with task_context("ensure_audit_partitions"):
        made = partitions.ensure_months()
    if made.moved_from_default:
        log.warning(
            "audit partitions: %s events had landed in the default partition and were moved to their month's",
            made.moved_from_default,
        )
    if made.waited:
        log.warning(
            "audit partitions: %s not created, the events table's lock was held too long (by a long export?); "
            "the next run tries again",
            ", ".join(made.waited),
        )
    return made.created
