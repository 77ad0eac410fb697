"""The export (docs/policy-as-code.md#export): the portal's policy as a document, in a fixed order
with no database ids, so that a diff of two exports shows only what changed."""

from __future__ import annotations

from typing import Any

from governance.models import Classification, MembershipSource, Role, RoleMembership
from quality import as_code as quality_code
from quality.as_code import key_of

from .datasets import export_datasets
from .document import VERSION
from .models import ManagedKind
from .plans import classification_entry, grant_entry, grantee_of, standing_grants_in_force
from .selectors import markers

SECTIONS = ("classifications", "roles", "standing_grants", "datasets", "quality")


def export_document(sections: tuple[str, ...] = SECTIONS, *, quality_datasets: Any = None) -> dict[str, Any]:
    """The document of the named sections. Roles carry the members added in the portal (an identity
    provider's are its own); `quality` holds the checks of `quality_datasets` (default: every dataset
    with a check or a watch)."""
    document: dict[str, Any] = {"version": VERSION}
    if "classifications" in sections:
        document["classifications"] = [classification_entry(c) for c in Classification.objects.order_by("rank")]
    if "roles" in sections:
        document["roles"] = _roles()
    if "standing_grants" in sections:
        managed = markers(ManagedKind.STANDING_GRANT)
        grants = list(standing_grants_in_force())
        entries = [grant_entry(g, managed.get(g.pk)) for g in grants]
        document["standing_grants"] = sorted(
            entries,
            key=lambda e: (e["dataset"], "role" in e, e.get("role") or e.get("user"), e["level"]),
        )
    if "datasets" in sections:
        document["datasets"] = export_datasets()
    if "quality" in sections:
        if quality_datasets is None:
            from quality.selectors import datasets_with_checks

            quality_datasets = datasets_with_checks(None)
        document["quality"] = quality_code.export_checks(quality_datasets)
    return document


def _roles() -> list[dict[str, Any]]:
    members: dict[int, list[str]] = {}
    open_admin = RoleMembership.objects.filter(removed_at__isnull=True, managed_by=MembershipSource.ADMIN)
    for role_id, username in open_admin.values_list("role_id", "user__username"):
        members.setdefault(role_id, []).append(username)
    entries = []
    for role in Role.objects.select_related("owner").order_by("name"):
        entry: dict[str, Any] = {
            "name": role.name,
            "kind": role.kind,
            "description": role.description,
            "owner": role.owner.username if role.owner else None,
            "members": sorted(members.get(role.pk, [])),
        }
        entries.append(entry)
    return entries


__all__ = ["SECTIONS", "export_document", "grantee_of", "key_of"]
