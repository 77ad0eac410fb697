"""Reads of the policy app: which objects are managed in code, and the sentence that says so."""

from __future__ import annotations

from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db.models import Model

from .models import ManagedKind, ManagedObject


def managed_marker(obj: Model) -> ManagedObject | None:
    if obj.pk is None:
        return None
    content_type = ContentType.objects.get_for_model(obj, for_concrete_model=True)
    return ManagedObject.objects.filter(content_type=content_type, object_id=obj.pk).first()


def managed_where(obj: Any) -> str | None:
    """governance.managed's question: None, or the refusal a person reads (what, which document,
    what to do instead)."""
    if not isinstance(obj, Model):
        return None
    marker = managed_marker(obj)
    if marker is None:
        return None
    origin = f" ({marker.origin})" if marker.origin else ""
    return (
        f"{marker.get_kind_display()} {marker.key} is managed in code: policy document {marker.document}{origin}. "
        f"Change it in that document and apply it (manage.py policy apply), or release it first "
        f"(manage.py policy release {marker.kind} {_shell_word(marker.key)})."
    )


def _shell_word(text: str) -> str:
    return text if text.replace("-", "").replace("_", "").isalnum() else "'" + text.replace("'", "'\\''") + "'"


def markers(kind: str) -> dict[int, ManagedObject]:
    """{object id: marker} of one kind."""
    return {m.object_id: m for m in ManagedObject.objects.filter(kind=kind)}


__all__ = ["ManagedKind", "managed_marker", "managed_where", "markers"]
