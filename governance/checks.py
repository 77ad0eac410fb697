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
