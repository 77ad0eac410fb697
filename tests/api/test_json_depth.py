"""JSON bodies nested too deeply are a 400 in the error envelope, on every operation that reads a
body, and change nothing; normal bodies are unaffected (governance/api/parsers.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import override_settings
from drf_spectacular.generators import SchemaGenerator
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.models import AuditEvent
from governance.api.parsers import nesting_exceeds
from governance.models import AccessRequest, DataSource, Grant
from tests.api.conftest import World, error

pytestmark = pytest.mark.django_db

DEEP = 1_000  # deep enough for Python's json to raise RecursionError without the limit


def nested_object(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def nested_array(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def operations_with_a_body() -> list[tuple[str, str]]:
    """(method, path template) of every operation whose schema declares a request body."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return sorted(
        (method, path)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if "requestBody" in operation
    )


def own_aggregate_grant(world: World) -> int:
    """The governance admin's own aggregate grant on an aggregates-only dataset (made once per test):
    a query's body is read only once the grant is found to be the caller's."""
    from decimal import Decimal

    from governance.models import Dataset
    from tests.privacy.conftest import grant_aggregate

    found = Grant.objects.filter(level="aggregate", grantee_user=world.users["gov_admin"]).first()
    if found is not None:
        return found.pk
    dataset = Dataset.objects.create(
        source=world.source, schema="finance", name="metrics", classification=world.ledger.classification,
        owner=world.users["owner"], aggregates_only=True,
    )  # fmt: skip
    from guardian.shortcuts import assign_perm

    for perm in ("approve_access", "steward_dataset"):
        assign_perm(perm, world.users["owner"], dataset)
    return int(grant_aggregate(dataset, world.users["gov_admin"], world.users["owner"], Decimal(1)).pk)


def own_break_glass_use(world: World) -> int:
    """The analyst's break of the glass on `other` (made once: the sweep's reviews find it)."""
    from breakglass.models import BreakGlassUse
    from tests.breakglass.world import break_glass_use

    use = BreakGlassUse.objects.filter(user=world.users["analyst"]).first()
    return (use or break_glass_use(world.users["analyst"], world.other)).pk


def fill(path: str, world: World) -> str:
    """The path with its one parameter set to an object of the world the admin may act on."""
    if path.startswith("/api/v1/privacy/grants/"):
        return re.sub(r"\{[^}]+\}", str(own_aggregate_grant(world)), path)
    if path.startswith("/api/v1/break-glass/{"):
        return re.sub(r"\{[^}]+\}", str(own_break_glass_use(world)), path)
    values = {
        "access-requests": world.pending.pk,
        "grants": world.granted.pk,
        "provisioning-jobs": world.job.pk,
        "sources": world.source.name,
        "reviews/campaigns": world.campaign.pk,
        "reviews/items": world.review_item.pk,
        "quality/checks": world.quality_check.pk,
        "quality/datasets": world.ledger.pk,
        "privacy/datasets": world.ledger.pk,
        "subject-requests": world.subject_request.pk,
        "subject-identifiers": world.subject_identifier.pk,
        "subject-relationships": world.subject_relationship.pk,
        "subject-handling": world.ledger.pk,
    }
    if "{" not in path:
        return path
    resource = path.split("/")[3]  # /api/v1/<resource>/...
    if resource in ("reviews", "quality", "privacy"):  # /api/v1/<app>/<resource>/...
        resource = "/".join(path.split("/")[3:5])
    assert resource in values, f"no value for the path parameter of {path}: add one to fill()"
    return re.sub(r"\{[^}]+\}", str(values[resource]), path)


def test_every_operation_with_a_body_is_covered() -> None:
    """The sweep below is only as good as this list: it must be the whole API's writes."""
    ops = operations_with_a_body()
    assert ("post", "/api/v1/access-requests/") in ops and ("patch", "/api/v1/sources/{name}/") in ops
    assert len(ops) >= 10, ops


@pytest.mark.parametrize("shape", [nested_object, nested_array], ids=["object", "array"])
def test_a_deeply_nested_body_is_a_400_on_every_operation_and_changes_nothing(
    world: World, api: Callable[..., Any], shape: Callable[[int], str]
) -> None:
    own_aggregate_grant(world)  # made before counting: the sweep then changes nothing
    own_break_glass_use(world)
    client = api(world.users["gov_admin"])
    counts = (AccessRequest.objects.count(), Grant.objects.count(), DataSource.objects.count())
    last_event = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    for method, template in operations_with_a_body():
        path = fill(template, world)
        response = getattr(client, method)(path, data=shape(DEEP), content_type="application/json")
        assert response.status_code == 400, (method, path, response.status_code, response.content[:300])
        err = error(response)
        assert err["code"] == "parse_error", (method, path, err)
        assert "nested deeper than 32 levels" in err["message"], err
    assert (AccessRequest.objects.count(), Grant.objects.count(), DataSource.objects.count()) == counts
    # Nothing was decided or created: at most the refusals' own records, never a change.
    assert not AuditEvent.objects.filter(pk__gt=last_event).exclude(outcome__in=["denied", "failed"]).exists()


