"""The SIEM stream: one JSON line per committed audit event, none for a rolled-back one."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from django.db import transaction

from audit import services as audit

pytestmark = pytest.mark.django_db(transaction=True)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())
        self.lines.extend(record.getMessage().split("\n"))  # a batch comes as records of many lines


@pytest.fixture
def siem() -> Iterator[Lines]:
    logger = logging.getLogger("audit.siem")
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_committed_events_are_json_lines_and_rolled_back_ones_are_not(siem: Lines) -> None:
    with transaction.atomic():
        audit.record(action="test.kept", actor=None, changes={"password": ["a", "b"], "level": ["read", "write"]})
    with pytest.raises(RuntimeError), transaction.atomic():
        audit.record(action="test.rolled_back", actor=None)
        raise RuntimeError("the change failed")
    assert len(siem.lines) == 1
    line = json.loads(siem.lines[0])
    assert line["event"] == "audit_event" and line["action"] == "test.kept" and line["outcome"] == "success"
    assert line["changes"]["level"] == ["read", "write"] and line["changes"]["password"] == ["[redacted]"] * 2
    assert line["request_id"] and line["mac"] and line["id"]


def test_batches_are_streamed_after_their_commit(siem: Lines) -> None:
    with transaction.atomic():
        audit.record_many([audit.build(action=f"test.batch_{i}", actor=None) for i in range(3)])
        assert siem.lines == []  # not before the commit
    assert [json.loads(x)["action"] for x in siem.lines] == ["test.batch_0", "test.batch_1", "test.batch_2"]


def test_a_large_batch_goes_out_in_records_a_pipe_writes_whole(siem: Lines) -> None:
    """Processes sharing standard output must never interleave lines: every record, with the
    handler's newline, fits in PIPE_BUF (4,096 bytes), and none is lost or split."""
    with transaction.atomic():
        audit.record_many(
            [audit.build(action="test.big_batch", actor=None, reason="x" * 300, metadata={"i": i}) for i in range(200)]
        )
    assert [json.loads(x)["metadata"]["i"] for x in siem.lines] == list(range(200))
    assert len(siem.records) > 1
    assert all(len(record.encode()) + 1 <= 4096 for record in siem.records)
