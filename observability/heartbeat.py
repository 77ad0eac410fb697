"""Beat's heartbeat: the beat process records the time in Redis each time it publishes the tiny
periodic task `observability.tasks.beat_heartbeat` (HEALTH_BEAT_INTERVAL_SECONDS); the readiness
check `beat` reads it. Recorded where beat publishes, not where a worker runs the task, so that a
stopped worker and a stopped beat are told apart. Operational state, not governance: no audit event.
"""

from __future__ import annotations

import time
from typing import Any

from celery.signals import before_task_publish
from django.core.cache import cache

TASK = "observability.tasks.beat_heartbeat"
KEY = "health:beat"


@before_task_publish.connect(dispatch_uid="observability.beat_heartbeat")
def _published(sender: str | None = None, **_: Any) -> None:
    if sender == TASK:
        beat_seen()


def beat_seen(at: float | None = None) -> None:
    cache.set(KEY, time.time() if at is None else at, timeout=None)


def beat_last_seen() -> float | None:
    value = cache.get(KEY)
    return float(value) if value is not None else None
