"""The errors both adapters (PostgreSQL and AWS) raise, and the engine handles alike: retried with
backoff (:class:`TransientError`), failed at once (:class:`PermanentError`), or waited out when the
target does not answer (``unreachable``). Knows no Django."""

from __future__ import annotations

from typing import ClassVar

__all__ = ["PermanentError", "ProvisioningError", "TransientError", "UsageUnavailable"]


class ProvisioningError(Exception):
    """A change on a target failed. ``message`` is one line, safe to store and show (no secret).

    ``connection_lost``: the connection it happened on is unusable (the pool discards it).
    ``unreachable``: the target itself did not answer (refused, timed out, dropped the session,
    shutting down or starting up): the caller marks the whole source unreachable and parks its
    jobs until a probe gets an answer, instead of spending retries on it. An error the target
    *answered* with (a wrong password, a lock timeout, "too many connections") is not one.
    """

    transient: ClassVar[bool] = False

    def __init__(
        self, message: str, *, sqlstate: str | None = None, connection_lost: bool = False, unreachable: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate
        self.connection_lost = connection_lost
        self.unreachable = unreachable


class TransientError(ProvisioningError):
    """Worth retrying with backoff: target unreachable, lock or statement timeout, serialisation."""

    transient = True


class PermanentError(ProvisioningError):
    """Retrying cannot help: missing table/column/schema/role, permission denied, invalid SQL input."""


class UsageUnavailable(Exception):
    """A source cannot tell who used what (last-used facts); ``reason`` is one sentence for the page."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
