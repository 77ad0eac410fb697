"""Redis and Celery: the broker, delivery guarantees, queues and beat's schedule (config/settings/base.py
imports it; every variable is documented in `.env.example`)."""

from celery.schedules import crontab

from .environment import env

REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# At-least-once delivery: a task is acknowledged only after it ran, and re-delivered if the worker
# died under it. Tasks are idempotent (they converge the target to the database), so a second run is
# harmless. The visibility timeout must exceed the longest task (hard limit below).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=300)}
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=60)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=90)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Notifications have a queue of their own: an email never waits in front of a provisioning job, nor a
# job behind a slow mail server. A worker must consume it (`-Q celery,notifications`, as `make run`'s
# and compose's do, or a worker of its own with `-Q notifications`).
CELERY_TASK_ROUTES = {"notifications.tasks.*": {"queue": "notifications"}}


def every(
    name: str, task: str, setting: str, default: float, *, off_at_zero: bool = False, expires: bool = False
) -> dict[str, dict[str, object]]:
    """One beat entry run every `setting` seconds (`default` when unset). `off_at_zero`: 0 leaves the
    entry out (the feature is switched off); `expires`: a copy older than the interval is dropped."""
    seconds = float(env.float(setting, default=default))
    if off_at_zero and seconds <= 0:
        return {}
    entry: dict[str, object] = {"task": task, "schedule": seconds}
    if expires:
        entry["options"] = {"expires": seconds}
    return {name: entry}