def test_one_level_over_the_limit_is_refused_and_the_limit_itself_parses(world: World, api: Callable[..., Any]) -> None:
    client = api(world.users["analyst"])
    url = f"/api/v1/access-requests/{world.pending.pk}/cancel/"
    over = client.post(url, data=nested_array(33), content_type="application/json")
    assert over.status_code == 400 and error(over)["code"] == "parse_error"
    # 32 levels parse; the body is then judged by its shape (a list is not an object): 'invalid'.
    at = client.post(url, data=nested_array(32), content_type="application/json")
    assert at.status_code == 400 and error(at)["code"] == "invalid"


@override_settings(API_JSON_MAX_DEPTH=4)
def test_the_limit_comes_from_settings(world: World, api: Callable[..., Any]) -> None:
    client = api(world.users["analyst"])
    body = {"dataset": world.ledger.pk, "duration_days": 3, "justification": "x", "columns": [[[["a"]]]]}
    response = client.post("/api/v1/access-requests/", body, format="json")
    assert response.status_code == 400 and "deeper than 4 levels" in error(response)["message"]


def test_a_normal_body_still_works(world: World, api: Callable[..., Any]) -> None:
    body = {"dataset": world.ledger.pk, "level": "write", "duration_days": 3, "justification": "[[{{ month end"}
    response = api(world.users["analyst"]).post("/api/v1/access-requests/", body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["justification"] == "[[{{ month end"


@pytest.mark.parametrize(
    ("text", "deeper_than_2"),
    [
        ("[[1]]", False),
        ("[[[1]]]", True),
        ('{"a": {"b": {"c": 1}}}', True),
        ('[1, [2], [3], [4], {"x": 5}]', False),  # many brackets, little depth
        ('["[[[[[[", "{{{{{{"]', False),  # brackets inside strings do not nest
        ('["\\"[[[[[[", "x"]', False),  # nor after an escaped quote
        ('[{"k": "\\\\"}, "[[["]', False),  # an escaped backslash ends before the closing quote
        ('[{"k": "\\\\", "v": [1]}]', True),
        # Invalid JSON (json.loads refuses it after the scan): a string that never closes runs to the
        # end of the text, so the scan stays linear; brackets before it still count, and json.loads
        # never reaches anything after it.
        ('[[["abc', True),
        ('["[[[[[[', False),
        ('[["\\"[[[[', False),
    ],
)
def test_nesting_is_measured_outside_strings(text: str, deeper_than_2: bool) -> None:
    assert nesting_exceeds(text, 2) is deeper_than_2


def depth(value: Any) -> int:
    """Levels of arrays and objects in a parsed JSON value."""
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


# Strings made of what the scan must see through: quotes, backslashes, brackets, control characters.
_TRICKY = st.text(alphabet=st.sampled_from(list('ab"\\[]{}\n\t/ \u00e9\u2028\x00')), max_size=8)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _TRICKY,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TRICKY, inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=_JSON, ascii_only=st.booleans(), limit=st.integers(0, 6))
def test_the_scan_agrees_with_the_parsed_depth_on_any_valid_json(value: Any, ascii_only: bool, limit: int) -> None:
    import json

    assert nesting_exceeds(json.dumps(value, ensure_ascii=ascii_only), limit) is (depth(value) > limit)


def test_an_unterminated_string_after_too_many_brackets_is_one_match_and_a_400(
    world: World, api: Callable[..., Any]
) -> None:
    """Review finding (a denial of service): with a string pattern whose closing quote was required,
    a string that never closes made the engine retry from every later quote, O(n^2): 64 KB of
    `[`*33 + '"' + '\\"'*n took ~15 s of a worker's CPU, for any client with a token. Pinned
    without a clock (speed is the benchmarks' business): the scanner consumes such a string in ONE
    match, from its quote to the end of the text, so nothing is ever retried; and the API refuses
    the body with the usual 400."""
    from governance.api.parsers import _STRING

    tail = '"' + '\\"' * 32_000
    body = "[" * 33 + tail
    matches = list(_STRING.finditer(body))
    assert len(matches) == 1 and matches[0].span() == (33, len(body))
    response = api(world.users["analyst"]).post(
        f"/api/v1/access-requests/{world.pending.pk}/cancel/", data=body, content_type="application/json"
    )
    assert response.status_code == 400
