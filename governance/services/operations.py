"""Long operations in the background: start one (audited), run it in a worker with its progress
recorded, finish it (audited), and fail the ones whose worker died.

A catalog sync of a large source or a reconcile with repairs takes longer than a web request may
(the web server's timeout, a person staring at a spinner). The admin and the API therefore only
*start* an operation: `operation_start` checks that the actor may run it on that source (the
refusal is audited), writes the `Operation` row and its `operation.started` event in one
transaction, and publishes its id once that transaction commits. A worker runs `operation_run`:
it claims the row (`queued` -> `running`), runs the same service a person used to wait for
(`datasource_sync`, `reconcile_source`, with the starter as the actor, so that their own audit
events name them) while the work reports its steps (`governance.progress`), and finishes it as
`succeeded` or `failed` with an `operation.succeeded` / `operation.failed` event.

Progress is operational metadata, not a decision: it is written with `.update()` outside any
transaction of the work, at most a few times a second, and not audited (the start and the end are).

A worker that dies mid-run (SIGKILL, OOM, the machine) stops the heartbeat thread that renews
`heartbeat_at` on the database's clock every quarter of OPERATION_LEASE_SECONDS; the sweeper
(`operations_sweep`, run with the provisioning sweeper) fails an operation whose heartbeat is older
than the lease, and one still queued after OPERATION_QUEUED_MAX_SECONDS (no worker took its
message), so none stays `running` or `queued` forever. Such an operation is not retried on its
own: a sync or reconcile is safe to run again, and the person who started it decides.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models.functions import Now
from django.utils import timezone

from audit import services as audit
from audit.models import Outcome

from .. import progress
from ..errors import DomainError, InvalidInput
from ..models import DataSource, Operation, OperationKind, OperationState
from . import publishing
from .common import refusal_recorded
from .reconcile import ensure_may_reconcile, reconcile_source
from .sync import datasource_sync, ensure_may_sync

log = logging.getLogger(__name__)

# How often the recorder writes progress at most (a sync samples relations by the thousand).
PROGRESS_EVERY_SECONDS = 0.5


def operation_start(*, kind: str, source: DataSource, actor: Any, fix: bool = False) -> Operation:
    """Queue a catalog sync or a reconcile (with `fix`: and repair) of `source` for a worker.

    Refused at once, and recorded as a denied `operation.start`, when the actor may not run it or
    the source cannot have it (the same checks the run makes again). The row and its
    `operation.started` event commit together; the worker's message leaves on that commit."""
    with refusal_recorded(action="operation.start", actor=actor, target=source, metadata={"kind": kind}):
        with transaction.atomic():
            if kind == OperationKind.CATALOG_SYNC:
                ensure_may_sync(actor, source)
                params: dict[str, Any] = {}
            elif kind == OperationKind.RECONCILE:
                ensure_may_reconcile(actor, source)
                params = {"fix": bool(fix)}
            else:
                raise InvalidInput(f"{kind!r} is not an operation that runs on a data source.", field="kind")
            operation = Operation.objects.create(kind=kind, source=source, params=params, started_by=actor)
            audit.record(
                action="operation.started",
                actor=actor,
                target=operation,
                reason=f"{operation.get_kind_display()} of {source.name}",
                metadata={"kind": kind, "source": source.name, **params},
            )
            transaction.on_commit(lambda: publishing.operation(operation.pk))
    return operation


def operation_run(*, operation_id: int) -> Operation | None:
    """Run a queued operation (the worker's task). None when it is not queued any more: a duplicate
    message, or an operation the sweeper already failed. Never raises for the work's own failure:
    that is the operation's outcome, recorded on it and in the trail."""
    operation = _claim(operation_id)
    if operation is None:
        return None
    try:
        with _heartbeat(operation.pk), progress.reporting(_Recorder(operation.pk)):
            summary, result = _RUNNERS[operation.kind](operation)
    except DomainError as exc:  # refused or failed: the service already audited its own event
        return _finish(operation, OperationState.FAILED, error=exc.message)
    except Exception as exc:  # a bug, a lost connection: the operation must still end
        log.exception("Operation %s failed", operation.pk)
        return _finish(operation, OperationState.FAILED, error=f"{type(exc).__name__}: {exc}".splitlines()[0][:500])
    errors = result.pop("errors", [])
    if errors:  # a reconcile whose repairs failed: the run finished, its purpose did not
        return _finish(operation, OperationState.FAILED, summary=summary, result=result, error="; ".join(errors))
    return _finish(operation, OperationState.SUCCEEDED, summary=summary, result=result)


def _run_sync(operation: Operation) -> tuple[str, dict[str, Any]]:
    assert operation.source is not None
    outcome = datasource_sync(source=operation.source, actor=operation.started_by)
    return outcome.summary(), outcome.counts()


def _run_reconcile(operation: Operation) -> tuple[str, dict[str, Any]]:
    assert operation.source is not None
    outcome = reconcile_source(
        source=operation.source, fix=bool(operation.params.get("fix")), actor=operation.started_by
    )
    counts = {"drift": len(outcome.drift), "fixed": outcome.fixed, "remaining": outcome.remaining}
    return outcome.summary(), {**counts, "errors": outcome.errors[:20]}