CELERY_BEAT_SCHEDULE = {
    # Pending requests nobody decided on in time are expired by the same service a person would call.
    "expire-stale-access-requests": {"task": "governance.tasks.expire_stale_access_requests", "schedule": 15 * 60.0},
    # Each grant's end is revoked on the second by a task with an ETA at that end, enqueued once the
    # end is within GRANT_END_HORIZON_SECONDS (docs/provisioning.md: ETA messages must stay shorter
    # than the broker's visibility timeout). This cheap task enqueues the ends entering the horizon.
    **every("schedule-grant-ends", "governance.tasks.schedule_grant_ends", "GRANT_END_SCHEDULE_INTERVAL_SECONDS", 60),
    # The safety net: grants whose end passed are revoked on the target without anyone acting, if
    # their end's own task was lost. 0 switches it off (a test proves the ETA path alone ends grants).
    **every(
        "expire-due-grants", "governance.tasks.expire_due_grants", "GRANT_EXPIRY_INTERVAL_SECONDS", 60, off_at_zero=True
    ),
    # Jobs whose message was lost or whose worker died (lease passed) are queued again. Cheap when
    # nothing is due (one UPDATE matching no row), so it runs often: a dead worker's job is back
    # within PROVISIONING_LEASE_SECONDS + this. (No `expires` on these messages, on purpose: behind
    # a long backlog in the shared queue a late run is better than every run dropped.)
    **every(
        "sweep-provisioning-jobs", "governance.tasks.sweep_provisioning_jobs", "PROVISIONING_SWEEP_INTERVAL_SECONDS", 5
    ),
    # Data sources marked unreachable are probed; the first answer releases their waiting jobs
    # (revocations first). One UPDATE matching no row while every source is healthy.
    **every("probe-sources", "governance.tasks.probe_sources", "PROVISIONING_PROBE_INTERVAL_SECONDS", 2),
    # The catalog is re-read so that what views read (and so their effective classification and
    # inherited PII) follows the warehouse; 0 switches the scheduled sync off.
    **every("sync-catalogs", "governance.tasks.sync_catalogs", "CATALOG_SYNC_INTERVAL_SECONDS", 3600, off_at_zero=True),
    # Last-used facts (docs/usage.md): each source's use is read and each grant's last use recorded;
    # a use is dated to the reading that first sees it. 0 switches it off.
    **every(
        "snapshot-usage", "governance.tasks.snapshot_usage", "USAGE_SNAPSHOT_INTERVAL_SECONDS", 900, off_at_zero=True
    ),
    # Targets are compared with the grants in force (drift); repaired where the source has auto-fix on.
    **every("reconcile-sources", "governance.tasks.reconcile_sources", "RECONCILE_INTERVAL_SECONDS", 300),
    # The portal's own password on each source is rotated when older than the source's period, and
    # the age of referenced secrets is read from their stores (docs/security.md#credential-rotation).
    **every(
        "rotate-source-credentials",
        "governance.tasks.rotate_source_credentials",
        "CREDENTIAL_ROTATION_INTERVAL_SECONDS",
        3600,
    ),
    # New audit events are chained (sealed) a few seconds after they commit; see audit.chain.
    **every("seal-audit-events", "audit.tasks.seal_audit_events", "AUDIT_SEAL_INTERVAL_SECONDS", 5),
    # The chain's signed head goes to the SIEM stream and the witnesses outside the database, after
    # checking that the database still holds what they anchored last (audit/anchors.py).
    **every("anchor-audit-trail", "audit.tasks.anchor_audit_trail", "AUDIT_ANCHOR_INTERVAL_SECONDS", 30),
    # The audit events table's monthly partitions are created ahead (audit/partitions.py): the
    # current month and the next AUDIT_PARTITIONS_AHEAD. Idempotent; daily is plenty.
    **every(
        "ensure-audit-partitions", "audit.tasks.ensure_audit_partitions", "AUDIT_PARTITIONS_INTERVAL_SECONDS", 86400
    ),
    # The whole trail is verified; the outcome shows in the admin (Audit verifications).
    **every("verify-audit-trail", "audit.tasks.verify_audit_trail", "AUDIT_VERIFY_INTERVAL_SECONDS", 3600),
    # The notifications outbox (docs/notifications.md): what no task sent (a lost message, retries
    # after their backoff, a dead worker's claims), the warnings of accesses about to end, and the
    # daily digest. They run on the notifications queue (CELERY_TASK_ROUTES below).
    **every(
        "sweep-notification-outbox", "notifications.tasks.sweep_outbox", "NOTIFICATIONS_SWEEP_INTERVAL_SECONDS", 10
    ),
    **every(
        "announce-grant-ends", "notifications.tasks.announce_grant_ends", "NOTIFICATIONS_ENDING_INTERVAL_SECONDS", 3600
    ),
    "send-notification-digests": {
        "task": "notifications.tasks.send_digests",
        "schedule": crontab(hour=env.int("NOTIFICATIONS_DIGEST_HOUR", default=7), minute=0),
    },
    # Access reviews (docs/reviews.md): campaigns due are opened (one-offs and each recurring
    # campaign's next occurrence), passed deadlines get their action, reminders are recorded (once
    # each: dedup keys). Cheap when nothing is due.
    **every("run-review-campaigns", "reviews.tasks.run_review_campaigns", "REVIEWS_INTERVAL_SECONDS", 600),
    # Beat's heartbeat for the readiness check `beat` (observability.heartbeat): its publishing is
    # recorded in Redis; the worker's run is a no-op. A late copy is useless: it expires.
    **every("beat-heartbeat", "observability.tasks.beat_heartbeat", "HEALTH_BEAT_INTERVAL_SECONDS", 60, expires=True),
    # Stored secrets follow the key service's key (governance.tasks.rewrap_secrets; a no-op without
    # FIELD_ENCRYPTION_KMS_KEY_ID or FIELD_ENCRYPTION_VAULT_TRANSIT_KEY): re-wrapped after the KMS
    # alias moved to a new key, or a new Transit key version. 0 switches it off.
    **every(
        "rewrap-secrets", "governance.tasks.rewrap_secrets", "SECRETS_REWRAP_INTERVAL_SECONDS", 3600, off_at_zero=True
    ),
    # Data quality (docs/quality.md): datasets whose scheduled run is due get one. Cheap when none is.
    **every("run-quality-checks", "quality.tasks.run_due_quality_checks", "QUALITY_SCHEDULE_INTERVAL_SECONDS", 300),
    # Data-subject requests (docs/subjects.md): access exports past SUBJECTS_EXPORT_DAYS are deleted.
    "purge-subject-exports": {"task": "subjects.tasks.purge_subject_exports", "schedule": 3600.0},
    # ... and the privacy officers are told of requests due within 7 days, then overdue (once each:
    # dedup keys; hourly, so that an overdue notice follows its deadline within the hour).
    **every(
        "announce-subject-deadlines",
        "subjects.tasks.announce_subject_deadlines",
        "SUBJECTS_DEADLINE_NOTICE_INTERVAL_SECONDS",
        3600,
    ),
    # ... and an execution stalled past SUBJECTS_EXECUTION_LEASE_SECONDS (its worker died) is moved
    # to needs attention, so that it can be previewed and approved again.
    **every(
        "recover-stuck-subject-executions",
        "subjects.tasks.recover_stuck_subject_executions",
        "SUBJECTS_RECOVERY_INTERVAL_SECONDS",
        300,
    ),
    # Break-glass (docs/break-glass.md): uses whose review is overdue are marked and the officers told.
    **every("break-glass-overdue", "breakglass.tasks.mark_overdue_reviews", "BREAK_GLASS_INTERVAL_SECONDS", 600),
    # The API's remembered answers to Idempotency-Key calls, past IDEMPOTENCY_TTL_HOURS.
    "purge-idempotency-records": {"task": "governance.tasks.purge_idempotency_records", "schedule": 3600.0},
}
