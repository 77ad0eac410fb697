"""Domain errors: one shape for admin messages, form errors, command exits and (later) the API envelope.

Each carries a stable `code` and the HTTP status it maps to; the message is written for the person
who made the call and never contains a secret.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "error"
    status = 400

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            out["field"] = self.field
        if self.details:
            out["details"] = self.details
        return out


class InvalidInput(DomainError):
    """The input is malformed (unknown column, non-positive duration...)."""

    code = "invalid"
    status = 400


class PolicyViolation(DomainError):
    """The input is well-formed but the classification policy refuses it (too long, no reason...)."""

    code = "policy_violation"
    status = 400


class NotPermitted(DomainError):
    """The actor may not do this (self-approval, not an owner of this dataset...)."""

    code = "not_permitted"
    status = 403


class ConflictError(DomainError):
    """The object is not in a state that allows this transition (already approved, cancelled...)."""

    code = "conflict"
    status = 409


class NotFound(DomainError):
    """No such object among those the actor may see (the same answer whether it exists or not)."""

    code = "not_found"
    status = 404


class Unavailable(DomainError):
    """A service the portal depends on cannot do it now (the KMS key of stored secrets...): try later."""

    code = "unavailable"
    status = 503
