"""The row filter grammar (governance/provisioners/pg_row_filters.py): what is accepted, how it is
rendered again, what is refused and how the refusal names the part; the normalisation verify uses."""

from __future__ import annotations

import pytest

from governance.provisioners import pg_row_filters as pgr

COLUMNS = {"region", "active", "tenant_id", "n", 'Ré"gion x'}


@pytest.mark.parametrize(
    ("text", "compiled"),
    [
        ("region = 'EU'", "(\"region\" = 'EU')"),
        ("region IN ('EU','UK') AND active", "((\"region\" IN ('EU', 'UK')) AND \"active\")"),
        ("tenant_id = grantee.tenant", "(\"tenant_id\" = 'acme')"),
        ("n BETWEEN 1 AND 5 OR NOT active", '(("n" BETWEEN 1 AND 5) OR (NOT "active"))'),
        ("region IS NOT NULL AND n >= 2.5", '(("region" IS NOT NULL) AND ("n" >= \'2.5\'))'),
        ("region NOT IN ('x') AND active = true", '((NOT ("region" IN (\'x\'))) AND ("active" = true))'),
        ("\"Ré\"\"gion x\" <> 'it''s'", "(\"Ré\"\"gion x\" <> 'it''s')"),
    ],
)
def test_accepted_filters_are_rendered_again_from_the_tree(text: str, compiled: str) -> None:
    tree = pgr.parse(text, COLUMNS)
    assert pgr.text_of(pgr.bind(tree, {"tenant": "acme"})) == compiled


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("1=1; DROP TABLE x", "one expression"),
        ("region = 'EU'; DROP TABLE x", "one expression"),
        ("lower(region) = 'eu'", "function call"),
        ("region = lower('EU')", "function call"),
        ("region IN (SELECT region FROM other)", "subquery"),
        ("region = (SELECT 'EU')", "subquery"),
        ("nope = 1", "Unknown column nope"),
        ("region = n", "column on the right-hand side"),
        ("region::text = 'EU'", "column of this dataset"),
        ("region ~ 'E.*'", "operator '~'"),
        ("region = 'EU' FROM pg_authid", "one expression"),
        ("", "empty"),
        ("region = NULL", "IS NULL"),
    ],
)
def test_anything_outside_the_grammar_is_refused_naming_the_part(text: str, says: str) -> None:
    with pytest.raises(pgr.FilterError) as refused:
        pgr.parse(text, COLUMNS)
    assert says in str(refused.value)


def test_a_missing_grantee_attribute_is_named() -> None:
    tree = pgr.parse("tenant_id = grantee.tenant AND region = grantee.region", COLUMNS)
    assert pgr.attributes(tree) == ["region", "tenant"]
    with pytest.raises(pgr.FilterError, match="region"):
        pgr.bind(tree, {"tenant": "a"})


def test_a_value_with_a_quote_stays_a_value() -> None:
    tree = pgr.bind(pgr.parse("tenant_id = grantee.tenant", COLUMNS), {"tenant": "x'); DROP TABLE t; --"})
    assert pgr.text_of(tree) == "(\"tenant_id\" = 'x''); DROP TABLE t; --')"


@pytest.mark.parametrize(
    ("shown", "rendered"),
    [
        ("(region = 'EU'::text)", "(\"region\" = 'EU')"),
        (
            "((region)::text = ANY ((ARRAY['EU'::character varying, 'UK'::character varying])::text[]))",
            "(\"region\" IN ('EU', 'UK'))",
        ),
        ("((n >= 1) AND (n <= 5))", '("n" BETWEEN 1 AND 5)'),
        ("(region <> ALL (ARRAY['a'::text, 'b'::text]))", "(NOT (\"region\" IN ('a', 'b')))"),
    ],
)
def test_what_postgresql_shows_compares_equal_to_what_the_portal_rendered(shown: str, rendered: str) -> None:
    assert pgr.canonical(shown) == pgr.canonical(rendered)


def test_a_different_predicate_does_not_compare_equal() -> None:
    assert pgr.canonical("(region = 'US'::text)") != pgr.canonical("(\"region\" = 'EU')")
