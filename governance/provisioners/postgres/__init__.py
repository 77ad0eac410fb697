"""PostgreSQL adapter: make one target database hold exactly the privileges the portal decided.

The portal's database is the desired state; the target is the actual state. This module knows no
Django: the caller computes a :class:`Desired` (the UNION of every active grant of one principal on
one object), and this module plans SQL, applies it, reads back what the target really holds, and
observes many roles at once for the reconciler.

How a change is made, and why:

* **Plans are data.** :func:`plan_converge` and friends return a :class:`Plan`: an ordered tuple of
  :class:`Statement` built only with :mod:`psycopg2.sql` (every name is an ``Identifier``, every value
  a ``Literal``; no SQL text is ever built with Python string formatting), plus a sha256 ``digest`` of
  the rendered text. The same inputs always give the same text and digest, so the digest shown to an
  approver can be compared with the one a worker is about to apply ("plan changed, re-approve").
* **Converge, don't increment.** A converge plan does ``REVOKE ALL ON TABLE`` and then GRANTs the
  whole desired set, in ONE transaction. Other sessions see either the old or the new ACL, never the
  gap between the two (ACLs live in catalog rows, which are MVCC like any table). Because the
  desired set is the union of all active grants, a privilege another grant still needs is granted
  again in the same transaction, i.e. it never disappears. Running the same plan twice leaves the
  same ACL: applying is idempotent.
* **Column privileges.** Verified on PostgreSQL 15 (and documented for REVOKE): a table-level
  ``REVOKE ALL ON TABLE t FROM p`` also revokes every column-level privilege of ``p`` on ``t``, so the
  converge plan needs no per-column REVOKE and no read of ``pg_attribute.attacl`` first.
* **Serialised per object.** GRANT/REVOKE rewrite the object's catalog row (``pg_class.relacl``)
  without taking a lock on the table; two sessions changing the same table's ACL at once make the
  second fail with ``tuple concurrently updated``. :func:`apply` therefore takes transaction-level
  advisory locks (``pg_advisory_xact_lock``) on the caller's ``lock_key`` and on the keys the plan
  declares (the table), in a fixed order, before any statement; they are released by COMMIT or
  ROLLBACK, so a crashed worker cannot leave one behind. The schema's USAGE grant takes the schema's
  key only when it really has to write (see below), so converges of different tables of one schema
  still run in parallel; likewise the database's key for a principal's first ``GRANT CONNECT``.
* **Extra SQL outside the rendered statements, on purpose.** A few statements carry a *guard*: a
  read-only ``SELECT`` run first, the statement being skipped when the guard says it has nothing to
  do (``CREATE ROLE`` only when the role is missing, ``GRANT USAGE ON SCHEMA`` only when the
  principal lacks it, a pure revoke only when something is held). The guard's meaning is rendered
  in the plan text (``-- only if ...``), so the digest covers it. ``CREATE ROLE`` additionally runs
  inside a SAVEPOINT that tolerates "already exists" (a worker creating the same role concurrently
  on the same cluster: roles are cluster-wide, advisory locks are per database).
* **Verification reads DIRECT ACLs** (``aclexplode`` of ``pg_class.relacl`` / ``pg_attribute.attacl``
  for the principal's oid), not ``has_table_privilege``: the latter also counts privileges inherited
  from PUBLIC and from group roles, which would make a revoke look incomplete, or a missing grant
  look present. Only what the portal itself manages is compared.
* **Secrets** (JIT passwords) are hashed to a SCRAM verifier on the portal side (see
  :mod:`governance.provisioners.scram`), are ``Literal`` values marked secret, and are replaced by
  ``[REDACTED]`` in every rendering, digest, result and error message.

Privileges granted by another grantor than the portal's connection role survive the portal's REVOKE
(PostgreSQL revokes only what the current role, or for a superuser the object owner, granted);
verification then reports them as unexpected rather than hiding them.
"""

from __future__ import annotations

