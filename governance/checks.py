"""System checks for settings that only make sense together (run by `manage.py check`)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register

# The heartbeat renews a lease every quarter of it; below this, renewals would be a few hundred
# milliseconds apart and one slow portal query could let a live worker's job look abandoned.
MIN_LEASE_SECONDS = 2.0


@register()
def provisioning_timeouts(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """A running job is protected by its lease (renewed by its live worker, see
    governance/services/leases.py), not by a timeout: a lease too short to survive a slow renewal
    would let a second worker claim a job whose first worker is still running it."""
    lease = settings.PROVISIONING_LEASE_SECONDS
    if lease < MIN_LEASE_SECONDS:
        return [
            Error(
                f"PROVISIONING_LEASE_SECONDS ({lease:g}) must be at least {MIN_LEASE_SECONDS:g}.",
                hint="A job still running could otherwise be claimed by a second worker.",
                id="governance.E001",
            )
        ]
    return []


@register()
def grant_end_horizon(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """A grant's end task waits in a worker, un-acknowledged, until its ETA. With Redis as broker an
    un-acknowledged message is delivered again after the visibility timeout: the horizon within
    which ends get their ETA task must stay below it (docs/provisioning.md), and the scheduler that
    enqueues ends entering the horizon must run more often than the horizon is long."""
    horizon = settings.GRANT_END_HORIZON_SECONDS
    visibility = (getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None) or {}).get("visibility_timeout", 3600)
    scheduled = settings.CELERY_BEAT_SCHEDULE.get("schedule-grant-ends", {}).get("schedule", 0)
    interval = float(scheduled) if isinstance(scheduled, int | float) else 0.0
    errors = []
    if horizon >= visibility:
        errors.append(
            Error(
                f"GRANT_END_HORIZON_SECONDS ({horizon}) must be below the broker's visibility timeout ({visibility}).",
                hint="Redis would deliver a waiting end task again, to another worker, every visibility timeout.",
                id="governance.E002",
            )
        )
    if interval and interval >= horizon:
        errors.append(
            Error(
                f"GRANT_END_SCHEDULE_INTERVAL_SECONDS ({interval:g}) must be below "
                f"GRANT_END_HORIZON_SECONDS ({horizon}).",
                hint="An end could pass before the scheduler enqueued its task (the sweep would catch it late).",
                id="governance.E003",
            )
        )
    return errors


@register("kms")
def one_key_service(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Stored secrets are sealed under one key service: AWS KMS or Vault Transit, not both."""
    from .envelope import BOTH, configured

    if len(configured()) > 1:
        return [Error(BOTH, hint="Keep the one whose key holds the stored secrets now.", id="governance.E006")]
    return []


HINTS = {
    "kms1": "Check AWS_REGION, AWS_KMS_ENDPOINT_URL and the portal's IAM policy.",
    "vt1": "Check VAULT_ADDR, VAULT_TOKEN, VAULT_CACERT, VAULT_TRANSIT_MOUNT and the token's Vault policy.",
}


@register("kms", deploy=True)
def kms_key_usable(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """With a key service configured (FIELD_ENCRYPTION_KMS_KEY_ID or FIELD_ENCRYPTION_VAULT_TRANSIT_KEY)
    no stored secret decrypts without it: a process that cannot reach the key, or whose key is
    disabled or missing, would fail at its first secret. `check --deploy` (and the image's
    entrypoint, before web and worker start) asks the service once."""
    from .envelope import KeyUnavailable, configured

    errors = []
    for backend in configured():
        try:
            problem = backend.unusable()
        except KeyUnavailable as exc:
            errors.append(Error(str(exc), hint=HINTS[backend.format], id="governance.E004"))
            continue
        if problem:
            hint = "Enable the key, create it, or point the setting at a usable key."
            errors.append(Error(problem, hint=hint, id="governance.E005"))
    return errors