_RUNNERS: dict[str, Callable[[Operation], tuple[str, dict[str, Any]]]] = {
    OperationKind.CATALOG_SYNC: _run_sync,
    OperationKind.RECONCILE: _run_reconcile,
}


def _claim(operation_id: int) -> Operation | None:
    with transaction.atomic():
        operation = (
            Operation.objects.select_for_update(of=("self",))
            .select_related("source", "started_by")
            .filter(pk=operation_id, state=OperationState.QUEUED)
            .first()
        )
        if operation is None:
            return None
        if operation.kind not in _RUNNERS:
            log.error("Operation %s has kind %s, which no worker runs", operation.pk, operation.kind)
            return None
        operation.state = OperationState.RUNNING
        operation.started_at = timezone.now()
        Operation.objects.filter(pk=operation.pk).update(
            state=operation.state, started_at=operation.started_at, heartbeat_at=Now()
        )
    return operation


def _finish(
    operation: Operation,
    state: str,
    *,
    summary: str = "",
    result: dict[str, Any] | None = None,
    error: str = "",
    swept: bool = False,
) -> Operation:
    """`running` -> `succeeded`/`failed`, with its event, unless the sweeper got there first (or,
    `swept`, unless the worker finished it or beat again since the sweeper looked)."""
    with transaction.atomic():
        current = Operation.objects.select_for_update().filter(pk=operation.pk).first()
        if current is None or current.finished:
            return current or operation
        alive = Operation.objects.filter(pk=operation.pk, heartbeat_at__gte=Now() - _lease())
        if swept and current.state == OperationState.RUNNING and alive.exists():
            return current
        current.state = state
        current.summary = summary[:1000]
        current.result = result or {}
        current.error = error[:1000]
        current.finished_at = timezone.now()
        if state == OperationState.SUCCEEDED and current.total:
            current.done = current.total
        current.save(update_fields=["state", "summary", "result", "error", "finished_at", "done"])
        where = f" of {operation.source.name}" if operation.source else ""
        audit.record(
            action=f"operation.{state}",
            actor=None if swept else operation.started_by,  # the sweeper is the system
            target=current,
            outcome=Outcome.SUCCESS if state == OperationState.SUCCEEDED else Outcome.FAILED,
            reason=(summary or error)[:500] or f"{current.get_kind_display()}{where}",
            metadata={"kind": current.kind, "result": current.result, **({"error": error[:500]} if error else {})},
        )
    return current


class _Recorder:
    """The reporter installed while an operation runs: writes the stage and counts to its row,
    at most every PROGRESS_EVERY_SECONDS (a new stage and the end of one at once)."""

    def __init__(self, operation_id: int) -> None:
        self.operation_id = operation_id
        self.last: tuple[str, float] = ("", 0.0)

    def __call__(self, done: int, total: int, stage: str) -> None:
        if connection.in_atomic_block:
            return  # inside the work's transaction the row would be locked and the count unseen
        now = time.monotonic()
        last_stage, last_at = self.last
        if stage == last_stage and done < total and now - last_at < PROGRESS_EVERY_SECONDS:
            return
        self.last = (stage, now)
        Operation.objects.filter(pk=self.operation_id, state=OperationState.RUNNING).update(
            stage=stage[:64], done=done, total=total, heartbeat_at=Now()
        )


def _lease() -> dt.timedelta:
    return dt.timedelta(seconds=settings.OPERATION_LEASE_SECONDS)


@contextmanager
def _heartbeat(operation_id: int) -> Iterator[None]:
    """Renew the operation's `heartbeat_at` every quarter of the lease from a thread with its own
    connection, however long one step of the work takes (one catalog query, one transaction)."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(max(0.2, settings.OPERATION_LEASE_SECONDS / 4)):
                try:
                    Operation.objects.filter(pk=operation_id, state=OperationState.RUNNING).update(heartbeat_at=Now())
                except Exception:  # the next beat reconnects; three may fail before the lease passes
                    log.warning("Operation %s: heartbeat failed", operation_id, exc_info=True)
                    close_old_connections()
        finally:
            connection.close()

    thread = threading.Thread(target=beat, name=f"operation-{operation_id}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def operations_sweep() -> int:
    """Fail the operations whose worker stopped (heartbeat older than OPERATION_LEASE_SECONDS) or
    that no worker took (queued longer than OPERATION_QUEUED_MAX_SECONDS). One query when none is."""
    stale = Operation.objects.filter(state=OperationState.RUNNING, heartbeat_at__lt=Now() - _lease())
    lost = Operation.objects.filter(
        state=OperationState.QUEUED,
        created_at__lt=Now() - dt.timedelta(seconds=settings.OPERATION_QUEUED_MAX_SECONDS),
    )
    swept = 0
    for operation in (stale | lost).select_related("source", "started_by").order_by("pk")[:100]:
        if operation.state == OperationState.RUNNING:
            why = (
                f"The worker running it stopped (no heartbeat for {settings.OPERATION_LEASE_SECONDS:g} s); "
                "start it again."
            )
        else:
            why = f"No worker took it within {settings.OPERATION_QUEUED_MAX_SECONDS} s; start it again."
        _finish(operation, OperationState.FAILED, error=why, swept=True)
        swept += 1
    return swept
