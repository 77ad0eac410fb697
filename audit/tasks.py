"""The audit trail's periodic work: sealing new events into the chain, and verifying it."""

from __future__ import annotations

import logging

from celery import shared_task

from . import chain

log = logging.getLogger(__name__)


@shared_task(name="audit.tasks.seal_audit_events")
def seal_audit_events() -> int:
    result = chain.seal_pending()
    for event_id in result.refused:
        log.error("audit event #%s has no valid MAC: written behind the portal; not sealed", event_id)
    return result.sealed


@shared_task(name="audit.tasks.verify_audit_trail")
def verify_audit_trail() -> bool:
    run, result, _ = chain.verify_and_record()
    for problem in result.first_by_kind():
        log.error("audit trail: %s", problem.message)
    return bool(run.ok)
