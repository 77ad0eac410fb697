"""A worker killed in the middle of a long operation: the operation does not stay running forever."""

from __future__ import annotations

from typing import Any

import pytest

from audit.models import AuditEvent
from governance.models import Dataset, Operation, OperationKind, OperationState
from governance.services.operations import operation_start
from tests.provisioning.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_operation_whose_worker_was_killed_is_failed_by_the_sweeper_not_left_running(
    fresh_target: Any, superuser: Any, celery_worker: Any, source_row_held: Any
) -> None:
    """SIGKILL while a catalog sync waits to write (the test holds the source's row): no more
    heartbeats. The sweeper of the next worker's beat fails it once OPERATION_LEASE_SECONDS (3 s
    here, 60 s in production) have passed, with the reason, as the system."""
    held = source_row_held(fresh_target)
    operation = operation_start(kind=OperationKind.CATALOG_SYNC, source=fresh_target, actor=superuser)
    wait_for(lambda: Operation.objects.filter(pk=operation.pk, stage="writing the catalog").exists(), timeout=30)
    celery_worker.kill()
    held.rollback()
    assert Operation.objects.get(pk=operation.pk).state == OperationState.RUNNING  # the dead worker left it so
    celery_worker.start()

    failed = wait_for(lambda: Operation.objects.filter(pk=operation.pk, state=OperationState.FAILED).first(), 40)
    assert "worker running it stopped" in failed.error and failed.finished_at is not None
    event = AuditEvent.objects.get(action="operation.failed")
    assert event.actor is None and event.outcome == "failed"
    assert not Dataset.objects.filter(source=fresh_target).exists()  # the killed sync wrote nothing
