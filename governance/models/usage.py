"""Last-used facts: what the portal saw of each source's use, and when each grant was last used.

Observations, not decisions: written by the snapshot service (governance/services/usage.py) from
what the target reports, read through governance/selectors/usage.py. No row history (a snapshot
every quarter of an hour would write a history row per grant per use); the audit trail records a
snapshot that saw new use or changed what a source can tell.
"""

from __future__ import annotations

from django.db import models

from .catalog import DataSource
from .grants import Grant


class SourceUsage(models.Model):
    """What the portal can tell of one source's use, and the counters of its last reading.

    `observed_since` is when unbroken observation began: the first reading that could tell (a
    reading has no time of use for counts made before it, so those are the baseline), or the
    counters' reset when one happened between two readings (use between the earlier reading and
    the reset is lost). "No use seen since" starts there. `counters` are the previous reading's
    calls per (user id, query id), compared by the next one (PostgreSQL).
    """

    source = models.OneToOneField(DataSource, primary_key=True, on_delete=models.CASCADE, related_name="usage")
    can_tell = models.BooleanField(default=False)
    reason = models.TextField(blank=True, help_text="Why the source cannot tell (empty when it can).")
    observed_since = models.DateTimeField(null=True, blank=True)
    last_read_at = models.DateTimeField(null=True, blank=True, help_text="The last reading, on the source's clock.")
    stats_reset = models.DateTimeField(null=True, blank=True, help_text="pg_stat_statements' last reset (PG 14+).")
    counters = models.JSONField(default=dict, blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "data source usage"
        verbose_name_plural = "data source usage"

    def __str__(self) -> str:
        return f"{self.source.name}: {'watching' if self.can_tell else 'cannot tell'}"


class GrantUsage(models.Model):
    """The last time a use of one grant was seen on its target, and as which target role."""

    grant = models.OneToOneField(Grant, primary_key=True, on_delete=models.CASCADE, related_name="usage")
    last_used_at = models.DateTimeField()
    used_as = models.CharField(max_length=255, blank=True, help_text="The target role (or IAM identity) seen.")

    def __str__(self) -> str:
        return f"grant #{self.grant_id} last used {self.last_used_at:%Y-%m-%d %H:%M}"
