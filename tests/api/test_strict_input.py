"""The API takes input as its schema states it, or answers 400 naming the field and changes nothing.

Each case here was a schemathesis `--checks all` finding (tests/api/test_schemathesis.py): a value
the schema calls invalid that the API took anyway (coerced, ignored or read as "no filter"), or a
value the schema calls valid that the API refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator

from governance.api.pagination import MAX_INTEGER
from governance.api.validation import NO_NUL, NOT_BLANK
from governance.models import AccessRequest, DataSource, Grant, GrantStatus, RequestState
from tests.api.conftest import World, error

pytestmark = pytest.mark.django_db


def refused(response: Any, field: str) -> dict[str, Any]:
    assert response.status_code == 400, (response.status_code, response.content[:300])
    err = error(response)
    assert err["code"] == "invalid" and err["field"] == field, err
    return err


# --- bodies: JSON types are not coerced ------------------------------------------------------------


def test_a_number_as_a_revoke_reason_is_refused_not_coerced(world: World, api: Callable[..., Any]) -> None:
    response = api(world.users["gov_admin"]).post(f"/api/v1/grants/{world.granted.pk}/revoke/", {"reason": 0}, "json")
    refused(response, "reason")
    assert Grant.objects.get(pk=world.granted.pk).status != GrantStatus.REVOKED


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"duration_days": "7"}, "duration_days"),  # a string where an integer is due
        ({"duration_days": 7, "longest_allowed": 1}, "longest_allowed"),  # 1 is not true
        ({"duration_days": 7, "jit_credentials": "yes"}, "jit_credentials"),
        ({"duration_days": 7, "justification": ["why"]}, "justification"),
        ({"duration_days": 7, "columns": [1]}, "columns"),  # list items are typed too
        ({"duration_days": 7, "level": True}, "level"),
        ({"duration_days": 7, "grantee_role": 5}, "grantee_role"),
    ],
)
def test_a_request_with_a_wrongly_typed_value_is_refused_and_creates_nothing(
    world: World, api: Callable[..., Any], body: dict[str, Any], field: str
) -> None:
    before = AccessRequest.objects.count()
    response = api(world.users["analyst"]).post(
        "/api/v1/access-requests/", {"dataset": world.ledger.pk, **body}, "json"
    )
    refused(response, field)
    assert AccessRequest.objects.count() == before


def test_a_string_over_its_max_length_is_refused_even_when_trimming_would_shorten_it(
    world: World, api: Callable[..., Any]
) -> None:
    """schemathesis' finding: 201 characters starting with a carriage return passed a 200 limit,
    because DRF counts after it trims. The schema's maxLength counts what was sent."""
    from reviews.models import ReviewCampaign

    before = ReviewCampaign.objects.count()
    officer = api(world.users["gov_admin"])
    response = officer.post("/api/v1/reviews/campaigns/", {"name": "\r" + "x" * 200}, "json")
    refused(response, "name")
    assert ReviewCampaign.objects.count() == before
    response = officer.post("/api/v1/reviews/campaigns/", {"name": " " + "x" * 199}, "json")
    assert response.status_code == 201, response.content[:300]  # at the limit, trimmed as before
    assert response.json()["name"] == "x" * 199


def test_a_whole_number_written_as_a_float_is_still_an_integer(world: World, api: Callable[..., Any]) -> None:
    """JSON Schema counts 7.0 as an integer: so does the API."""
    body = {"dataset": world.ledger.pk, "level": "write", "duration_days": 7.0, "justification": "month end"}
    assert api(world.users["analyst"]).post("/api/v1/access-requests/", body, "json").status_code == 201


@pytest.mark.parametrize("method", ["post", "put", "patch"])
def test_an_empty_default_classification_is_refused_not_read_as_null(
    world: World, api: Callable[..., Any], method: str
) -> None:
    body = {"name": "lake", "host": "db", "database": "lake", "username": "p", "default_classification": ""}
    url = "/api/v1/sources/" if method == "post" else f"/api/v1/sources/{world.source.name}/"
    response = getattr(api(world.users["gov_admin"]), method)(url, body, format="json")
    refused(response, "default_classification")
    assert not DataSource.objects.filter(name="lake").exists()


def test_fix_must_be_a_boolean(world: World, api: Callable[..., Any]) -> None:
    response = api(world.users["gov_admin"]).post(
        f"/api/v1/sources/{world.source.name}/reconcile/", {"fix": "true"}, "json"
    )
    refused(response, "fix")


def test_reconciling_a_source_with_provisioning_off_is_a_conflict_with_its_state(
    world: World, api: Callable[..., Any]
) -> None:
    response = api(world.users["gov_admin"]).post(f"/api/v1/sources/{world.source.name}/reconcile/", {}, "json")
    assert response.status_code == 409
    assert error(response)["details"]["state"] == "provisioning_disabled"


