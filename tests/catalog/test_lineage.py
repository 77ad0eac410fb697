"""Policy follows the data: lineage read from a real PostgreSQL target by the catalog sync, and the
effective classification and inherited tags that follow from it, in requests, the API and the portal.

A view runs with its owner's privileges: a grant on a view over a Restricted table is a grant on that
table. These tests build such warehouses (views of views, across schemas, hostile names, a
materialized view, a SECURITY DEFINER function, a view reading a schema the source does not list)
and check what a requester, an approver and an auditor see.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from audit.models import AuditEvent
from governance import policy
from governance.errors import ConflictError
from governance.models import (
    Column,
    ColumnDerivation,
    ColumnTag,
    Dataset,
    DatasetDependency,
)
from governance.services import catalog as catalog_svc
from governance.services.requests import access_request_approve, access_request_submit
from governance.services.sync import datasource_sync
from tests.portal.test_catalog_pages import signed_in

pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE_SCHEMA = "Sales EU"
HOSTILE_VIEW = 'Totals "by rep"; DROP VIEW x; --'

WAREHOUSE = [
    "CREATE SCHEMA hr",
    "CREATE SCHEMA reporting",
    "CREATE SCHEMA archive",
    f'CREATE SCHEMA "{HOSTILE_SCHEMA}"',
    "CREATE TABLE hr.employees (employee_id int PRIMARY KEY, full_name text, ssn text, department text, "
    "salary numeric)",
    "INSERT INTO hr.employees VALUES (1, 'Ada Lovelace', '078-05-1120', 'R&D', 100)",
    "CREATE TABLE archive.old_staff (employee_id int, home_address text)",
    # A view across schemas, a view of that view, and a view reading a schema the source does not list.
    "CREATE VIEW reporting.staff AS SELECT employee_id, full_name AS name, ssn, department FROM hr.employees",
    "CREATE VIEW reporting.staff_names AS SELECT name FROM reporting.staff",
    "CREATE VIEW reporting.with_address AS SELECT s.employee_id, o.home_address "
    "FROM hr.employees s JOIN archive.old_staff o USING (employee_id)",
    # A hostile name that computes from a sensitive column in a scalar subquery.
    f'CREATE VIEW "{HOSTILE_SCHEMA}"."{HOSTILE_VIEW.replace(chr(34), chr(34) * 2)}" AS '
    "SELECT department, (SELECT count(*) FROM hr.employees i WHERE i.ssn IS NOT NULL) AS with_ssn "
    "FROM hr.employees GROUP BY department",
    "CREATE MATERIALIZED VIEW reporting.departments AS SELECT department, avg(salary) AS pay FROM hr.employees "
    "GROUP BY department",
    # A function that runs as its owner and reads the table; a view that calls it.
    "CREATE FUNCTION reporting.lookup_ssn(id int) RETURNS text LANGUAGE plpgsql SECURITY DEFINER AS "
    "$$ BEGIN RETURN (SELECT ssn FROM hr.employees WHERE employee_id = id); END $$",
    "CREATE VIEW reporting.badges AS SELECT employee_id, reporting.lookup_ssn(employee_id) AS badge FROM hr.employees",
]


@pytest.fixture
def warehouse(target_db: Any, make_source: Any, owner: Any, classifications: Any) -> Any:
    for statement in WAREHOUSE:
        target_db.run(statement)
    # `archive` is deliberately not listed: a view reading it brings its tables into the catalog anyway.
    source = make_source(target_db.name, owner=owner, include_schemas=["hr", "reporting", HOSTILE_SCHEMA])
    datasource_sync(source=source)
    return source


def ds(source: Any, schema: str, name: str) -> Dataset:
    return Dataset.objects.select_related("classification", "declared_classification").get(
        source=source, schema=schema, name=name
    )


def confirm(dataset: Dataset, column: str, tag: str, actor: Any) -> None:
    found = ColumnTag.objects.filter(column__dataset=dataset, column__name=column, tag=tag).first()
    if found is None:
        catalog_svc.column_tag_add(column=Column.objects.get(dataset=dataset, name=column), tag=tag, actor=actor)
    else:
        catalog_svc.column_tag_confirm(tag=found, actor=actor)


def restrict(source: Any, owner: Any, gov_admin: Any) -> Dataset:
    employees = ds(source, "hr", "employees")
    catalog_svc.dataset_update(dataset=employees, actor=gov_admin, classification=policy_class("restricted"))
    confirm(employees, "ssn", "ssn", owner)
    return ds(source, "hr", "employees")


def policy_class(slug: str) -> Any:
    from governance.models import Classification

    return Classification.objects.get(slug=slug)


def upstream_names(dataset: Dataset) -> set[tuple[str, str]]:
    return {
        (d.upstream.schema, d.upstream.name)
        for d in DatasetDependency.objects.filter(dataset=dataset).select_related("upstream")
    }


def derived(dataset: Dataset, column: str) -> set[str]:
    return {
        f"{d.upstream.dataset.schema}.{d.upstream.dataset.name}.{d.upstream.name}"
        for d in ColumnDerivation.objects.filter(column__dataset=dataset, column__name=column).select_related(
            "upstream__dataset"
        )
    }


def test_sync_records_what_each_view_reads_down_to_the_columns(warehouse: Any) -> None:
    staff = ds(warehouse, "reporting", "staff")
    assert upstream_names(staff) == {("hr", "employees")}
    assert staff.lineage_status == "traced" and staff.lineage_notes == []
    assert derived(staff, "name") == {"hr.employees.full_name"}
    assert derived(staff, "ssn") == {"hr.employees.ssn"}
    names = ds(warehouse, "reporting", "staff_names")
    assert upstream_names(names) == {("reporting", "staff")}  # views of views: one level per edge
    assert derived(names, "name") == {"reporting.staff.name"}
    hostile = ds(warehouse, HOSTILE_SCHEMA, HOSTILE_VIEW)
    assert derived(hostile, "with_ssn") == {"hr.employees.ssn"}
    assert derived(hostile, "department") == {"hr.employees.department"}
    matview = ds(warehouse, "reporting", "departments")
    assert matview.kind == "materialized_view" and derived(matview, "pay") == {"hr.employees.salary"}


def test_a_view_reading_an_unlisted_schema_brings_what_it_reads_into_the_catalog(warehouse: Any) -> None:
    old = ds(warehouse, "archive", "old_staff")
    assert old.is_present
    assert derived(ds(warehouse, "reporting", "with_address"), "home_address") == {"archive.old_staff.home_address"}
    # Only what a view reads: nothing else of the unlisted schema.
    assert not Dataset.objects.filter(source=warehouse, schema="archive").exclude(pk=old.pk).exists()


def test_a_function_call_is_judged_by_what_the_function_reads_and_flagged_as_a_risk(warehouse: Any) -> None:
    badges = ds(warehouse, "reporting", "badges")
    assert badges.lineage_status == "partial"
    assert any("reporting.lookup_ssn(id integer)" in note for note in badges.lineage_notes)
    badge = Column.objects.get(dataset=badges, name="badge")
    assert "lookup_ssn" in badge.lineage_note
    assert "hr.employees.ssn" in derived(badges, "badge")  # everything the function reads
    assert derived(badges, "employee_id") == {"hr.employees.employee_id"}
    employees = ds(warehouse, "hr", "employees")
    assert employees.definer_risks == [
        {
            "function": "reporting.lookup_ssn(id integer)",
            "owner": employees.definer_risks[0]["owner"],
            "public_execute": True,
            "evidence": "mentions",
        }
    ]


def test_a_second_sync_changes_nothing(warehouse: Any) -> None:
    before = AuditEvent.objects.count()
    stamps = dict(Dataset.objects.values_list("pk", "updated_at"))
    result = datasource_sync(source=warehouse)
    assert not result.changed and result.lineage_changed == 0
    assert AuditEvent.objects.count() == before
    assert dict(Dataset.objects.values_list("pk", "updated_at")) == stamps


def test_views_take_the_strictest_classification_and_the_tags_of_what_they_read(
    warehouse: Any, owner: Any, gov_admin: Any
) -> None:
    restrict(warehouse, owner, gov_admin)
    staff = ds(warehouse, "reporting", "staff")
    assert staff.classification.slug == "restricted"
    assert staff.declared_classification.slug == "internal"  # its own stays what it was
    # Through a view of the view, too.
    assert ds(warehouse, "reporting", "staff_names").classification.slug == "restricted"
    ssn = Column.objects.get(dataset=staff, name="ssn")
    assert ssn.inherited_tags == ["ssn"]
    assert ssn.inherited_from == [
        {
            "tag": "ssn",
            "column": "hr.employees.ssn",
            "column_id": Column.objects.get(dataset__name="employees", name="ssn").pk,
        }
    ]
    # The column computed from the SECURITY DEFINER function is sensitive too; the plain one is not.
    badges = ds(warehouse, "reporting", "badges")
    assert Column.objects.get(dataset=badges, name="badge").inherited_tags == ["ssn"]
    assert Column.objects.get(dataset=badges, name="employee_id").inherited_tags == []
    assert policy.pii_column_names(staff.columns.all()) == {"ssn"}
    changed = AuditEvent.objects.get(action="dataset.effective_classification_changed", target_id=str(staff.pk))
    assert changed.actor == gov_admin and "Reads hr.employees, which is Restricted" in changed.reason
    assert AuditEvent.objects.filter(action="dataset.inherited_tags_changed", target_id=str(staff.pk)).exists()

    # Rejecting the tag (an officer may) takes it away downstream; lowering the table lowers the views.
    officer_tag = ColumnTag.objects.get(column__dataset__name="employees", column__name="ssn", tag="ssn")
    from django.contrib.auth.models import Group

    from accounts.roles import SECURITY_OFFICERS

    gov_admin.groups.add(Group.objects.get(name=SECURITY_OFFICERS))
    catalog_svc.column_tag_reject(tag=officer_tag, actor=gov_admin)
    assert Column.objects.get(dataset=staff, name="ssn").inherited_tags == []
    employees = ds(warehouse, "hr", "employees")
    catalog_svc.dataset_update(dataset=employees, actor=gov_admin, classification=policy_class("internal"))
    assert ds(warehouse, "reporting", "staff").classification.slug == "internal"


def test_a_view_over_a_restricted_table_needs_the_restricted_stages_and_names_its_pii(
    warehouse: Any, owner: Any, gov_admin: Any, analyst: Any, make_user: Any
) -> None:
    restrict(warehouse, owner, gov_admin)
    staff = ds(warehouse, "reporting", "staff")
    whole = access_request_submit(
        requester=analyst, dataset=staff, justification="headcount", duration=dt.timedelta(days=7)
    )
    assert whole.required_stages == ["owner", "security_officer"]
    assert whole.covered_columns == ["employee_id", "name", "department"]  # ssn left out
    assert whole.policy["pii_excluded"] == ["ssn"]
    named = access_request_submit(
        requester=make_user("auditor_of_payroll"),
        dataset=staff,
        level="read",
        justification="payroll audit",
        duration=dt.timedelta(days=7),
        columns=[Column.objects.get(dataset=staff, name="ssn")],
    )
    assert named.policy["pii_included"] == ["ssn"] and named.covered_columns == ["ssn"]


def test_a_pending_request_is_not_approved_under_rules_that_became_stricter(
    warehouse: Any, owner: Any, gov_admin: Any, analyst: Any
) -> None:
    staff = ds(warehouse, "reporting", "staff")
    req = access_request_submit(requester=analyst, dataset=staff, justification="x", duration=dt.timedelta(days=60))
    assert req.required_stages == ["owner"] and req.covered_columns == []
    restrict(warehouse, owner, gov_admin)  # the view now reads Restricted data with an SSN column
    with pytest.raises(ConflictError) as refused:
        access_request_approve(access_request=req, approver=owner)
    message = refused.value.message
    assert "reporting.staff is now Restricted" in message and "security officer stage" in message
    assert "ssn" in message
    assert AuditEvent.objects.filter(action="access_request.approve", outcome="denied").exists()


def test_the_api_and_the_portal_show_effective_values_and_where_they_come_from(
    warehouse: Any, owner: Any, gov_admin: Any, analyst: Any
) -> None:
    restrict(warehouse, owner, gov_admin)
    staff = ds(warehouse, "reporting", "staff")
    client = signed_in(analyst)
    body = client.get(f"/api/v1/datasets/{staff.pk}/").json()
    assert body["classification"] == "restricted" and body["declared_classification"] == "internal"
    assert body["pii_columns"] == ["ssn"] and body["lineage_status"] == "traced"
    ssn = next(c for c in body["columns"] if c["name"] == "ssn")
    assert ssn["pii_tags"] == ["ssn"] and ssn["inherited_from"][0]["column"] == "hr.employees.ssn"
    assert [r["label"] for r in body["reads"]] == ["hr.employees"]
    listed = client.get("/api/v1/datasets/", {"tag": "ssn", "schema": "reporting"}).json()
    assert {d["name"] for d in listed["results"]} >= {"staff", "badges"}
    page = client.get(f"/portal/datasets/{staff.pk}/").content.decode()
    assert "Restricted because it reads" in page and "hr.employees" in page
    assert "inherited from <code>hr.employees.ssn</code>" in page
    employees_page = client.get(f"/portal/datasets/{ds(warehouse, 'hr', 'employees').pk}/").content.decode()
    assert "reporting.lookup_ssn(id integer)" in employees_page and "anyone may call it" in employees_page


def test_review_a_view_reaching_a_restricted_table_through_an_operator_or_an_aggregate_reads_it(
    target_db: Any, make_source: Any, owner: Any, classifications: Any
) -> None:
    """Review finding: VIEW_FUNCTIONS_QUERY follows only pg_proc dependencies of the view's rule. A
    view that reaches a SECURITY DEFINER function through a user-defined operator (pg_depend points
    at pg_operator) or aggregate (its pg_proc row's body is 'aggregate_dummy'; the transition
    function is not followed) is recorded as reading only its own table, so its effective
    classification never rises, though a grantee SELECTs hr.employees.ssn through it (checked by
    hand with a plain role on PostgreSQL 15)."""
    for statement in [
        "CREATE SCHEMA hr",
        "CREATE TABLE hr.employees (id int, ssn text)",
        "CREATE TABLE public.badges (id int, n int)",
        "CREATE FUNCTION public.peek(a int, b int) RETURNS text LANGUAGE plpgsql SECURITY DEFINER AS "
        "$$ BEGIN RETURN (SELECT e.ssn FROM hr.employees e WHERE e.id = a); END $$",
        "CREATE OPERATOR public.### (LEFTARG = int, RIGHTARG = int, FUNCTION = public.peek)",
        "CREATE VIEW public.v_op AS SELECT b.id ### b.n AS leak FROM public.badges b",
        "CREATE FUNCTION public.sfn(acc text, a int) RETURNS text LANGUAGE plpgsql SECURITY DEFINER AS "
        "$$ BEGIN RETURN coalesce(acc, '') || (SELECT e.ssn FROM hr.employees e WHERE e.id = a); END $$",
        "CREATE AGGREGATE public.collect(int) (SFUNC = public.sfn, STYPE = text)",
        "CREATE VIEW public.v_agg AS SELECT public.collect(b.id) AS leak FROM public.badges b",
    ]:
        target_db.run(statement)
    source = make_source(target_db.name, owner=owner, include_schemas=["public", "hr"])
    datasource_sync(source=source)
    missing = [v for v in ("v_op", "v_agg") if ("hr", "employees") not in upstream_names(ds(source, "public", v))]
    assert not missing, f"{missing} do not read hr.employees according to the sync"


def test_code_a_view_runs_indirectly_is_followed_through_casts_and_nested_calls(
    target_db: Any, make_source: Any, owner: Any, classifications: Any
) -> None:
    """A cast from a user type runs its cast function, which calls another function that reads the
    table: the view reads hr.employees, the casting column is judged by it, the other is exact."""
    for statement in [
        "CREATE SCHEMA hr",
        "CREATE TABLE hr.employees (id int, ssn text)",
        "CREATE TYPE public.badge AS (id int)",
        "CREATE FUNCTION public.inner_peek(i int) RETURNS text LANGUAGE sql SECURITY DEFINER AS "
        "$$ SELECT ssn FROM hr.employees WHERE id = i $$",
        "CREATE FUNCTION public.badge_text(b public.badge) RETURNS text LANGUAGE plpgsql AS "
        "$$ BEGIN RETURN public.inner_peek(b.id); END $$",
        "CREATE CAST (public.badge AS text) WITH FUNCTION public.badge_text(public.badge)",
        "CREATE TABLE public.badges (b public.badge, n int)",
        "CREATE VIEW public.v_cast AS SELECT (b)::text AS shown, n FROM public.badges",
    ]:
        target_db.run(statement)
    source = make_source(target_db.name, owner=owner, include_schemas=["public"])
    datasource_sync(source=source)
    view = ds(source, "public", "v_cast")
    assert ("hr", "employees") in upstream_names(view)  # pulled in although hr is not listed
    assert Column.objects.get(dataset=view, name="shown").lineage_note
    assert "hr.employees.ssn" in derived(view, "shown")
    assert derived(view, "n") == {"public.badges.n"}
    risks = ds(source, "hr", "employees").definer_risks
    assert [r["function"] for r in risks] == ["public.inner_peek(i integer)"]


def test_grants_approved_before_a_view_became_stricter_are_listed_for_review(
    warehouse: Any, owner: Any, gov_admin: Any, analyst: Any, officer: Any
) -> None:
    from governance.models import Grant
    from governance.selectors.lineage import grants_approved_under_weaker_policy

    staff = ds(warehouse, "reporting", "staff")
    req = access_request_submit(requester=analyst, dataset=staff, justification="x", duration=dt.timedelta(days=30))
    access_request_approve(access_request=req, approver=owner)  # Internal: the owner alone
    grant = Grant.objects.get(source_request=req)
    assert not grants_approved_under_weaker_policy().exists()

    restrict(warehouse, owner, gov_admin)  # the view now reads Restricted data
    assert list(grants_approved_under_weaker_policy()) == [grant]
    event = AuditEvent.objects.get(action="dataset.effective_classification_changed", target_id=str(staff.pk))
    assert event.metadata["grants_in_force"] == 1
    page = signed_in(officer).get("/admin/governance/grant/?review=weaker").content.decode()
    assert f"/admin/governance/grant/{grant.pk}/change/" in page
    dashboard = signed_in(officer).get("/portal/dashboard/").content.decode()
    assert "Grants approved under a weaker classification</a>: 1 in force" in dashboard


def test_the_scheduled_sync_follows_a_redefined_view_and_survives_an_unreachable_source(
    warehouse: Any, target_db: Any, owner: Any, gov_admin: Any, make_source: Any
) -> None:
    from governance.tasks import sync_catalogs

    restrict(warehouse, owner, gov_admin)
    staff = ds(warehouse, "reporting", "staff")
    assert Column.objects.get(dataset=staff, name="ssn").inherited_tags == ["ssn"]
    # The view is redefined to read a harmless table only; nobody presses Sync.
    target_db.run("CREATE TABLE reporting.roster (employee_id int, name text, ssn text, department text)")
    target_db.run(
        "CREATE OR REPLACE VIEW reporting.staff AS SELECT employee_id, name, ssn, department FROM reporting.roster"
    )
    make_source("gov_t_does_not_exist", name="gone", owner=owner)
    results = sync_catalogs()
    assert "error" in results["gone"] and "error" not in results[warehouse.name]
    staff = ds(warehouse, "reporting", "staff")
    assert upstream_names(staff) == {("reporting", "roster")}
    assert staff.classification.slug == "internal"
    assert Column.objects.get(dataset=staff, name="ssn").inherited_tags == []
