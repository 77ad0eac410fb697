"""JSON logs (docs/operations.md#logs): one line per request carrying the request id and the user,
the Celery task's id in a task's lines, exceptions on one line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from celery import shared_task
from django.test import Client

from observability.logs import JsonFormatter

pytestmark = pytest.mark.django_db


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """The root logger's lines as production writes them (LOG_FORMAT=json), at INFO."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_one_line_per_request_with_its_request_id_and_user(json_lines: io.StringIO, analyst: Any) -> None:
    client = Client()
    client.force_login(analyst)
    response = client.get("/portal/?q=secret-search-term")
    requests = [line for line in lines(json_lines) if line["logger"] == "observability.requests"]
    assert len(requests) == 1
    line = requests[0]
    assert line["request_id"] == response["X-Request-ID"]
    assert line["user_id"] == analyst.pk and line["level"] == "info" and line["timestamp"].endswith("Z")
    assert line["http"]["path"] == "/portal/" and line["http"]["status"] == response.status_code
    assert "secret-search-term" not in json_lines.getvalue()  # never the query string


def test_an_anonymous_request_has_no_user(json_lines: io.StringIO) -> None:
    Client().get("/accounts/login/")
    (line,) = [line for line in lines(json_lines) if line["logger"] == "observability.requests"]
    assert "user_id" not in line and line["http"]["status"] == 200


@shared_task(name="tests.observability.log_in_a_task")
def log_in_a_task() -> None:
    logging.getLogger("tests.observability").warning("inside the task")


def test_a_password_reset_links_token_is_not_logged(json_lines: io.StringIO) -> None:
    Client().get("/accounts/reset/MQ/abc-secret-123/")
    (line,) = [line for line in lines(json_lines) if line["logger"] == "observability.requests"]
    assert line["http"]["path"] == "/accounts/reset/MQ/[redacted]/"
    assert "abc-secret-123" not in json_lines.getvalue()


def test_a_tasks_lines_carry_its_id(json_lines: io.StringIO) -> None:
    result = log_in_a_task.apply(task_id="task-id-123")
    assert result.successful()
    (line,) = [line for line in lines(json_lines) if line["message"] == "inside the task"]
    assert line["task_id"] == "task-id-123" and line["task"] == "tests.observability.log_in_a_task"


def test_an_exception_is_one_line(json_lines: io.StringIO) -> None:
    try:
        raise ValueError("first\nsecond")
    except ValueError:
        logging.getLogger("tests.observability").exception("it broke")
    assert len(json_lines.getvalue().splitlines()) == 1
    (line,) = lines(json_lines)
    assert line["message"] == "it broke" and "ValueError: first\nsecond" in line["exception"]
