"""Celery tasks: thin wrappers that open an audit context and call a service. Ids only."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from audit.context import task_context

from .services.requests import access_requests_expire_stale


@shared_task(name="governance.tasks.expire_stale_access_requests")
def expire_stale_access_requests() -> int:
    """Scheduled (CELERY_BEAT_SCHEDULE): expire pending requests older than the configured age."""
    with task_context("expire_stale_access_requests"):
        return access_requests_expire_stale()


@shared_task(name="governance.tasks.run_provisioning_job")
def run_provisioning_job(job_id: int) -> str:
    """Run one job (apply, revoke, membership) through the engine. A transient failure publishes
    the job's retry, due after its backoff (services/engine/failures.py)."""
    from .services.engine.run import provisioning_job_run

    with task_context("run_provisioning_job"):
        job = provisioning_job_run(job_id=job_id)
    return job.status if job is not None else "skipped"


@shared_task(name="governance.tasks.run_provisioning_batch")
def run_provisioning_batch(job_ids: list[int]) -> dict[str, Any]:
    """Run many jobs of one source through the same engine (published by `batched_publishing()`):
    the plain applies share one target transaction."""
    from .services.engine.run import provisioning_jobs_run

    with task_context("run_provisioning_batch"):
        return provisioning_jobs_run(job_ids=job_ids).as_dict()


@shared_task(name="governance.tasks.expire_due_grants")
def expire_due_grants() -> int:
    """Scheduled every minute: grants whose end has passed are expired and revoked on the target."""
    from .services.grants import grants_expire_due
    from .services.roles import role_memberships_end_due

    with task_context("expire_due_grants"):
        # Memberships first: a role's members lose the role before its grants are re-converged.
        return role_memberships_end_due() + grants_expire_due()


@shared_task(bind=True, name="governance.tasks.end_grant", max_retries=None)
def end_grant(self: Any, grant_id: int, scheduled_end: str) -> str:
    """Published with `eta` = the grant's end (governance/services/grant_ends.py): end it on the
    second through the same service as the sweep. Does nothing if the end moved later or it ended."""
    import datetime as dt

    from .services.grant_ends import grant_end_reached

    with task_context("end_grant"):
        outcome = grant_end_reached(grant_id=grant_id, scheduled_end=dt.datetime.fromisoformat(scheduled_end))
    if isinstance(outcome, float):  # the timer fired a moment before the end
        raise self.retry(countdown=max(outcome, 0.01), exc=None)
    return outcome


@shared_task(name="governance.tasks.schedule_grant_ends")
def schedule_grant_ends() -> int:
    """Scheduled every minute: publish the end tasks of grants whose end enters the horizon."""
    from .services.grant_ends import grant_ends_schedule_due

    with task_context("schedule_grant_ends"):
        return grant_ends_schedule_due()


@shared_task(name="governance.tasks.sweep_provisioning_jobs")
def sweep_provisioning_jobs() -> int:
    """Scheduled: re-enqueue jobs whose message was lost or whose worker died (lease passed), and
    fail the long operations whose worker died (heartbeat passed) or that no worker took."""
    from .services.engine.sweep import provisioning_jobs_sweep
    from .services.operations import operations_sweep

    with task_context("sweep_provisioning_jobs"):
        return provisioning_jobs_sweep() + operations_sweep()


@shared_task(name="governance.tasks.run_operation")
def run_operation(operation_id: int) -> str:
    """A long operation started in the admin or the API (catalog sync, reconcile): runs it with its
    progress recorded on the Operation row (governance/services/operations.py)."""
    from .services.operations import operation_run

    with task_context("run_operation"):
        operation = operation_run(operation_id=operation_id)
    return operation.state if operation is not None else "skipped"


@shared_task(name="governance.tasks.probe_sources")
def probe_sources() -> dict[str, str]:
    """Scheduled every few seconds: probe the data sources marked unreachable; release the waiting
    jobs of those that answer (revocations first). One UPDATE when every source is healthy."""
    from .services.source_health import sources_probe

    with task_context("probe_sources"):
        return sources_probe()


@shared_task(name="governance.tasks.ping")
def ping(reply_key: str) -> None:
    """Liveness probe and benchmark floor: write the time the worker ran it to a Redis key."""
    import time

    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.CELERY_BROKER_URL).set(reply_key, repr(time.time()), ex=60)


