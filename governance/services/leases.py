"""Leases on running provisioning jobs, renewed by one heartbeat thread per worker process.

A claim marks a job running with `lease_expires_at` = the database's now() plus
PROVISIONING_LEASE_SECONDS. While the worker runs it, this process's heartbeat thread renews the
lease of every job the process holds, every quarter of the lease, in one UPDATE. A worker that
dies (SIGKILL, OOM, the machine) stops renewing: once the lease has passed, the job may be claimed
again (a redelivered message) and the sweeper puts it back in the queue. A live worker's job is
never taken from it, however long the job waits on a lock or a slow target.

Why the database's clock: workers on several machines compare the same timestamps, so a machine
whose clock runs fast cannot presume its neighbours dead.

Why one thread with its own connection: the job's own connection is busy (or inside the job's
transaction) when the lease falls due; a thread per job would multiply connections. The thread's
connection is Django's per-thread connection; it is closed whenever the process holds no job (and
after any error, so the next tick reconnects), so an idle worker keeps no extra session open.

What a lease does not do alone: if a heartbeat cannot reach the portal database for a whole lease,
a second worker may claim the job while the first still runs it. The per-object advisory lock that
every job holds around its target work still keeps the two from touching the target at once, and
jobs converge, so the second run finds the work done.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db.models.functions import Now

log = logging.getLogger(__name__)


def lease_expiry() -> Any:
    """The expression for a fresh lease's end, on the database's clock."""
    return Now() + dt.timedelta(seconds=settings.PROVISIONING_LEASE_SECONDS)


def renew_interval() -> float:
    """How often the heartbeat renews: a quarter of the lease, so three renewals in a row may fail
    (a slow query, a short database hiccup) before a live worker's job looks abandoned."""
    return max(0.2, settings.PROVISIONING_LEASE_SECONDS / 4)


def leases_renew(job_ids: Iterable[int]) -> int:
    """Extend the leases of the given jobs that are still running. Returns how many."""
    from ..models import JobStatus, ProvisioningJob

    ids = list(job_ids)
    if not ids:
        return 0
    return ProvisioningJob.objects.filter(pk__in=ids, status=JobStatus.RUNNING).update(lease_expires_at=lease_expiry())


class Heartbeat:
    """The jobs this process is running, and the daemon thread that renews their leases."""

    def __init__(self) -> None:
        self._held: dict[int, int] = {}  # job id -> number of holders in this process
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.renewals = 0  # how many renewal rounds ran (tests and debugging)

    @contextmanager
    def hold(self, job_ids: Iterable[int]) -> Iterator[None]:
        """Keep the jobs' leases alive while the block runs (the claim already set them)."""
        ids = list(job_ids)
        if not ids:
            yield
            return
        with self._lock:
            self._ensure_thread()
            for pk in ids:
                self._held[pk] = self._held.get(pk, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                for pk in ids:
                    left = self._held.get(pk, 0) - 1
                    if left > 0:
                        self._held[pk] = left
                    else:
                        self._held.pop(pk, None)
                idle = not self._held
            if idle:
                self._wake.set()  # the thread closes its connection now rather than at its next tick

    def held(self) -> list[int]:
        with self._lock:
            return sorted(self._held)

    def _ensure_thread(self) -> None:
        """Start the thread in this process (again after a fork: threads do not survive one)."""
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        if self._pid != os.getpid():
            self._held = {}  # a parent's bookkeeping, copied by fork(): not this process's jobs
        self._pid = os.getpid()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="provisioning-heartbeat", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and close its connection (worker shutdown, tests)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        from django.db import connection  # this thread's own connection

        stop, wake = self._stop, self._wake  # this thread's own (a restart makes new ones)
        try:
            while True:
                wake.wait(renew_interval())
                wake.clear()
                if stop.is_set():
                    return
                ids = self.held()
                if not ids:
                    connection.close()  # idle: keep no session open
                    continue
                try:
                    leases_renew(ids)
                    self.renewals += 1
                except Exception:
                    # The portal database is unreachable or failing over: say so and try again on
                    # the next tick with a new connection. The job itself will fail to record its
                    # outcome in that case anyway.
                    log.exception("Could not renew the leases of provisioning jobs %s", ids)
                    connection.close()
        finally:
            connection.close()


HEARTBEAT = Heartbeat()
