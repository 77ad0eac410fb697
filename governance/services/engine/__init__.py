"""The provisioning engine: one loop that claims, locks, applies, verifies and records one job or
many, with one retry and failure policy (issue 15, item 4). A single job is a run of one.

- `run.py`: the loop (`provisioning_jobs_run`, `provisioning_job_run`), and how jobs are grouped;
- `claim.py`: one statement claims any jobs, with fresh leases;
- the steps, one per kind of target work, chosen by the backend's `converges`
  (governance/backends.py): `tables.py` (PostgreSQL: a (principal, table) pair per job, many pairs
  in one target transaction), `policies.py` (AWS: the grantee's source policy), `memberships.py`
  (a member in a portal Role's group role); `attempt.py` holds what they share, `target.py` the
  PostgreSQL apply-then-verify that the reconciler's repairs use too;
- `record.py`: success, for a whole group in one portal transaction;
- `failures.py`: the failure policy (wait for the source, retry with backoff, fail);
- `jobs.py`: queueing jobs (create, admin retry, membership jobs);
- `sweep.py`: the sweeper (lost messages, dead workers' leases) and overdue revocations.

docs/provisioning.md describes the engine from the outside.
"""
