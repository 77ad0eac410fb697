"""The health checks behind /health/ready (docs/operations.md#health).

Each check answers (ok, detail). The detail is for operators (a METRICS_TOKEN bearer): anonymous
callers see only the names of the checks that fail, never an exception's text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from .heartbeat import beat_last_seen

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    name: str
    ok: bool
    detail: str


def database() -> str:
    with connection.cursor() as cur:
        cur.execute("SELECT 1")
    return "answers"


def redis_broker() -> str:
    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()
    return "answers"


_migrated = False  # once every migration is applied, this process's code stays migrated


def migrations() -> str:
    global _migrated
    if _migrated:
        return "applied"
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        raise CheckFailed(f"{len(plan)} migration(s) not applied, first {plan[0][0].app_label}.{plan[0][0].name}")
    _migrated = True
    return "applied"


def worker() -> str:
    from config.celery import app

    replies = app.control.ping(timeout=settings.HEALTH_CHECK_TIMEOUT_SECONDS)
    if not replies:
        raise CheckFailed(f"no Celery worker answered within {settings.HEALTH_CHECK_TIMEOUT_SECONDS} s")
    return f"{len(replies)} worker(s) answered"


def beat() -> str:
    seen = beat_last_seen()
    limit = settings.HEALTH_BEAT_MAX_AGE_SECONDS
    if seen is None:
        raise CheckFailed("beat never seen")
    age = time.time() - seen
    if age > limit:
        raise CheckFailed(f"beat last seen {age:.0f} s ago (limit {limit} s)")
    return f"seen {age:.0f} s ago"


class CheckFailed(Exception):
    """A check that ran and found the dependency wrong (its text is for operators)."""


CHECKS: dict[str, Callable[[], str]] = {
    "database": database,
    "redis": redis_broker,
    "migrations": migrations,
    "worker": worker,
    "beat": beat,
}


def run(names: list[str]) -> list[Outcome]:
    """Run the named checks in order; a failure of one never stops the others."""
    out = []
    for name in names:
        try:
            out.append(Outcome(name, True, CHECKS[name]()))
        except CheckFailed as exc:
            out.append(Outcome(name, False, str(exc)))
        except Exception as exc:  # noqa: BLE001 - any error is that dependency failing
            log.warning("health check %s failed: %s", name, type(exc).__name__)
            out.append(Outcome(name, False, f"{type(exc).__name__}: {exc}".splitlines()[0][:300]))
    return out
