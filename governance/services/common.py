"""Helpers shared by services."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import models

from audit import services as audit
from audit.models import Outcome

from .. import crypto
from ..errors import DomainError, InvalidInput, Unavailable


@contextlib.contextmanager
def refusal_recorded(
    *,
    action: str,
    actor: Any,
    target: models.Model | tuple[type[models.Model], int] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Iterator[None]:
    """Record a `denied` audit event when the wrapped block raises a DomainError, then re-raise.

    Wrap the service's `transaction.atomic()` block with it (outside, not inside): the refused
    change rolls back first, and the denied event is written afterwards so that it survives.
    Unexpected exceptions (bugs, lost connections) leave neither change nor event behind.
    """
    ref: dict[str, Any] = {"target": target}
    if isinstance(target, tuple):
        # Called with an id only: name the row without loading it (it may not even exist).
        model, pk = target
        ref = {
            "target_type": model._meta.label_lower,
            "target_id": pk,
            "target_repr": f"{model._meta.verbose_name} #{pk}",
        }
    try:
        yield
    except DomainError as exc:
        audit.record(
            action=action,
            actor=actor,
            **ref,
            outcome=Outcome.DENIED,
            reason=exc.message,
            metadata={"code": exc.code, **(metadata or {})},
        )
        raise


def assign_fields(instance: models.Model, fields: dict[str, Any], allowed: list[str]) -> dict[str, list[Any]]:
    """Set `fields` on `instance` (only names in `allowed`) and return the audit diff of `allowed`.

    The caller saves when the diff is not empty, and records it.
    """
    unknown = set(fields) - set(allowed)
    if unknown:
        raise InvalidInput(f"Unknown {instance._meta.verbose_name} field(s): {', '.join(sorted(unknown))}.")
    before = audit.snapshot(instance, allowed)
    for key, value in fields.items():
        setattr(instance, key, value)
    return audit.diff(before, audit.snapshot(instance, allowed))


def sealed(secret: str, *, field: str, what: str = "The password") -> str:
    """`secret` encrypted for storage (governance.crypto). A key that cannot be used now (KMS
    unreachable or refusing) is the caller's clear error (`unavailable`), never a 500."""
    try:
        return crypto.encrypt(secret)
    except ImproperlyConfigured as exc:
        raise Unavailable(f"{what} cannot be stored now: {exc}", field=field) from None
