"""System checks for settings that only make sense together (run by `manage.py check`)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def provisioning_timeouts(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """A job counts as stuck (its worker died) after PROVISIONING_STUCK_AFTER_SECONDS; a live
    worker stops a task at CELERY_TASK_TIME_LIMIT. If the first were shorter, a job still running
    could be taken by a second worker."""
    stuck = settings.PROVISIONING_STUCK_AFTER_SECONDS
    hard = settings.CELERY_TASK_TIME_LIMIT
    if stuck <= hard:
        return [
            Error(
                f"PROVISIONING_STUCK_AFTER_SECONDS ({stuck}) must be longer than CELERY_TASK_TIME_LIMIT ({hard}).",
                hint="A job still running could otherwise be claimed by a second worker.",
                id="governance.E001",
            )
        ]
    return []
