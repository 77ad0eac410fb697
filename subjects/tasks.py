"""Worker and beat tasks of the data-subject requests app: they call its services only."""

from __future__ import annotations

import logging

from celery import shared_task
from django.contrib.auth import get_user_model

from governance.errors import DomainError
from governance.models import DataSource

from .models import SubjectRequest
from .services.deadlines import subject_request_deadlines_announce
from .services.execution import subject_exports_purge
from .services.identifiers import identifiers_suggest
from .services.recovery import subject_requests_recover_stalled
from .services.requests import subject_request_execute

log = logging.getLogger(__name__)


@shared_task(name="subjects.tasks.execute_subject_request")
def execute_subject_request(request_id: int, actor_id: int) -> str:
    """Execute an approved request as the officer who asked for it (checked again by the service)."""
    request = SubjectRequest.objects.filter(pk=request_id).first()
    actor = get_user_model().objects.filter(pk=actor_id, is_active=True).first()
    if request is None or actor is None:
        return "gone"
    try:
        return str(subject_request_execute(actor=actor, request=request).state)
    except DomainError as exc:
        log.info("subject request %s not executed: %s", request_id, exc.message)
        return "refused"


@shared_task(name="subjects.tasks.purge_subject_exports")
def purge_subject_exports() -> int:
    return subject_exports_purge()


@shared_task(name="subjects.tasks.announce_subject_deadlines")
def announce_subject_deadlines() -> int:
    """Tell the privacy officers of requests due within 7 days, and of overdue ones (once each)."""
    return subject_request_deadlines_announce()


@shared_task(name="subjects.tasks.recover_stuck_subject_executions")
def recover_stuck_subject_executions() -> int:
    """Move executions stalled past SUBJECTS_EXECUTION_LEASE_SECONDS (a dead worker) to needs attention."""
    return subject_requests_recover_stalled()


@shared_task(name="subjects.tasks.suggest_identifiers")
def suggest_identifiers(source_id: int) -> int:
    """After a catalog sync: read the source's foreign keys and suggest identifier columns."""
    source = DataSource.objects.filter(pk=source_id).first()
    if source is None:
        return 0
    try:
        return identifiers_suggest(source=source)
    except DomainError as exc:  # the source cannot be read now: the next sync asks again
        log.info("identifier suggestions for source %s not made: %s", source_id, exc.message)
        return 0
