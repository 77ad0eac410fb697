"""Who is acting and from where, for every audit event, whatever the entry point.

The web middleware, management commands and Celery tasks each open a context; `audit.record()`
reads it. A contextvar (not a thread-local) so that it is also correct under ASGI and in threads
that copy the context.
"""

from __future__ import annotations

import contextlib
import getpass
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class RequestContext:
    request_id: str
    source: str  # "web", "admin", "api", "slack", "cli", "task", "system"
    ip: str | None = None
    user_agent: str = ""
    # The authenticated user of the web request, used when a service is not told its actor.
    user_id: int | None = None
    # Added to the metadata of every event recorded in this context (`marked`): what the changes
    # came through, e.g. {"via": "code", "document": "sha256:..."} for a file applied.
    marks: tuple[tuple[str, str], ...] = ()


_current: ContextVar[RequestContext | None] = ContextVar("audit_request_context", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


def active() -> RequestContext | None:
    """The context opened by a request, command or task, or None outside any (the JSON logs)."""
    return _current.get()


def current() -> RequestContext:
    """The context of the running request/command/task; a bare "system" one if none was opened."""
    ctx = _current.get()
    if ctx is None:
        return RequestContext(request_id=new_request_id(), source="system")
    return ctx


@contextlib.contextmanager
def bind(ctx: RequestContext) -> Iterator[RequestContext]:
    """Make `ctx` the current context, for audit.record() and for the history triggers (pghistory
    attaches it to every write statement, so row history says who, from where, in which request)."""
    import pghistory

    token = _current.set(ctx)
    try:
        with pghistory.context(user=ctx.user_id, source=ctx.source, request_id=ctx.request_id, ip=ctx.ip):
            yield ctx
    finally:
        _current.reset(token)


@contextlib.contextmanager
def cli_context(command: str) -> Iterator[RequestContext]:
    """Context for a management command: the OS user is recorded as the user agent."""
    try:
        os_user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        os_user = "unknown"
    ctx = RequestContext(
        request_id=new_request_id(), source="cli", user_agent=f"manage.py {command} (os user {os_user})"
    )
    with bind(ctx):
        yield ctx


@contextlib.contextmanager
def task_context(task_name: str, request_id: str | None = None) -> Iterator[RequestContext]:
    """Context for a Celery task; carries the request id of whoever enqueued it when known."""
    if request_id is None:
        from .celery import incoming_request_id

        request_id = incoming_request_id()
    ctx = RequestContext(request_id=request_id or new_request_id(), source="task", user_agent=f"celery {task_name}")
    with bind(ctx):
        yield ctx


@contextlib.contextmanager
def marked(**marks: str) -> Iterator[RequestContext]:
    """Every audit event recorded inside carries `marks` in its metadata, whichever service records
    it: a whole-file apply (quality.as_code) marks its events {"via": "code", "document": digest},
    which tells them from the same changes made on a page, while `source` still says cli or api.
    An outer mark wins over an inner one of the same name: a policy document (policy/) that embeds a
    quality document marks the quality events with the policy document's digest, not the section's."""
    outer = {name for name, _ in current().marks}
    ctx = replace(current(), marks=(*current().marks, *sorted(i for i in marks.items() if i[0] not in outer)))
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def with_source(source: str) -> RequestContext:
    return replace(current(), source=source)


def authenticate(user_id: int | None) -> None:
    """The API authenticates tokens after the middleware opened the context: record the user for
    the rest of the request (the middleware's `bind` restores the previous context at its end)."""
    ctx = _current.get()
    if ctx is not None and ctx.user_id != user_id:
        _current.set(replace(ctx, user_id=user_id))
        import pghistory

        pghistory.context(user=user_id)  # inside bind()'s context: updates its metadata
