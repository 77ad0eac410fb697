"""The column tracer on its own (catalog/lineage.py): definitions as `pg_get_viewdef` prints them
under an empty search_path, and `used` as pg_depend reports it. No database: what PostgreSQL really
prints is covered by tests/catalog/test_lineage.py against a real server."""

from __future__ import annotations

from governance.catalog.lineage import ALL_COLUMNS, ColRef, trace_view
from governance.catalog.lineage_analysis import mentioned_relations

EMP = ("hr", "employees")
USED = {EMP: {"employee_id", "full_name", "ssn", "department"}}


def reads(result, name):
    column = next(c for c in result.columns if c.name == name)
    return column.exact, sorted((r.schema, r.relation, r.column) for r in column.reads)


def test_plain_columns_and_aliases_are_traced_one_to_one():
    result = trace_view(
        "SELECT employees.employee_id, employees.full_name AS name, employees.ssn FROM hr.employees;",
        ["employee_id", "name", "ssn"],
        USED,
    )
    assert result.status == "traced"
    assert reads(result, "name") == (True, [("hr", "employees", "full_name")])
    assert reads(result, "ssn") == (True, [("hr", "employees", "ssn")])


def test_unqualified_columns_of_a_single_table_view_are_traced():
    # PostgreSQL 16+ prints single-table views without the table prefix.
    result = trace_view(
        "SELECT employee_id, upper(department) AS dept FROM hr.employees;", ["employee_id", "dept"], USED
    )
    assert reads(result, "dept") == (True, [("hr", "employees", "department")])


def test_hostile_identifiers_round_trip():
    table = ("Sales EU", 'Order "Lines"; DROP TABLE x; --')
    used = {table: {'Contact "Info"; --', "amount"}}
    result = trace_view(
        'SELECT o."Contact ""Info""; --" AS c, sum(o.amount) AS total '
        'FROM "Sales EU"."Order ""Lines""; DROP TABLE x; --" o GROUP BY o."Contact ""Info""; --";',
        ["c", "total"],
        used,
    )
    assert reads(result, "c") == (True, [(*table, 'Contact "Info"; --')])
    assert reads(result, "total") == (True, [(*table, "amount")])


def test_joins_subqueries_ctes_and_unions_follow_each_branch():
    used = {EMP: {"employee_id", "ssn", "full_name"}, ("sales", "orders"): {"employee_id", "amount"}}
    definition = """
     WITH big AS (
              SELECT orders.employee_id, orders.amount
                FROM sales.orders
               WHERE orders.amount > 100
             )
      SELECT e.full_name AS who,
             s.total
        FROM hr.employees e
        JOIN ( SELECT big.employee_id, sum(big.amount) AS total FROM big GROUP BY big.employee_id) s
          ON s.employee_id = e.employee_id
    UNION ALL
      SELECT e.ssn AS who, 0 AS total FROM hr.employees e;"""
    result = trace_view(definition, ["who", "total"], used)
    assert result.status == "traced"
    assert reads(result, "who") == (True, [("hr", "employees", "full_name"), ("hr", "employees", "ssn")])
    assert reads(result, "total") == (True, [("sales", "orders", "amount")])


def test_a_scalar_subquery_reads_everything_it_touches():
    used = {EMP: {"ssn", "full_name"}, ("rep", "staff"): {"name", "ssn"}}
    result = trace_view(
        "SELECT s.name, (SELECT count(*) AS count FROM hr.employees x WHERE x.ssn = s.ssn) AS n FROM rep.staff s;",
        ["name", "n"],
        used,
    )
    assert reads(result, "n") == (True, [("hr", "employees", "ssn"), ("rep", "staff", "ssn")])


def test_a_user_function_makes_its_column_inexact_and_judged_by_everything():
    result = trace_view(
        "SELECT rep.f(employees.full_name) AS x, employees.employee_id FROM hr.employees;",
        ["x", "employee_id"],
        {EMP: {"full_name", "employee_id"}},
        opaque_reads=[("hr", "salaries")],
    )
    assert result.status == "partial"
    exact, refs = reads(result, "x")
    # Every column of everything the view reads, and of what the function reads.
    assert not exact and refs == [("hr", "employees", ALL_COLUMNS), ("hr", "salaries", ALL_COLUMNS)]
    assert reads(result, "employee_id") == (True, [("hr", "employees", "employee_id")])


def test_a_whole_row_reference_reads_every_column():
    result = trace_view("SELECT row_to_json(e.*) AS doc FROM hr.employees e;", ["doc"], {EMP: set()})
    assert reads(result, "doc") == (True, [("hr", "employees", ALL_COLUMNS)])