@shared_task(name="governance.tasks.reconcile_sources")
def reconcile_sources() -> dict[str, Any]:
    """Scheduled (RECONCILE_INTERVAL_SECONDS): find drift on every provisioning-enabled PostgreSQL
    source and repair it where the source has `auto_fix_drift`. One source failing (target down)
    is audited as a failed run and does not stop the others."""
    from .services.reconcile import reconcile_sources_all

    with task_context("reconcile_sources"):
        results = reconcile_sources_all()
    return {
        name: {"error": r} if isinstance(r, str) else {"drift": len(r.drift), "remaining": r.remaining}
        for name, r in results.items()
    }


@shared_task(name="governance.tasks.reconcile_source_task")
def reconcile_source_task(source_id: int, fix: bool, actor_id: int | None) -> dict[str, Any]:
    """One source, on demand: what the API's trigger published before reconciles became operations
    (governance.tasks.run_operation); kept so that such messages still queued at an upgrade run.
    A target that cannot be read is audited as a failed run by the service; the task then reports
    the error instead of raising it again."""
    from django.contrib.auth import get_user_model

    from .models import DataSource
    from .services.reconcile import ReconcileFailed, reconcile_source

    with task_context("reconcile_source_task"):
        source = DataSource.objects.get(pk=source_id)
        actor = get_user_model().objects.filter(pk=actor_id).first() if actor_id else None
        try:
            result = reconcile_source(source=source, fix=fix, actor=actor)
        except ReconcileFailed as exc:
            return {"error": exc.message}
    return {"drift": len(result.drift), "fixed": result.fixed, "remaining": result.remaining}


@shared_task(name="governance.tasks.follow_governed_views")
def follow_governed_views(source_id: int) -> list[str]:
    """After a catalog sync changed columns: the treated grants' governed views follow their tables
    (a target that cannot be reached leaves it to the scheduled reconcile, which finds the same
    differences as drift)."""
    from .models import DataSource
    from .services.reconcile.views import governed_views_follow

    with task_context("follow_governed_views"):
        source = DataSource.objects.filter(pk=source_id).first()
        return governed_views_follow(source=source) if source is not None and source.provisions else []


@shared_task(name="governance.tasks.purge_idempotency_records")
def purge_idempotency_records() -> int:
    """Scheduled hourly: forget the API's answers to Idempotency-Key calls older than the TTL."""
    from .api.idempotency import idempotency_records_purge

    return idempotency_records_purge()


@shared_task(name="governance.tasks.sync_catalogs")
def sync_catalogs() -> dict[str, Any]:
    """Scheduled (CATALOG_SYNC_INTERVAL_SECONDS): re-read every PostgreSQL source, so that new
    tables, changed columns and, above all, what views read (their effective classification and
    inherited PII) follow the warehouse without anyone pressing Sync."""
    from .services.sync import datasources_sync_all

    with task_context("sync_catalogs"):
        results = datasources_sync_all()
    return {name: {"error": r} if isinstance(r, str) else r.counts() for name, r in results.items()}


@shared_task(name="governance.tasks.snapshot_usage")
def snapshot_usage() -> dict[str, Any]:
    """Scheduled (USAGE_SNAPSHOT_INTERVAL_SECONDS): read each source's use (pg_stat_statements,
    IAM's last-accessed data) and record when each grant was last used (docs/usage.md)."""
    from .services.usage import usage_snapshot_all

    with task_context("snapshot_usage"):
        return usage_snapshot_all()


@shared_task(name="governance.tasks.rotate_source_credentials")
def rotate_source_credentials() -> dict[str, int]:
    """Scheduled (CREDENTIAL_ROTATION_INTERVAL_SECONDS): rotate the portal's own password on every
    source whose credential is older than its period, and read the age of referenced secrets."""
    from .services.credentials import datasource_credential_ages_refresh, datasource_credentials_rotate_due

    with task_context("rotate_source_credentials"):
        counts = datasource_credentials_rotate_due()
        counts["ages_read"] = datasource_credential_ages_refresh()
    return counts


@shared_task(name="governance.tasks.rewrap_secrets")
def rewrap_secrets() -> dict[str, Any]:
    """Scheduled (SECRETS_REWRAP_INTERVAL_SECONDS) when a key service encrypts stored secrets: every
    secret not yet under the key that encrypts now (a new key behind the KMS alias, a rotated Vault
    Transit key's latest version, or a MultiFernet token left from before) is re-wrapped.
    Idempotent; audited when it changed something. Without a key service it does nothing (Fernet
    keys rotate by command)."""
    from .crypto import key_service
    from .services.keys import encryption_keys_rotate

    if not key_service():
        return {"skipped": "no key service configured"}
    with task_context("rewrap_secrets"):
        result = encryption_keys_rotate(actor=None, record_unchanged=False)
    return {"key": result.key, "changed": result.changed, "unchanged": result.unchanged}
