"""JSON logs: one object per line, for the web processes and the workers (LOG_FORMAT=json).

Every line carries, when known, the request id and the user of the web request or API call
(audit.context, so the same id as the request's audit events and its X-Request-ID header), and
the Celery task's id and name. Built on structlog's ProcessorFormatter over the standard logging
records, so every library's log lines come out the same way. Nothing is added that the message
itself did not say: no headers, no query strings, no settings.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import structlog
from structlog.stdlib import ProcessorFormatter

from audit import context


def add_context(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    ctx = context.active()
    if ctx is not None:
        event["request_id"] = ctx.request_id
        event["source"] = ctx.source
        if ctx.user_id is not None:
            event["user_id"] = ctx.user_id
    task = _task()
    if task is not None:
        event["task_id"], event["task"] = task
    return event


def _task() -> tuple[str, str] | None:
    from celery import current_task

    if not current_task:
        return None
    request = getattr(current_task, "request", None)
    task_id = getattr(request, "id", None)
    return (str(task_id), str(current_task.name)) if task_id else None


class JsonFormatter(ProcessorFormatter):
    """`logging` formatter: {"timestamp", "level", "logger", "message", request_id, user_id,
    task_id, task, http (the request line's), exception}."""

    def __init__(self) -> None:
        super().__init__(
            processors=[
                ProcessorFormatter.remove_processors_meta,
                structlog.processors.EventRenamer("message"),
                structlog.processors.JSONRenderer(),
            ],
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
                structlog.stdlib.ExtraAdder(allow=["http"]),
                add_context,
                structlog.processors.format_exc_info,
            ],
        )


def use_json(logger: logging.Logger) -> None:
    """Give a logger's handlers (the Celery worker's, set up by Celery) the JSON format."""
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())