def test_what_cannot_be_parsed_is_judged_by_everything_the_view_reads():
    result = trace_view("SELECT this is not sql", ["a", "b"], USED)
    assert result.status == "opaque" and "could not be traced" in result.problem
    assert all(not c.exact for c in result.columns)
    assert {r for c in result.columns for r in c.reads} == {ColRef(*EMP, ALL_COLUMNS)}


def test_a_misread_is_never_narrower_than_pg_depend():
    # The definition names a column pg_depend does not list: the tracer must not trust itself.
    result = trace_view("SELECT employees.salary FROM hr.employees;", ["salary"], {EMP: {"ssn"}})
    exact, refs = reads(result, "salary")
    assert not exact and refs == [("hr", "employees", ALL_COLUMNS)]


def test_width_mismatch_falls_back():
    result = trace_view("SELECT employees.ssn FROM hr.employees;", ["a", "b"], USED)
    assert result.status == "opaque"


def test_function_bodies_mention_relations_by_qualified_or_bare_name():
    known = [("hr", "employees"), ("Sales EU", 'Order "Lines"'), ("public", "orders")]
    body = 'BEGIN RETURN (SELECT ssn FROM hr.employees LIMIT 1) || (SELECT 1 FROM "Sales EU"."Order ""Lines"""); END'
    assert mentioned_relations(body, known) == {("hr", "employees"), ("Sales EU", 'Order "Lines"')}
    assert mentioned_relations("select * from ORDERS", known) == {("public", "orders")}


# --- review findings: cases where the tracer is narrower than the view (definitions and `used` exactly
# as PostgreSQL 15 printed and recorded them for the views in the test names) ---------------------------


def test_review_a_cte_with_two_columns_of_one_name_keeps_both_in_a_whole_row_reference():
    # CREATE VIEW v AS WITH c AS (SELECT t.ssn AS x, t.name AS x FROM t) SELECT row_to_json(c.*) AS j FROM c;
    # `j` holds the SSN; `_named()` builds a dict, so the first `x` (ssn) is lost.
    definition = """ WITH c AS (
         SELECT t.ssn AS x,
            t.name AS x
           FROM public.t
        )
 SELECT row_to_json(c.*) AS j
   FROM c c(x, x_1);"""
    result = trace_view(definition, ["j"], {("public", "t"): {"ssn", "name"}})
    _exact, refs = reads(result, "j")
    assert ("public", "t", "ssn") in refs or ("public", "t", ALL_COLUMNS) in refs, refs


def test_review_a_recursive_cte_that_has_not_converged_is_not_reported_exact():
    # 13 columns rotating by one per recursion: c13 carries the SSN after 12 rounds; the loop stops
    # after 10 and returns what it had as if it were exact.
    n = 13
    cols = ", ".join(f"c{i}" for i in range(1, n + 1))
    base = "t.ssn, " + ", ".join("(t.id)::text AS id" for _ in range(n - 1))
    rot = ", ".join(f"r.c{(i - 2) % n + 1}" for i in range(1, n + 1))
    definition = (
        f"WITH RECURSIVE r({cols}) AS ( SELECT {base} FROM public.t UNION ALL SELECT {rot} FROM r "
        f"WHERE (r.c1 IS NULL)) SELECT r.c{n} AS last FROM r;"
    )
    result = trace_view(definition, ["last"], {("public", "t"): {"ssn", "id"}})
    exact, refs = reads(result, "last")
    assert ("public", "t", "ssn") in refs, (exact, refs)


def test_review_an_untraceable_column_over_a_whole_row_is_judged_by_every_column_of_the_relation():
    # CREATE VIEW v AS SELECT e.id, public.f(row_to_json(e.*)) AS x FROM hr.employees e;
    # pg_depend records only employees.id (objsubid 1): the whole-row reference adds no row when a
    # column of the same relation is referenced, so `everything(used)` is {id} and `x` (which may
    # return the SSN) is judged by `id` alone.
    definition = " SELECT e.id,\n    public.f(row_to_json(e.*)) AS x\n   FROM hr.employees e;"
    result = trace_view(definition, ["id", "x"], {EMP: {"id"}})
    exact, refs = reads(result, "x")
    assert not exact
    assert ("hr", "employees", ALL_COLUMNS) in refs, refs


def test_user_operators_and_casts_to_user_types_are_not_traced_as_exact():
    used = {("public", "badges"): {"id", "n"}}
    op = trace_view(" SELECT (b.id OPERATOR(public.###) b.n) AS leak\n   FROM public.badges b;", ["leak"], used)
    assert op.status == "partial" and "operator" in op.columns[0].why
    cast = trace_view(" SELECT (b.id)::public.secret AS leak\n   FROM public.badges b;", ["leak"], used)
    assert cast.status == "partial" and "cast" in cast.columns[0].why
    builtin = trace_view(" SELECT (b.id + b.n)::text AS fine\n   FROM public.badges b;", ["fine"], used)
    assert builtin.status == "traced"
