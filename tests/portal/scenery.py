"""A lived-in portal for the page tests and their screenshots: four schemas of tables with owners,
classifications and PII, access roles with grants (some ending this week), pending requests from
people and for roles, drift findings and a failed provisioning job. Written straight to the models
(the services are not what these tests exercise) and deterministic."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from django.utils import timezone
from guardian.shortcuts import assign_perm

from accounts.models import User
from governance.models import (
    AccessRequest,
    Classification,
    Column,
    ColumnTag,
    Dataset,
    DataSource,
    DriftFinding,
    Grant,
    GrantStatus,
    JobAction,
    JobStatus,
    ProvisioningJob,
    Role,
    RoleMembership,
    SourcePrincipal,
    TagStatus,
)

TABLES = {
    "finance": [("ledger", "confidential"), ("invoices", "confidential"), ("payments", "restricted"),
                ("budgets", "internal"), ("fx_rates", "public"), ("cost_centres", "internal")],
    "hr": [("employees", "restricted"), ("salaries", "restricted"), ("absences", "confidential"),
           ("org_chart", "internal"), ("job_titles", "public")],
    "sales": [("customers", "confidential"), ("orders", "internal"), ("order_lines", "internal"),
              ("leads", "confidential"), ("regions", "public"), ("targets", "internal")],
    "marketing": [("campaigns", "internal"), ("web_sessions", "confidential"), ("newsletter", "restricted"),
                  ("segments", "internal")],
}  # fmt: skip
PII = {
    "employees": {"full_name": "person_name", "ssn": "ssn", "email": "email"},
    "salaries": {"iban": "iban"},
    "customers": {"email": "email", "phone": "phone"},
    "newsletter": {"email": "email"},
    "payments": {"card_number": "card_number"},
    "leads": {"email": "email"},
}
COLUMNS = ("id", "full_name", "email", "ssn", "phone", "iban", "card_number", "amount", "created_at")
ROLES = [
    ("Analysts", "human"),
    ("Finance BI", "human"),
    ("Data science", "human"),
    ("Customer support", "human"),
    ("Marketing ops", "human"),
    ("HR partners", "human"),
    ("ETL pipeline", "service"),
    ("Reporting service", "service"),
]


@dataclass
class Scenery:
    datasets: dict[str, Dataset]
    roles: dict[str, Role]
    pending: list[AccessRequest]


def build(
    source: DataSource, classifications: dict[str, Classification], owner: User, analyst: User, officer: User
) -> Scenery:
    now = timezone.now()
    datasets: dict[str, Dataset] = {}
    for schema, tables in TABLES.items():
        for name, slug in tables:
            ds = Dataset.objects.create(
                source=source,
                schema=schema,
                name=name,
                classification=classifications[slug],
                owner=owner,
                description=f"The {name.replace('_', ' ')} of the {schema} department.",
            )
            assign_perm("approve_access", owner, ds)
            assign_perm("steward_dataset", owner, ds)
            pii = PII.get(name, {})
            wanted = ["id", *pii, "amount", "created_at"]
            for i, col in enumerate(c for c in COLUMNS if c in wanted):
                column = Column.objects.create(dataset=ds, name=col, data_type="text", ordinal=i + 1)
                if col in pii:
                    ColumnTag.objects.create(column=column, tag=pii[col], status=TagStatus.CONFIRMED)
            datasets[name] = ds
    roles = {
        name: Role.objects.create(name=name, slug=name.lower().replace(" ", "-"), kind=kind, owner=analyst)
        for name, kind in ROLES
    }
    RoleMembership.objects.create(role=roles["Analysts"], user=analyst)
    access = {
        "Analysts": ["ledger", "invoices", "budgets", "orders", "order_lines", "regions", "campaigns", "segments"],
        "Finance BI": ["ledger", "invoices", "payments", "budgets", "fx_rates", "cost_centres"],
        "Data science": ["orders", "order_lines", "web_sessions", "segments", "customers", "targets"],
        "Customer support": ["customers", "orders", "regions"],
        "Marketing ops": ["campaigns", "newsletter", "segments", "web_sessions", "leads"],
        "HR partners": ["employees", "absences", "org_chart", "job_titles"],
        "ETL pipeline": [name for tables in TABLES.values() for name, _ in tables][::2],
        "Reporting service": ["ledger", "orders", "targets", "budgets"],
    }
    levels = {"ETL pipeline": "write", "HR partners": "read", "Finance BI": "read"}
    grants = []
    for i, (role_name, names) in enumerate(access.items()):
        for j, name in enumerate(names):
            level = "admin" if role_name == "ETL pipeline" and j == 0 else levels.get(role_name, "read")
            ends = now + dt.timedelta(days=3 + (i * 7 + j * 11) % 80)
            grants.append(
                Grant(
                    grantee_role=roles[role_name],
                    dataset=datasets[name],
                    level=level,
                    status=GrantStatus.ACTIVE,
                    starts_at=now - dt.timedelta(days=20),
                    ends_at=ends,
                    reason="team access",
                )
            )
    grants.append(
        Grant(
            grantee_user=analyst,
            dataset=datasets["customers"],
            level="read",
            status=GrantStatus.ACTIVE,
            starts_at=now - dt.timedelta(days=2),
            ends_at=now + dt.timedelta(days=5),
            reason="churn study",
        )
    )
    failing = Grant(
        grantee_user=analyst,
        dataset=datasets["targets"],
        level="read",
        status=GrantStatus.FAILED,
        starts_at=now - dt.timedelta(days=1),
        ends_at=now + dt.timedelta(days=9),
        reason="quarterly targets",
    )
    grants.append(failing)
    Grant.objects.bulk_create(grants)
    ProvisioningJob.objects.create(
        grant=failing,
        action=JobAction.APPLY,
        status=JobStatus.FAILED,
        attempts=5,
        finished_at=now - dt.timedelta(days=1),
        last_error="could not connect to the target: connection refused",
    )

    def pending(dataset: str, days_ago: float, **kw: Any) -> AccessRequest:
        ds = datasets[dataset]
        stages = ["owner", "security_officer"] if ds.classification.slug == "restricted" else ["owner"]
        kw.setdefault("current_stage", stages[0])
        req = AccessRequest.objects.create(
            dataset=ds,
            level=kw.pop("level", "read"),
            duration=dt.timedelta(days=kw.pop("days", 14)),
            policy={"stages": stages},
            **kw,
        )
        AccessRequest.objects.filter(pk=req.pk).update(submitted_at=now - dt.timedelta(days=days_ago))
        return req

    reqs = [
        pending("salaries", 0.2, requester=analyst, grantee_user=analyst,
                justification="Pay equity review for the board", covered_columns=["id", "iban", "amount"], days=10),
        pending("web_sessions", 1.5, requester=analyst, grantee_role=roles["Analysts"],
                justification="Funnel analysis for the Q4 campaign"),
        pending("leads", 4, requester=analyst, grantee_user=analyst, justification="Lead scoring model", level="write",
                days=45),
        pending("payments", 9, requester=analyst, grantee_role=roles["Data science"],
                justification="Fraud model training", current_stage="security_officer", days=30),
        pending("fx_rates", 2.5, requester=analyst, grantee_role=roles["Customer support"],
                justification="Refunds in local currency"),
    ]  # fmt: skip
    for role in roles.values():
        SourcePrincipal.objects.create(source=source, role=role, db_role=f"gov_r_{role.slug}")
    for role_name, dataset, privilege in [
        ("Customer support", "customers", "UPDATE"),
        ("Marketing ops", "newsletter", "DELETE"),
        ("ETL pipeline", "salaries", "SELECT"),
    ]:
        ds = datasets[dataset]
        DriftFinding.objects.create(
            source=source,
            dataset=ds,
            principal=f"gov_r_{roles[role_name].slug}",
            object_schema=ds.schema,
            object_name=ds.name,
            privilege=privilege,
            kind="unexpected",
            detail=f"unexpected {privilege} on {ds.qualified_name} for gov_r_{roles[role_name].slug} (granted by hand)",
            found_at=now - dt.timedelta(hours=3),
            run_id=uuid.uuid4(),
        )
    return Scenery(datasets=datasets, roles=roles, pending=reqs)
