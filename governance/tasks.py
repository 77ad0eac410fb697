"""Celery tasks: thin wrappers that open an audit context and call a service."""

from __future__ import annotations

from celery import shared_task

from audit.context import task_context

from .services.requests import access_requests_expire_stale


@shared_task(name="governance.tasks.expire_stale_access_requests")
def expire_stale_access_requests() -> int:
    """Scheduled (CELERY_BEAT_SCHEDULE): expire pending requests older than the configured age."""
    with task_context("expire_stale_access_requests"):
        return access_requests_expire_stale()
