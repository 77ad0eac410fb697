"""Mapping a person or a portal role to an identity that already exists on a source.

On PostgreSQL the portal otherwise creates and owns a NOLOGIN role per grantee; a mapping to an
existing login role (`managed=False`) makes the person receive privileges as themselves. On AWS a
mapping is required: the portal never creates IAM users or roles, so a grant is provisioned only to
the `user/NAME` or `role/NAME` it is mapped to (docs/aws.md).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from audit import services as audit

from ..backends import backend_for
from ..errors import InvalidInput
from ..models import DataSource, SourcePrincipal
from .catalog import _ensure_admin
from .common import refusal_recorded


def _check_name(source: DataSource, name: str) -> str:
    name = name.strip()
    try:
        return backend_for(source).principal_name(name)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="name") from None


def source_principal_map(
    *, source: DataSource, actor: Any, name: str, user: Any = None, role: Any = None
) -> SourcePrincipal:
    """Map `user` or `role` (exactly one) to the existing identity `name` on `source`."""
    subject = user if user is not None else role
    with (
        refusal_recorded(action="source_principal.map", actor=actor, target=source, metadata={"name": name}),
        transaction.atomic(),
    ):
        _ensure_admin(actor, "map identities on data sources")
        if (user is None) == (role is None):
            raise InvalidInput("Map either a user or a portal role.")
        name = _check_name(source, name)
        lookup = {"user": user} if user is not None else {"role": role}
        if SourcePrincipal.objects.filter(source=source, **lookup).exists():
            raise InvalidInput(f"{subject} is already mapped on {source.name}.", field="name")
        if SourcePrincipal.objects.filter(source=source, db_role=name).exists():
            raise InvalidInput(f"{name} on {source.name} already stands for someone else.", field="name")
        row = SourcePrincipal.objects.create(source=source, db_role=name, managed=False, **lookup)
        audit.record(
            action="source_principal.mapped",
            actor=actor,
            target=row,
            metadata={"source": source.name, "name": name, "subject": str(subject)},
        )
    return row
