"""Carry the request id of whoever enqueued a task into the task's audit events.

`before_task_publish` adds the current request id as a message header; `audit.context.task_context`
reads it back in the worker, so the approver's click and the worker's `grant.activated` share one
request id in the audit trail.
"""

from __future__ import annotations

from typing import Any

from celery.signals import before_task_publish

from . import context

HEADER = "audit_request_id"


@before_task_publish.connect(dispatch_uid="audit.propagate_request_id")
def _add_request_id(headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    if headers is not None and HEADER not in headers:
        headers[HEADER] = context.current().request_id


def incoming_request_id() -> str | None:
    """The request id the running task was published with, if any."""
    from celery import current_task

    if current_task is None or current_task.request is None:
        return None
    value = current_task.request.get(HEADER)
    return str(value) if value else None
