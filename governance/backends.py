"""The backend registry: everything that differs between the kinds of target the portal provisions.

One `Backend` per `SourceKind` (PostgreSQL, AWS), looked up with :func:`backend_for`. Callers ask
the backend (`backend_for(source).jit_logins`, `.plan_text(request)`) instead of comparing the
source's kind: this module and `governance/models/` are the only places that name a kind, so a new
kind of target is one more class here plus its adapter in `governance/provisioners/`.

Layering (docs/provisioning.md#layering): this module sits above `governance/provisioning.py` (the
portal state → adapter types of each kind) and the catalog readers, and below the services, the
selectors and (through them) the edges. It reads; it never writes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import math
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Protocol

from . import provisioning
from .catalog.sync import SourceSnapshot, read_source
from .catalog.sync_s3 import read_s3_source
from .models import AccessRequest, DataSource, Grant, SourceKind, SslMode
from .provisioners import aws_iam as aws
from .provisioners import aws_usage
from .provisioners import postgres as pg
from .provisioners.errors import UsageUnavailable
from .provisioners.postgres import usage as pg_usage
from .provisioning import PrincipalRef


class Converges(StrEnum):
    """What one provisioning job rewrites on the target, and so what it locks and reconciles."""

    OBJECT = "object"  # one principal's privileges on one object (a table's ACL)
    PRINCIPAL_POLICY = "principal_policy"  # the grantee's whole policy on the source (every dataset)


@dataclasses.dataclass(frozen=True)
class Use:
    """A use seen: by `principal` (a SourcePrincipal's db_role) of the dataset (schema, name), or
    of any dataset of the source (None: AWS tells per service, not per prefix)."""

    principal: str
    dataset: tuple[str, str] | None
    at: dt.datetime
    seen_as: str  # who the target says it was (a login, a JIT login, the principal itself)


@dataclasses.dataclass(frozen=True)
class UsageRead:
    """One reading of a source's use (last-used facts, governance/services/usage.py)."""

    can_tell: bool
    reason: str = ""  # why it cannot tell
    read_at: dt.datetime | None = None
    stats_reset: dt.datetime | None = None
    counters: dict[str, int] = dataclasses.field(default_factory=dict)  # compared by the next reading
    observed_since: dt.datetime | None = None  # when the source itself says how far back it sees
    uses: tuple[Use, ...] = ()
    unparsed: int = 0


class Backend(Protocol):
    kind: str
    converges: Converges
    # Capabilities: what the portal can do on this kind of target.
    jit_logins: bool  # issue temporary database logins
    row_filters: bool  # enforce row filters (row-level security policies; docs/privacy.md)
    role_membership: bool  # make a portal Role's members members of its target role
    batch_apply: bool  # apply many grants in one target transaction (services/engine/tables.py)
    terminates_sessions: bool  # end the grantee's open sessions on revoke (per classification)
    needs_mapped_principal: bool  # the portal never creates identities: a grantee must be mapped first
    named_after_source: bool  # what the portal creates is named after the source (a rename orphans it)
    registers_datasets: bool  # datasets are registered by an admin as well as discovered by the sync
    # The reconciler records what the portal's own login on the target is (superuser or not) in its
    # `reconcile.run` event: the compliance posture page reads it (compliance/controls.py).
    observes_login: bool
    # the portal rotates its own password on the source (governance/services/credentials.py)
    rotates_own_credential: bool
    # the portal's login may be leased from Vault's database engine (governance/dynamic_credentials.py)
    vault_database_login: bool
    # column treatments (masked, pseudonymised, nulled) are enforced by governed views there
    enforces_treatments: bool
    # the portal can compute aggregates in the source with SQL, as itself (privacy/, docs/privacy.md)
    answers_aggregates: bool

    def plan_text(self, subject: Grant | AccessRequest, principal: PrincipalRef | None = None) -> list[str]:
        """The lines an approver sees, identical to what runs on the target."""
        ...

    def check_principal(self, source: DataSource, ref: PrincipalRef) -> None:
        """Raise a PermanentError when the grantee cannot be provisioned under `ref`."""
        ...

    def principal_name(self, name: str) -> str:
        """`name` as stored for a mapped principal; ValueError (with the user's message) if unusable."""
        ...

    def lock_key(self, grant: Grant) -> str:
        """The portal-side lock a grant's job takes (see :class:`Converges`)."""
        ...

    def probe(self, source: DataSource, *, timeout: float) -> Callable[[], None]:
        """A call that raises a ProvisioningError with `unreachable` set when `source` does not
        answer. Built in the caller's thread (reading credentials may query the portal), run in any
        thread (network only)."""
        ...

    def read_catalog(self, source: DataSource) -> SourceSnapshot:
        """What the catalog sync reads from the source (raises SyncFailed)."""
        ...

    def transport_problem(self, source: DataSource) -> str:
        """Why the portal's connection to `source` does not verify the server's certificate, in a
        few words; empty when it does (no I/O: the source's settings only)."""
        ...

    def read_usage(
        self,
        source: DataSource,
        *,
        principals: list[str],
        previous: dict[str, int] | None,
        previous_reset: dt.datetime | None = None,
    ) -> UsageRead:
        """Who used what since the `previous` reading's counters (None: none to compare with).
        Raises a ProvisioningError when the source does not answer."""
        ...


class PostgresBackend:
    kind = SourceKind.POSTGRESQL.value
    converges = Converges.OBJECT
    jit_logins = True
    row_filters = True
    role_membership = True
    batch_apply = True
    terminates_sessions = True
    needs_mapped_principal = False
    named_after_source = False
    registers_datasets = False
    observes_login = True
    rotates_own_credential = True
    vault_database_login = True
    enforces_treatments = True
    answers_aggregates = True

    def plan_text(self, subject: Grant | AccessRequest, principal: PrincipalRef | None = None) -> list[str]:
        return list(provisioning.own_plan(subject, principal).lines)

    def check_principal(self, source: DataSource, ref: PrincipalRef) -> None:
        return None  # a managed role is created on first use; a mapped one exists already

    def principal_name(self, name: str) -> str:
        try:
            pg.check_role_name(name)
        except ValueError as exc:
            raise ValueError(f"Not a usable PostgreSQL role name: {exc}.") from None
        return name

    def lock_key(self, grant: Grant) -> str:
        return provisioning.lock_key(grant.dataset)

    def probe(self, source: DataSource, *, timeout: float) -> Callable[[], None]:
        # libpq counts connect_timeout in whole seconds and treats anything below 2 as 2.
        target = dataclasses.replace(provisioning.target_for(source), connect_timeout=max(2, math.ceil(timeout)))
        return functools.partial(pg.probe, target)

    def read_catalog(self, source: DataSource) -> SourceSnapshot:
        return read_source(source)

    def transport_problem(self, source: DataSource) -> str:
        # verify-ca checks the chain, verify-full the host name too; anything less accepts any server.
        if source.sslmode in (SslMode.VERIFY_CA, SslMode.VERIFY_FULL):
            return ""
        return f"sslmode {source.sslmode}"

    def read_usage(
        self,
        source: DataSource,
        *,
        principals: list[str],
        previous: dict[str, int] | None,
        previous_reset: dt.datetime | None = None,
    ) -> UsageRead:
        target = provisioning.target_for(source)
        try:
            with pg.POOL.connection(target) as conn:
                reading = pg_usage.read_usage(conn, principals=principals, ignore=(source.username,))
        except UsageUnavailable as exc:
            return UsageRead(can_tell=False, reason=exc.reason)
        used = pg_usage.new_use(reading, previous, previous_reset)
        return UsageRead(
            can_tell=True,
            read_at=reading.read_at,
            stats_reset=reading.stats_reset,
            counters=reading.counters(),
            uses=tuple(Use(p, (o.schema, o.name), reading.read_at, user) for p, o, user in sorted(used, key=str)),
            unparsed=reading.unparsed,
        )


class AwsBackend:
    """S3 prefixes governed by IAM policies: one policy per (grantee, source), rebuilt from every
    grant in force (docs/aws.md)."""

    kind = SourceKind.AWS.value
    converges = Converges.PRINCIPAL_POLICY
    jit_logins = False
    row_filters = False
    role_membership = False  # a portal role is an IAM role: who may assume it is not ours to change
    batch_apply = False
    terminates_sessions = False
    needs_mapped_principal = True
    named_after_source = True  # the policies live under a path named after the source, in its account
    registers_datasets = True  # S3 prefixes
    rotates_own_credential = False  # IAM access keys: not yet
    vault_database_login = False  # Vault's AWS engine would be the analogue: not built
    answers_aggregates = False  # objects, not rows: no SQL to bound and aggregate in
    observes_login = False  # an IAM principal has no "superuser"; its policies are the portal's to read
    enforces_treatments = False  # an S3 object is read whole: PII is granted raw or not at all

    def plan_text(self, subject: Grant | AccessRequest, principal: PrincipalRef | None = None) -> list[str]:
        try:
            return provisioning.aws_own_plan(subject, principal)
        except pg.PermanentError as exc:
            return [f"-- cannot be applied as it stands: {exc.message}"]

    def check_principal(self, source: DataSource, ref: PrincipalRef) -> None:
        provisioning.aws_principal(source, ref)

    def principal_name(self, name: str) -> str:
        try:
            return str(aws.IamPrincipal.parse(name))
        except pg.ProvisioningError as exc:
            raise ValueError(exc.message) from None

    def lock_key(self, grant: Grant) -> str:
        return provisioning.aws_lock_key(grant.dataset.source_id, grant.grantee_user_id, grant.grantee_role_id)

    def probe(self, source: DataSource, *, timeout: float) -> Callable[[], None]:
        return functools.partial(aws.probe, provisioning.aws_target_for(source), source.name, timeout=timeout)

    def read_catalog(self, source: DataSource) -> SourceSnapshot:
        return read_s3_source(source)

    def transport_problem(self, source: DataSource) -> str:
        # boto3 verifies AWS's certificates; a custom endpoint over plain HTTP verifies nothing.
        if source.aws_endpoint_url.lower().startswith("http://"):
            return "endpoint over plain HTTP"
        return ""

    def read_usage(
        self,
        source: DataSource,
        *,
        principals: list[str],
        previous: dict[str, int] | None,
        previous_reset: dt.datetime | None = None,
    ) -> UsageRead:
        identities = {}
        for name in principals:
            try:
                identities[aws.IamPrincipal.parse(name)] = name
            except pg.ProvisioningError:
                continue  # not a mapping the portal could have provisioned
        try:
            last = aws_usage.s3_last_accessed(provisioning.aws_target_for(source), list(identities))
        except UsageUnavailable as exc:
            return UsageRead(can_tell=False, reason=exc.reason)
        now = dt.datetime.now(dt.UTC)
        return UsageRead(
            can_tell=True,
            read_at=now,
            observed_since=now - dt.timedelta(days=aws_usage.TRACKING_DAYS),
            uses=tuple(Use(identities[p], None, at, identities[p]) for p, at in last.items() if at is not None),
        )


_REGISTRY: dict[str, Backend] = {b.kind: b for b in (PostgresBackend(), AwsBackend())}

KINDS: tuple[str, ...] = tuple(_REGISTRY)
"""Every kind the portal syncs, provisions and reconciles (for `kind__in=` filters)."""


def has_backend(source: DataSource) -> bool:
    return source.kind in _REGISTRY


def backend_for(source: DataSource) -> Backend:
    """The backend of `source`'s kind; LookupError for a kind the portal does not know."""
    try:
        return _REGISTRY[source.kind]
    except KeyError:
        raise LookupError(f"{source.name}: no backend for sources of kind {source.kind!r}") from None


def plan_digest(
    subject: Grant | AccessRequest,
    principal: PrincipalRef | None = None,
    facts: list[tuple[str, str, list[str]]] | None = None,
    plan: pg.Plan | None = None,
) -> str:
    """What the approvers approved: the plan plus the dataset facts it was computed from.

    If the dataset's columns, their confirmed tags or its classification change between approval
    and apply, the digest changes and the job fails safe instead of applying something nobody saw.
    `plan` (PostgreSQL) spares recomputing a plan the caller already has.
    """
    dataset = subject.dataset
    columns = provisioning.dataset_facts([dataset.pk])[dataset.pk] if facts is None else facts
    lines = list(plan.lines) if plan is not None else backend_for(dataset.source).plan_text(subject, principal)
    payload: dict[str, Any] = {
        "plan": lines,
        "classification": dataset.classification.slug,
        "columns": columns,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