def test_a_denial_without_a_comment_is_refused_by_its_declared_shape(world: World, api: Callable[..., Any]) -> None:
    owner = api(world.users["owner"])
    for body in ({}, {"comment": "  "}):
        refused(owner.post(f"/api/v1/access-requests/{world.pending.pk}/deny/", body, "json"), "comment")
    assert AccessRequest.objects.get(pk=world.pending.pk).state == RequestState.PENDING
    ok = owner.post(f"/api/v1/access-requests/{world.pending.pk}/deny/", {"comment": "not needed"}, "json")
    assert ok.status_code == 200 and ok.json()["state"] == RequestState.DENIED


# --- query parameters: given means a value of the declared type ------------------------------------


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/v1/datasets/?page_size=null", "page_size"),
        ("/api/v1/datasets/?page_size=0", "page_size"),
        ("/api/v1/datasets/?page_size=", "page_size"),
        ("/api/v1/grants/?page=last", "page"),
        ("/api/v1/grants/?page=1.5", "page"),
        ("/api/v1/audit-events/?page_size=abc", "page_size"),
        ("/api/v1/access-requests/?submitted_before=", "submitted_before"),
        ("/api/v1/audit-events/?until=", "until"),
        ("/api/v1/grants/?ends_before=", "ends_before"),
        ("/api/v1/datasets/?is_present=abc", "is_present"),
        ("/api/v1/datasets/?is_present=1", "is_present"),
        ("/api/v1/drift-findings/?open=", "open"),
        ("/api/v1/grants/?dataset=1.5", "dataset"),
        ("/api/v1/provisioning-jobs/?grant=", "grant"),
        ("/api/v1/datasets/?tag=", "tag"),
        ("/api/v1/grants/?status=", "status"),
        ("/api/v1/datasets/?q=a%00b", "q"),  # NUL: PostgreSQL text cannot hold one
        ("/api/v1/datasets/?ordering=%00name", "ordering"),
        ("/api/v1/audit-events/?cursor=%00", "cursor"),
    ],
)
def test_a_query_parameter_that_is_not_a_value_of_its_type_is_a_400_naming_it(
    world: World, api: Callable[..., Any], url: str, field: str
) -> None:
    refused(api(world.users["auditor"]).get(url), field)


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/datasets/?q=",  # an empty text is a text: no filter
        "/api/v1/datasets/?is_present=true&page_size=500",  # above the maximum: served at the maximum
        "/api/v1/grants/?in_force=false&dataset=99999999999999999999",
        "/api/v1/access-requests/?submitted_before=2030-01-01T00:00:00Z",
    ],
)
def test_values_of_the_declared_type_are_still_accepted(world: World, api: Callable[..., Any], url: str) -> None:
    assert api(world.users["auditor"]).get(url).status_code == 200


def test_a_page_past_the_last_is_still_a_404(world: World, api: Callable[..., Any]) -> None:
    assert api(world.users["auditor"]).get("/api/v1/grants/?page=99").status_code == 404


# --- the schema states these rules -----------------------------------------------------------------


def test_the_schema_declares_the_string_rules_the_api_enforces() -> None:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    reason = schema["components"]["schemas"]["ReasonRequest"]["properties"]["reason"]
    assert reason["pattern"] == NOT_BLANK and reason["minLength"] == 1
    deny = schema["components"]["schemas"]["DenyRequest"]
    assert "comment" in deny["required"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                p = parameter["schema"]
                if parameter["in"] == "query" and p["type"] == "string":
                    assert {"pattern", "enum", "format"} & set(p), (method, path, parameter["name"])
                    assert p.get("pattern", NO_NUL) == NO_NUL
                if parameter["name"] in ("page", "page_size"):
                    assert p["minimum"] == 1, (method, path, parameter["name"])
                    assert p["maximum"] == MAX_INTEGER, (method, path, parameter["name"])


@pytest.mark.parametrize("name", ["page", "page_size"])
def test_review_a_page_number_too_long_for_int_is_a_400_not_a_500(
    world: World, api: Callable[..., Any], name: str
) -> None:
    """Review finding: `_INTEGER` admits any number of digits, then int() refuses more than 4,300
    (Python's int_max_str_digits): a ValueError, answered 500."""
    response = api(world.users["analyst"]).get("/api/v1/datasets/", {name: "9" * 5000})
    assert response.status_code == 400, response.content[:200]


@pytest.mark.parametrize("name", ["page", "page_size"])
def test_page_and_page_size_are_bounded_by_the_maximum_the_schema_declares(
    world: World, api: Callable[..., Any], name: str
) -> None:
    """The largest value the schema allows is served (a page past the last is a 404, a size above
    200 is 200); one more, or any number of leading digits beyond 19, is a 400 naming the parameter."""
    client = api(world.users["analyst"])
    served = client.get("/api/v1/datasets/", {name: str(MAX_INTEGER)})
    assert served.status_code == (404 if name == "page" else 200), served.content[:200]
    for raw in (str(MAX_INTEGER + 1), "0" + str(MAX_INTEGER), "-" + "9" * 5000):
        err = refused(client.get("/api/v1/datasets/", {name: raw}), name)
        assert err["message"] == f"{name} must be a whole number from 1 to {MAX_INTEGER}.", err
