"""Objects managed in code (docs/policy-as-code.md#managed-by-code): the refusal every door shares.

The policy app (policy/, above governance) records which objects a policy document applied and
registers here how to ask; governance's services call `refuse_if_managed(obj)` before they change
such an object, so the admin, the portal, the API and the commands are all refused in one place.
The policy applier changes them inside `applying_code()`, the one context the refusal lets through.
Governance never imports the policy app: the checker is handed down at start-up (policy.apps).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from .errors import ConflictError

# obj -> "where it is managed" (a sentence naming the document), or None when it is not managed.
Checker = Callable[[Any], "str | None"]
_checkers: list[Checker] = []
_applying: ContextVar[bool] = ContextVar("governance_applying_code", default=False)


class ManagedInCode(ConflictError):
    """The object is managed in code: change it in its document (or release it first)."""

    code = "managed_in_code"


def register(checker: Checker) -> None:
    """Called once by the policy app when Django starts (idempotent)."""
    if checker not in _checkers:
        _checkers.append(checker)


@contextlib.contextmanager
def applying_code() -> Iterator[None]:
    """Inside: the policy applier is changing managed objects, which the services then allow."""
    token = _applying.set(True)
    try:
        yield
    finally:
        _applying.reset(token)


def is_applying_code() -> bool:
    return _applying.get()


def managed_where(obj: Any) -> str | None:
    for checker in _checkers:
        where = checker(obj)
        if where:
            return where
    return None


def refuse_if_managed(obj: Any) -> None:
    """ManagedInCode (409) when `obj` is managed in code and this is not the policy applier."""
    if is_applying_code():
        return
    where = managed_where(obj)
    if where:
        raise ManagedInCode(where)
