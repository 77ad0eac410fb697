"""Drift: differences the reconciler found between what the portal decided and what a target holds."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from .catalog import Dataset, DataSource


class DriftKind(models.TextChoices):
    # A grant in force gives a privilege the target does not hold (out-of-band REVOKE, restored backup).
    MISSING = "missing", "Missing"
    # A portal-managed role holds a privilege no grant in force explains (out-of-band GRANT).
    UNEXPECTED = "unexpected", "Unexpected"
    # A privilege still held although the grant that gave it ended (revoke never reached the target).
    EXPIRED_BUT_PRESENT = "expired_but_present", "Expired but present"
    # A portal JIT login role (<prefix>j_…) that no grant in force explains: its revoke never
    # finished, or it was made behind the portal's back. Repaired by ending it (NOLOGIN, sessions,
    # owned objects, DROP ROLE).
    LEFTOVER_LOGIN = "leftover_login", "Leftover login"
    # A JIT login whose VALID UNTIL is not its grant's end (edited by hand). Repaired by moving it back.
    LOGIN_EXPIRY = "login_expiry", "Login expiry differs"
    # A privilege a grant in force gives, held by the grantee's role directly instead of through its
    # access package (granted before packages, or by hand). Repaired by moving it into the package:
    # membership and REVOKE in one transaction, so access never lapses.
    DIRECT = "direct", "Held directly, not through a package"
    # An access package role (<prefix>p_…) that no grant in force defines. Repaired by revoking its
    # privileges and dropping it once nobody is a member.
    ORPHAN_PACKAGE = "orphan_package", "Orphan package"
    # A governed view (column treatments) missing or not as the portal would create it (a hand
    # edit), or its package's grant or a grantee's membership differing. Repaired by converging the
    # grantee's treated grants on the dataset: the view is created again in that transaction.
    VIEW_DIFFERS = "view_differs", "Governed view differs"


class DriftResolution(models.TextChoices):
    FIXED = "fixed", "Fixed by the reconciler"
    GONE = "gone", "No longer observed"


class DriftFindingQuerySet(models.QuerySet["DriftFinding"]):
    def open(self) -> DriftFindingQuerySet:
        """The one definition of "still open": not resolved yet."""
        return self.filter(resolved_at__isnull=True)


class DriftFinding(models.Model):
    """One privilege of one target role on one object that disagrees with the portal's grants.

    Written only by `governance.services.reconcile`. A finding stays open while every reconcile run
    still observes it; a run that no longer sees it closes it (`gone`), a repair closes it (`fixed`).
    An identical drift that comes back later opens a new row: the history of each episode is kept.

    The object is stored by name (`object_schema`, `object_name`) because drift also happens on tables
    the portal does not govern (no Dataset row: `dataset` is null then). `column` is empty for a
    table-level privilege. `principal` is the role name on the target, as the SourcePrincipal row
    spells it (or the managed name a grant in force would get).
    """

    source = models.ForeignKey(DataSource, on_delete=models.PROTECT, related_name="drift_findings")
    dataset = models.ForeignKey(Dataset, null=True, blank=True, on_delete=models.PROTECT, related_name="drift_findings")
    principal = models.CharField(max_length=63, help_text="Role name on the target database.")
    object_schema = models.CharField(max_length=255)
    object_name = models.CharField(max_length=255)
    column = models.CharField(max_length=255, blank=True, help_text="Empty for a table-level privilege.")
    privilege = models.CharField(max_length=16, help_text="SELECT, UPDATE, ... or OWNER.")
    kind = models.CharField(max_length=24, choices=DriftKind.choices)
    detail = models.TextField(help_text="The finding in words, e.g. 'unexpected UPDATE on finance.ledger for …'.")
    found_at = models.DateTimeField()
    run_id = models.UUIDField(help_text="The reconcile run that opened the finding.")
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Who ran the repair; empty means the system (scheduled run, or the drift went away).",
    )
    resolution = models.CharField(max_length=8, choices=DriftResolution.choices, blank=True)

    objects = DriftFindingQuerySet.as_manager()

    class Meta:
        ordering = ["-found_at", "id"]
        constraints = [
            # One open finding per observed difference: a second run (or two concurrent runs) cannot
            # open a duplicate. Its index (leading `source`, only open rows) also serves "open
            # findings of this source", which every run and the admin counts read.
            models.UniqueConstraint(
                fields=["source", "principal", "object_schema", "object_name", "column", "privilege", "kind"],
                condition=Q(resolved_at__isnull=True),
                name="drift_finding_open_unique",
            ),
            models.CheckConstraint(
                condition=(Q(resolved_at__isnull=True) & Q(resolution=""))
                | (Q(resolved_at__isnull=False) & ~Q(resolution="")),
                name="drift_finding_resolution_consistent",
            ),
        ]
        indexes = [models.Index(fields=["source", "-found_at"], name="drift_finding_source_idx")]

    def __str__(self) -> str:
        return self.detail

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None