from ..errors import PermanentError, ProvisioningError, TransientError
from .applying import (
    _PREPARED,
    ApplyResult,
    Check,
    Prepared,
    _end_in_band,
    _guard_passes,
    _guards_query,
    _lock_sql,
    _read,
    _require_idle,
    _rollback_quietly,
    _session,
    apply,
    bind,
    forget_prepared,
)
from .classify import (
    _CAPACITY_HINTS,
    _PERMANENT_CONNECT_HINTS,
    _PERMANENT_LABELS,
    _TRANSIENT_SQLSTATES,
    _one_line,
    _scrub,
    classify_error,
)
from .connections import (
    POOL,
    ConnectionPool,
    _Idle,
    connect,
    probe,
)
from .observing import (
    _CONNECT_POSTURE_SQL,
    _OBSERVE_SQL,
    ObservedState,
    Posture,
    connect_posture,
    observe,
    posture,
)
from .planning import (
    _HAS_DIRECT_USAGE,
    _connect_statements,
    _create_role_statement,
    _grant_connect_statement,
    _grant_usage_statement,
    _role_missing_guard,
    _usage_guard,
    _valid_until_text,
    exact_grant_queries,
    plan_converge,
    plan_drop_role,
    plan_ensure_role,
    plan_login_role,
    plan_membership,
    plan_schema_usage,
    revoke_held_statement,
    role_oid,
)
from .render import (
    Guard,
    GuardKind,
    Plan,
    Statement,
    _is_last_lock,
    advisory_key,
    lock_name,
    render,
    topic,
)
from .values import (
    _BARE_NAME,
    _NO_COLUMNS,
    APPLICATION_NAME,
    COLUMN_PRIVILEGES,
    DEFAULT_LOCK_TIMEOUT_MS,
    DEFAULT_STATEMENT_TIMEOUT_MS,
    IDLE_IN_TRANSACTION_TIMEOUT_MS,
    MAINTAIN_SINCE,
    NAMEDATALEN,
    PLAN_FORMAT,
    PRIVILEGE_ORDER,
    REDACTED,
    TABLE_PRIVILEGES,
    Desired,
    ObjectRef,
    Package,
    Privileges,
    RowSecurity,
    Target,
    _check_identifier,
    _check_role_name,
    _freeze_columns,
    _order_privileges,
    _quote_ident,
    _quote_literal,
    check_role_name,
    display_name,
    privileges_for_level,
    server_version_num,
)
from .verifying import (
    _VERIFY_PREPARED,
    VERIFY_KEYS,
    VERIFY_SQL,
    _differences,
    _json_rows,
    _priv_rank,
    verify,
    verify_check,
    verify_differences,
    verify_many,
    verify_membership,
    verify_params,
    verify_role,
    verify_schema_usage,
)

__all__ = [
    "APPLICATION_NAME",
    "COLUMN_PRIVILEGES",
    "DEFAULT_LOCK_TIMEOUT_MS",
    "DEFAULT_STATEMENT_TIMEOUT_MS",
    "IDLE_IN_TRANSACTION_TIMEOUT_MS",
    "MAINTAIN_SINCE",
    "NAMEDATALEN",
    "PLAN_FORMAT",
    "POOL",
    "PRIVILEGE_ORDER",
    "REDACTED",
    "TABLE_PRIVILEGES",
    "VERIFY_KEYS",
    "VERIFY_SQL",
    "_BARE_NAME",
    "_CAPACITY_HINTS",
    "_CONNECT_POSTURE_SQL",
    "_HAS_DIRECT_USAGE",
    "_NO_COLUMNS",
    "_OBSERVE_SQL",
    "_PERMANENT_CONNECT_HINTS",
    "_PERMANENT_LABELS",
    "_PREPARED",
    "_TRANSIENT_SQLSTATES",
    "_VERIFY_PREPARED",
    "ApplyResult",
    "Check",
    "ConnectionPool",
    "Desired",
    "Guard",
    "GuardKind",
    "ObjectRef",
    "ObservedState",
    "Package",
    "PermanentError",
    "Plan",
    "Posture",
    "Prepared",
    "Privileges",
    "ProvisioningError",
    "RowSecurity",
    "Statement",
    "Target",
    "TransientError",
    "_Idle",
    "_check_identifier",
    "_check_role_name",
    "_connect_statements",
    "_create_role_statement",
    "_differences",
    "_end_in_band",
    "_freeze_columns",
    "_grant_connect_statement",
    "_grant_usage_statement",
    "_guard_passes",
    "_guards_query",
    "_is_last_lock",
    "_json_rows",
    "_lock_sql",
    "_one_line",
    "_order_privileges",
    "_priv_rank",
    "_quote_ident",
    "_quote_literal",
    "_read",
    "_require_idle",
    "_role_missing_guard",
    "_rollback_quietly",
    "_scrub",
    "_session",
    "_usage_guard",
    "_valid_until_text",
    "advisory_key",
    "apply",
    "bind",
    "check_role_name",
    "classify_error",
    "connect",
    "connect_posture",
    "display_name",
    "exact_grant_queries",
    "forget_prepared",
    "lock_name",
    "observe",
    "plan_converge",
    "plan_drop_role",
    "plan_ensure_role",
    "plan_login_role",
    "plan_membership",
    "plan_schema_usage",
    "posture",
    "privileges_for_level",
    "probe",
    "render",
    "revoke_held_statement",
    "role_oid",
    "server_version_num",
    "topic",
    "verify",
    "verify_check",
    "verify_differences",
    "verify_many",
    "verify_membership",
    "verify_params",
    "verify_role",
    "verify_schema_usage",
]
