"""What the engine carries for one claimed job from its claim to its outcome, and what each kind of
target work (a step) provides to the one loop in :mod:`.run`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from ... import provisioning
from ...models import DataSource, Grant, ProvisioningJob
from ...provisioners import postgres as pg

# How a claimed job left the run: done, failed for good, queued again with a retry message due
# later, waiting for its source, or queued again to run in a group of its own (see run.py).
Outcome = Literal["succeeded", "failed", "retrying", "parked", "split"]


@dataclass(eq=False)
class Attempt:
    """One claimed job on its way through the engine. `job` is the row as claimed: its id, action,
    attempt number and start, with its grant (dataset, source and its health, classification,
    grantee) or its membership and source loaded."""

    job: ProvisioningJob
    ref: provisioning.PrincipalRef | None = None  # the grantee's principal, once the step knows it
    statements: list[str] = field(default_factory=list)  # executed on the target, secrets redacted
    target_ms: float | None = None  # this job's share of its group's target time
    error: BaseException | None = None  # why it did not succeed; the failure policy decides what follows
    outcome: Outcome | None = None

    @property
    def grant(self) -> Grant:
        assert self.job.grant is not None, "a grant job"
        return self.job.grant

    @property
    def source(self) -> DataSource:
        return job_source(self.job)


def job_source(job: ProvisioningJob) -> DataSource:
    """The data source a job works on (membership jobs name it; grant jobs reach it by the grant)."""
    if job.source is not None:
        return job.source
    assert job.grant is not None
    return job.grant.dataset.source


def plan_changed() -> pg.PermanentError:
    return pg.PermanentError(
        "Plan changed since approval (the dataset's columns, tags or classification changed): re-approval needed."
    )


def verification_failed(problems: list[str]) -> pg.PermanentError:
    return pg.PermanentError("Verification failed after apply: " + "; ".join(problems))


class Step(Protocol):
    """The target work of one kind of job (tables.py, policies.py, memberships.py). The loop calls,
    for a group of jobs of one source: `prepare`, then with the portal locks of `lock_keys` held,
    `converge`. A step never records anything in the portal: the loop records the outcome."""

    def __init__(self, source: DataSource) -> None: ...

    def alone(self, attempt: Attempt) -> bool:
        """Whether the job needs a group of its own (target work beyond one converge: a JIT login,
        ending sessions; or a kind whose converge does not combine)."""
        ...

    def prepare(self, attempts: list[Attempt]) -> None:
        """Before any lock, without touching the target: each job's principal and, for an apply, the
        plan digest its approvers saw. A job that must not run gets its `error` (permanent)."""
        ...

    def lock_keys(self, attempts: list[Attempt]) -> list[str]:
        """The portal advisory locks (services/locks.py) held from before the desired state is read
        until the outcome is recorded."""
        ...

    def converge(self, attempts: list[Attempt]) -> float:
        """Under the locks: read the desired state, apply it in one target transaction and verify.
        Sets each job's `statements` and `target_ms`, or its `error` when verification finds a
        difference in its part; raises when the target work failed as a whole. Returns the
        group's target time (ms)."""
        ...
