"""From the portal's desired state (Grants) to what the PostgreSQL adapter needs, and back.

Reads only: which target role stands for a grantee, what a principal should hold on an object (the
union of its active grants), each kind's plan and the dataset facts a plan's digest covers. What
differs by kind is chosen in `governance/backends.py` (the registry), which builds on this module.
Writes live in the engine, `governance/services/engine/`; SQL lives in `governance/provisioners/postgres/`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Q

from governance.dynamic_credentials import remember_key, source_login
from governance.secrets import dynamic_role, source_password

from . import crypto
from .models import AccessRequest, Dataset, DataSource, Grant, GrantStatus, SourcePrincipal, TagStatus
from .provisioners import aws_iam as aws
from .provisioners import aws_policy as awsp
from .provisioners import pg_packages as pgp
from .provisioners import pg_row_filters as pgr
from .provisioners import pg_views as pgv
from .provisioners import postgres as pg

_NAME_OK = re.compile(r"[^a-z0-9_]")


def managed_role_name(source: DataSource, kind: str, ident: str) -> str:
    """`<prefix><kind>_<ident>` folded to [a-z0-9_], at most 63 bytes (PostgreSQL's limit).

    Long or folded names get a short hash suffix so that two people never share a role.
    """
    base = _NAME_OK.sub("_", ident.lower())
    name = f"{source.role_prefix}{kind}_{base}"
    if base != ident or len(name) > 63:
        digest = hashlib.sha256(ident.encode()).hexdigest()[:8]
        name = f"{name[: 63 - 9]}_{digest}"
    return name


@dataclass(frozen=True)
class PrincipalRef:
    """A grantee's role on a source; `existing` is the mapping row when there is one."""

    db_role: str
    managed: bool
    existing: SourcePrincipal | None
    # When the managed name this grantee would get is already mapped to someone else on the source
    # (e.g. after a username change): who holds it. Nothing may be provisioned under it then.
    taken_by: str = ""

    def ensure_free(self) -> None:
        if self.taken_by:
            raise pg.PermanentError(
                f"The role name {self.db_role} on this source already belongs to {self.taken_by}: map this "
                "grantee to its own role (Source principals) before provisioning."
            )


def _managed_name(source: DataSource, user: Any, role: Any) -> str:
    return (
        managed_role_name(source, "u", user.username) if user is not None else managed_role_name(source, "r", role.slug)
    )


def principal_for(*, source: DataSource, user: Any = None, role: Any = None) -> PrincipalRef:
    """The target role for a user or a portal Role on `source` (mapped, or the managed name)."""
    name = _managed_name(source, user, role)
    subject = Q(user=user) if user is not None else Q(role=role)
    rows = list(SourcePrincipal.objects.filter(source=source).filter(subject | Q(db_role=name)))
    mine = next((r for r in rows if (r.user_id == user.pk if user is not None else r.role_id == role.pk)), None)
    return _principal(source, mine, user, role, rows)


def _principal(
    source: DataSource, row: SourcePrincipal | None, user: Any, role: Any, rows: Iterable[SourcePrincipal] = ()
) -> PrincipalRef:
    if row is not None:
        return PrincipalRef(db_role=row.db_role, managed=row.managed, existing=row)
    name = _managed_name(source, user, role)
    holder = next((r for r in rows if r.db_role == name), None)
    taken_by = ""
    if holder is not None:
        taken_by = f"user #{holder.user_id}" if holder.user_id else f"role #{holder.role_id}"
    return PrincipalRef(db_role=name, managed=True, existing=None, taken_by=taken_by)


def grant_principals(source: DataSource, grants: Iterable[Grant]) -> dict[int, PrincipalRef]:
    """:func:`grant_principal` for many grants of one source in one query, by grant id."""
    grants = list(grants)
    user_ids = {g.grantee_user_id for g in grants if g.grantee_user_id}
    role_ids = {g.grantee_role_id for g in grants if g.grantee_role_id}
    names = {_managed_name(source, g.grantee_user, g.grantee_role) for g in grants}
    rows = list(
        SourcePrincipal.objects.filter(source=source).filter(
            Q(user_id__in=user_ids) | Q(role_id__in=role_ids) | Q(db_role__in=names)
        )
    )
    by_user = {r.user_id: r for r in rows if r.user_id}
    by_role = {r.role_id: r for r in rows if r.role_id}
    return {
        g.pk: _principal(
            source,
            by_user.get(g.grantee_user_id) if g.grantee_user_id else by_role.get(g.grantee_role_id or 0),
            g.grantee_user,
            g.grantee_role,
            rows,
        )
        for g in grants
    }


def grant_principal(grant: Grant | AccessRequest) -> PrincipalRef:
    return principal_for(source=grant.dataset.source, user=grant.grantee_user, role=grant.grantee_role)


def object_ref(dataset: Dataset) -> pg.ObjectRef:
    return pg.ObjectRef(schema=dataset.schema, name=dataset.name)


def package_of(
    dataset: Dataset,
    level: str,
    columns: Collection[str] | None,
    treatments: dict[str, str] | None = None,
    row_filter: dict[str, Any] | None = None,
) -> pg.Package:
    """The access package a grant of `level` on `columns` of `dataset` is held through; with a
    treatment other than raw, a package holding SELECT on the governed view of those columns;
    `row_filter` is a grant's (or request's) filter snapshot (docs/privacy.md "Row filters"). The two
    are not combined: the request services refuse a treated grant with a row filter."""
    source = dataset.source
    if treatments and any(t != pgv.RAW for t in treatments.values()):
        view = governed_view_of(dataset, columns, treatments)
        privileges = pg.privileges_for_level("read", None)
        pkg = pgp.package(source.role_prefix, source.database or "", view.view, privileges)
        return pg.Package(pkg.name, pkg.obj, pkg.privileges, view)
    privileges = pg.privileges_for_level(level, columns)
    tree = pgr.from_json(row_filter["tree"]) if row_filter else None
    security = dataset.row_security
    rls = (
        None if security is None else pg.RowSecurity(bool(security.get("force")), tuple(security.get("confirmed", ())))
    )
    return pgp.package(source.role_prefix, source.database or "", object_ref(dataset), privileges, tree, rls)


def row_filter_of(subject: Grant | AccessRequest) -> dict[str, Any] | None:
    return subject.row_filter_snapshot or None


def governed_schema_of(settings_row: Any) -> str:
    """The schema a source's governed views live in (its GovernedSchema row, or the default)."""
    return settings_row.schema if settings_row is not None else pgv.DEFAULT_SCHEMA


def governed_view_of(dataset: Dataset, columns: Collection[str] | None, treatments: dict[str, str]) -> pgv.GovernedView:
    """The governed view a grant with `treatments` reads: the columns it covers (every present one
    for a whole-table grant), in the table's order, each with its treatment and the PII kind its mask
    follows; in the source's governed schema, with its pseudonym key when one is pseudonymised."""
    from .models import GovernedSchema
    from .policy import column_pii_tags

    wanted = set(columns or ())
    rows = [
        c
        for c in dataset.columns.filter(is_present=True).order_by("ordinal").prefetch_related("tags")
        if not wanted or c.name in wanted
    ]
    view_columns = []
    for col in rows:
        tags = column_pii_tags(col)
        family = pgv.type_family(col.data_type)
        # The mask follows the first PII kind with a partial mask for the column's type.
        tag = next((t for t in tags if family in pgv.PARTIAL_MASKS.get(t, ())), next(iter(tags), ""))
        view_columns.append(pgv.ViewColumn(col.name, family, treatments.get(col.name, pgv.RAW), tag))
    settings_row = GovernedSchema.objects.filter(source_id=dataset.source_id).first()
    schema = governed_schema_of(settings_row)
    pads = None
    if settings_row is not None and settings_row.pseudonym_key_encrypted:
        pads = pgv.pseudonym_pads(bytes.fromhex(crypto.decrypt(settings_row.pseudonym_key_encrypted)))
    try:
        return pgv.governed_view(
            object_ref(dataset),
            view_columns,
            schema=schema,
            role_prefix=dataset.source.role_prefix,
            database=dataset.source.database or "",
            pads=pads,
        )
    except ValueError as exc:
        raise pg.PermanentError(f"The governed view of {dataset.qualified_name} cannot be made: {exc}.") from None


def desired_for(
    *, dataset: Dataset, grants: Iterable[Grant], principal: str, stale: Iterable[Grant | AccessRequest] = ()
) -> pg.Desired:
    """What `principal` holds on the dataset: membership in the packages of `grants` (all in force,
    same principal, same dataset); it leaves the packages of `stale` that none of them needs (a
    governed view's package, then the view once nobody holds it)."""
    packages = [package_of(dataset, g.level, g.columns, g.treatments, row_filter_of(g)) for g in grants]
    leaving = [package_of(dataset, g.level, _columns(g), g.treatments, row_filter_of(g)) for g in stale]
    on = {p.name: p.obj for p in leaving if p.view is not None}
    return pg.Desired.through(principal, object_ref(dataset), packages, [p.name for p in leaving], on)


def _columns(subject: Grant | AccessRequest) -> list[str]:
    return subject.columns if isinstance(subject, Grant) else subject.covered_columns


def active_grants_for(
    *, dataset: Dataset, grantee_user: Any, grantee_role: Any, including: Grant | None = None
) -> list[Grant]:
    """Grants in force that are already provisioned (status active), plus `including`.

    A grant that is approved but not applied yet is applied by its own job, after that job checked
    its plan digest; a grant that failed (e.g. "plan changed") is applied by nobody. Including them
    here would let another grant's job apply what nobody re-approved.
    """
    qs = Grant.objects.provisioned().active().filter(dataset=dataset, status=GrantStatus.ACTIVE)
    qs = qs.filter(grantee_user=grantee_user) if grantee_user is not None else qs.filter(grantee_role=grantee_role)
    grants = list(qs)
    if including is not None and including.pk not in {g.pk for g in grants}:
        grants.append(including)
    return grants


def own_desired(subject: Grant | AccessRequest, principal: PrincipalRef | None = None) -> pg.Desired:
    """What this grant (or request, once approved) gives on its own: membership in its package."""
    principal = principal or grant_principal(subject)
    dataset = subject.dataset
    return pg.Desired.through(
        principal.db_role,
        object_ref(dataset),
        [package_of(dataset, subject.level, _columns(subject), subject.treatments, row_filter_of(subject))],
    )


def own_plan(subject: Grant | AccessRequest, principal: PrincipalRef | None = None) -> pg.Plan:
    """The SQL that this grant (or request, once approved) contributes on its own: what approvers see."""
    principal = principal or grant_principal(subject)
    return pgp.plan_converge(
        own_desired(subject, principal), managed_principal=principal.managed, database=subject.dataset.source.database
    )


# --- AWS (S3 prefixes, IAM policies) ----------------------------------------------------------

LEVEL_RANK = {"read": 1, "write": 2, "admin": 3}


def aws_target_for(source: DataSource) -> aws.AwsTarget:
    return aws.AwsTarget(
        region=source.aws_region or "us-east-1",
        endpoint_url=source.aws_endpoint_url,
        access_key_id=source.username,
        secret_access_key=source_password(source) if source.username else "",
        account_id=source.aws_account_id,
    )


def aws_principal(source: DataSource, ref: PrincipalRef) -> aws.IamPrincipal:
    """The IAM role or user a grantee is mapped to. The portal never creates IAM identities, so an
    unmapped grantee cannot be provisioned on an AWS source."""
    if ref.existing is None:
        raise pg.PermanentError(
            f"No IAM role or user is mapped for this grantee on {source.name}: map one with "
            "`manage.py map_principal SOURCE user/NAME --user USERNAME` (or role/NAME, --role SLUG)."
        )
    return aws.IamPrincipal.parse(ref.db_role)


def s3_location(dataset: Dataset) -> aws.S3Location:
    return aws.S3Location(bucket=dataset.schema, prefix=dataset.name.strip("/"))


def aws_access(dataset: Dataset, grants: Iterable[Grant | AccessRequest]) -> awsp.DatasetAccess | None:
    """What `grants` (same principal, same dataset) give on the prefix: the highest level; none
    without grants."""
    levels = [g.level for g in grants]
    if not levels:
        return None
    level = max(levels, key=lambda lv: LEVEL_RANK.get(lv, 0))
    return awsp.DatasetAccess(dataset_id=dataset.pk, location=s3_location(dataset), level=level)


def aws_source_plan(*, source: DataSource, grants: Iterable[Grant], ref: PrincipalRef) -> awsp.SourcePlan:
    """The principal's policy on the source (:mod:`governance.provisioners.aws_policy`): one
    statement group per dataset of `grants` (all in force, same principal), at its highest level."""
    by_dataset: dict[int, list[Grant]] = {}
    datasets: dict[int, Dataset] = {}
    for grant in grants:
        by_dataset.setdefault(grant.dataset_id, []).append(grant)
        datasets[grant.dataset_id] = grant.dataset
    accesses = [aws_access(datasets[pk], members) for pk, members in by_dataset.items()]
    return awsp.plan(
        principal=aws_principal(source, ref), source=source.name, accesses=[a for a in accesses if a is not None]
    )


def aws_grants_for(
    *, source: DataSource, grantee_user: Any, grantee_role: Any, including: Grant | None = None
) -> list[Grant]:
    """:func:`active_grants_for` over every dataset of an AWS source: what the grantee's source
    policy must hold (the desired state it is rebuilt from, never the last document)."""
    qs = (
        Grant.objects.provisioned()
        .active()
        .filter(dataset__source=source, status=GrantStatus.ACTIVE)
        .select_related("dataset")
    )
    qs = qs.filter(grantee_user=grantee_user) if grantee_user is not None else qs.filter(grantee_role=grantee_role)
    grants = list(qs)
    if including is not None and including.pk not in {g.pk for g in grants}:
        grants.append(including)
    return grants


def aws_lock_key(source_id: int, user_id: int | None, role_id: int | None) -> str:
    """Serialises every change to one grantee's policy on an AWS source (jobs and repairs): two
    jobs of one principal never rewrite its policy at once and lose each other's statements."""
    return json.dumps([source_id, "aws-principal", "u" if user_id else "r", user_id or role_id])


def aws_own_plan(subject: Grant | AccessRequest, principal: PrincipalRef | None = None) -> list[str]:
    """What approvers see for an AWS request: this grant's statement group and the source policy
    it is added to (independent of the grantee's other grants: the digest stays stable)."""
    ref = principal or grant_principal(subject)
    source = subject.dataset.source
    access = aws_access(subject.dataset, [subject])
    assert access is not None
    return awsp.own_lines(principal=aws_principal(source, ref), source=source.name, access=access)


_FACTS_SQL = """
SELECT c.dataset_id, c.name, c.data_type,
       COALESCE(array_agg(t.tag ORDER BY t.tag) FILTER (WHERE t.status = %(confirmed)s), '{{}}'), c.inherited_tags
FROM {column} c LEFT JOIN {tag} t ON t.column_id = c.id
WHERE c.dataset_id = ANY(%(ids)s) AND c.is_present
GROUP BY c.id
ORDER BY c.dataset_id, c.ordinal
"""


def dataset_facts(dataset_ids: Iterable[int]) -> dict[int, list[tuple[str, str, list[str]]]]:
    """For :func:`governance.backends.plan_digest`, in one query: each present column of the
    datasets, in order, with its sensitive-data tags, confirmed or inherited through lineage (a
    view's column that starts computing from a PII column changes the digest). Plain SQL: it runs on every job and every
    approval, and the ORM's filtered, ordered ArrayAgg cost more to compile than the query takes."""
    from django.db import connection

    from .models import Column, ColumnTag

    out: dict[int, list[tuple[str, str, list[str]]]] = {pk: [] for pk in dataset_ids}
    query = _FACTS_SQL.format(
        column=connection.ops.quote_name(Column._meta.db_table), tag=connection.ops.quote_name(ColumnTag._meta.db_table)
    )
    with connection.cursor() as cur:
        cur.execute(query, {"confirmed": TagStatus.CONFIRMED.value, "ids": list(out)})
        for dataset_id, name, data_type, confirmed, inherited in cur.fetchall():
            # Merged and sorted: a column with no inherited tags has the facts it always had.
            out[dataset_id].append((name, data_type, sorted(set(confirmed) | set(inherited or ()))))
    return out


def target_for(source: DataSource) -> pg.Target:
    user, password = source_login(source)  # a Vault-leased login for a vault-db: source
    target = pg.Target(
        host=source.host,
        port=source.port,
        dbname=source.database,
        user=user,
        password=password,
        sslmode=source.sslmode,
        connect_timeout=settings.TARGET_CONNECT_TIMEOUT,
        sslrootcert=crypto.ca_bundle_path(source.ssl_root_cert),
        leased=dynamic_role(source.password_ref) is not None,
    )
    remember_key(source, target.key)  # a replaced lease retires its pooled connections
    return target


def lock_key(dataset: Dataset) -> str:
    """Serialises every change to one target object, across workers and machines."""
    return json.dumps([dataset.source_id, dataset.schema, dataset.name])
