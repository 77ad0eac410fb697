"""What automation relies on: tokens and their scopes, one error envelope, idempotent retries,
visibility, and list endpoints whose query count does not grow with their rows."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.tokens import api_token_create, api_token_revoke
from audit.models import AuditEvent
from governance.models import AccessRequest, Grant, IdempotencyRecord, RequestState
from governance.services.requests import access_request_submit
from tests.api.conftest import DAYS, World, error

pytestmark = pytest.mark.django_db


def bearer(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


# --- tokens ----------------------------------------------------------------------------------------


def test_api_token_command_prints_only_the_token_and_it_works(world: World) -> None:
    out = io.StringIO()
    call_command("api_token", "create", "analyst", "--scopes", "read,request", "--expires-in", "30d", stdout=out)
    secret = out.getvalue().strip()
    assert secret.startswith("gov_") and "\n" not in secret
    token = ApiToken.objects.get(user__username="analyst")
    assert token.digest != secret and secret not in json.dumps(list(ApiToken.objects.values()), default=str)
    assert token.scopes == ["read", "request"]
    assert dt.timedelta(days=29) < token.expires_at - timezone.now() <= dt.timedelta(days=30)
    created = AuditEvent.objects.get(action="api_token.created")
    assert created.source == "cli" and secret not in json.dumps(created.metadata)

    response = bearer(secret).get("/api/v1/access-requests/")
    assert response.status_code == 200
    assert {r["id"] for r in response.json()["results"]} == {world.granted.source_request_id, world.pending.pk}


def test_api_token_command_refuses_bad_input_with_one_line() -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No user 'nobody'"):
        call_command("api_token", "create", "nobody", "--scopes", "read")


def test_wrong_scope_is_refused_and_audited(world: World, token_for: Callable[..., str]) -> None:
    secret = token_for(world.users["owner"], "read")
    response = bearer(secret).post(f"/api/v1/access-requests/{world.pending.pk}/approve/", {}, format="json")
    assert response.status_code == 403
    assert "lacks the 'approve' scope" in error(response)["message"]
    assert AccessRequest.objects.get(pk=world.pending.pk).state == RequestState.PENDING
    denied = AuditEvent.objects.get(action="api_token.scope_denied")
    assert denied.actor == world.users["owner"] and denied.outcome == "denied" and denied.source == "api"


@pytest.mark.parametrize("state", ["revoked", "expired", "wrong_secret", "malformed"])
def test_unusable_tokens_get_401(world: World, state: str) -> None:
    issued = api_token_create(user=world.users["analyst"], scopes="read")
    secret = issued.secret
    if state == "revoked":
        api_token_revoke(token=issued.token, actor=None)
    elif state == "expired":
        ApiToken.objects.filter(pk=issued.token.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    elif state == "wrong_secret":
        secret = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    else:
        secret = "not-a-token"
    response = bearer(secret).get("/api/v1/datasets/")
    assert response.status_code == 401
    assert error(response)["code"] == "authentication_failed"


def test_revoking_a_token_through_the_api_is_audited(world: World, token_for: Callable[..., str]) -> None:
    secret = token_for(world.users["analyst"], "read")
    key_id = secret.split("_")[1]
    response = bearer(secret).post(f"/api/v1/tokens/{key_id}/revoke/", {}, format="json")
    assert response.status_code == 200 and response.json()["revoked_at"]
    assert bearer(secret).get("/api/v1/datasets/").status_code == 401
    assert AuditEvent.objects.get(action="api_token.revoked").actor == world.users["analyst"]


# --- errors ----------------------------------------------------------------------------------------


def test_validation_error_names_the_field_and_changes_nothing(world: World, api: Callable[..., Any]) -> None:
    before = AccessRequest.objects.count()
    response = api(world.users["analyst"]).post(
        "/api/v1/access-requests/", {"dataset": world.ledger.pk, "duration_days": 0}, format="json"
    )
    assert response.status_code == 400
    err = error(response)
    assert err["code"] == "invalid" and err["field"] == "duration_days" and "duration_days" in err["fields"]
    assert AccessRequest.objects.count() == before


def test_policy_error_is_a_400_with_the_limit(world: World, api: Callable[..., Any]) -> None:
    response = api(world.users["analyst"]).post(
        "/api/v1/access-requests/",
        {"dataset": world.employees.pk, "duration_days": 3000, "justification": "x"},
        format="json",
    )
    assert response.status_code == 400
    assert error(response)["code"] == "policy_violation"


def test_conflict_is_409_with_the_current_state(world: World, api: Callable[..., Any]) -> None:
    owner = api(world.users["owner"])
    assert owner.post(f"/api/v1/access-requests/{world.pending.pk}/approve/", {}, format="json").status_code == 200
    again = owner.post(f"/api/v1/access-requests/{world.pending.pk}/approve/", {}, format="json")
    assert again.status_code == 409
    err = error(again)
    assert err["code"] == "conflict" and err["details"]["state"] == "approved"


def test_malformed_json_is_a_400_not_a_500(world: World, api: Callable[..., Any]) -> None:
    response = api(world.users["analyst"]).post(
        "/api/v1/access-requests/", data="{not json", content_type="application/json"
    )
    assert response.status_code == 400 and error(response)["code"] == "parse_error"


# --- idempotency ----------------------------------------------------------------------------------------


def test_replayed_create_returns_the_original_and_creates_nothing(world: World, api: Callable[..., Any]) -> None:
    client = api(world.users["analyst"])
    body = {"dataset": world.ledger.pk, "level": "write", "duration_days": 2, "justification": "load"}
    first = client.post("/api/v1/access-requests/", body, format="json", HTTP_IDEMPOTENCY_KEY="ci-run-4711")
    assert first.status_code == 201
    count = AccessRequest.objects.count()
    replay = client.post("/api/v1/access-requests/", body, format="json", HTTP_IDEMPOTENCY_KEY="ci-run-4711")
    assert replay.status_code == 201 and replay.json() == first.json()
    assert replay["Idempotent-Replayed"] == "true" and replay["Location"] == first["Location"]
    assert AccessRequest.objects.count() == count
    assert AuditEvent.objects.filter(action="access_request.submitted").count() == 3  # 2 in the world + 1

    different = client.post(
        "/api/v1/access-requests/", {**body, "duration_days": 3}, format="json", HTTP_IDEMPOTENCY_KEY="ci-run-4711"
    )
    assert different.status_code == 409 and error(different)["details"]["state"] == "key_reused"
    assert AccessRequest.objects.count() == count


def test_replayed_approve_does_not_approve_twice(world: World, api: Callable[..., Any]) -> None:
    client = api(world.users["owner"])
    url = f"/api/v1/access-requests/{world.pending.pk}/approve/"
    first = client.post(url, {"comment": "ok"}, format="json", HTTP_IDEMPOTENCY_KEY="bot-1")
    replay = client.post(url, {"comment": "ok"}, format="json", HTTP_IDEMPOTENCY_KEY="bot-1")
    assert first.status_code == replay.status_code == 200  # not the 409 a second approval gets
    assert Grant.objects.filter(source_request=world.pending).count() == 1
    assert AuditEvent.objects.filter(action="access_request.approved").count() == 2  # world's + this one


def test_idempotency_keys_are_per_user(world: World, api: Callable[..., Any]) -> None:
    body = {"dataset": world.ledger.pk, "level": "admin", "duration_days": 1, "justification": "x"}
    a = api(world.users["analyst"]).post("/api/v1/access-requests/", body, format="json", HTTP_IDEMPOTENCY_KEY="k")
    b = api(world.users["officer"]).post("/api/v1/access-requests/", body, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert a.status_code == b.status_code == 201 and a.json()["id"] != b.json()["id"]
    assert IdempotencyRecord.objects.filter(key="k").count() == 2


def test_refused_call_with_a_key_is_replayed_as_refused(world: World, api: Callable[..., Any]) -> None:
    client = api(world.users["analyst"])  # may not approve their own request
    url = f"/api/v1/access-requests/{world.pending.pk}/approve/"
    first = client.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="self-approve")
    assert first.status_code == 403
    assert AuditEvent.objects.filter(action="access_request.approve", outcome="denied").count() == 1
    assert client.post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="self-approve").status_code == 403


# --- visibility ------------------------------------------------------------------------------------------


def test_a_requester_sees_only_their_own_requests(world: World, api: Callable[..., Any], make_user: Any) -> None:
    from accounts.roles import REQUESTERS

    stranger = make_user("stranger", REQUESTERS)
    access_request_submit(requester=stranger, dataset=world.ledger, justification="mine", duration=DAYS)
    seen = api(world.users["analyst"]).get("/api/v1/access-requests/").json()["results"]
    assert {r["requester"] for r in seen} == {"analyst"}
    theirs = AccessRequest.objects.get(requester=stranger)
    assert api(world.users["analyst"]).get(f"/api/v1/access-requests/{theirs.pk}/").status_code == 404


def test_what_can_a_user_access(world: World, api: Callable[..., Any]) -> None:
    response = api(world.users["officer"]).get("/api/v1/grants/?user=analyst&in_force=true")
    assert [g["id"] for g in response.json()["results"]] == [world.granted.pk]
    who = api(world.users["other_owner"]).get(f"/api/v1/datasets/{world.other.pk}/access/").json()
    assert [g["grantee_user"] for g in who["results"]] == ["analyst"]


def test_request_detail_shows_approvals_and_policy(world: World, api: Callable[..., Any]) -> None:
    detail = api(world.users["analyst"]).get(f"/api/v1/access-requests/{world.granted.source_request_id}/").json()
    assert detail["state"] == "approved" and detail["grant"]["id"] == world.granted.pk
    assert [(a["stage"], a["decision"], a["approver"]) for a in detail["approvals"]] == [
        ("owner", "approved", "other_owner")
    ]
    assert detail["provisioning"] is None or detail["provisioning"]["status"]


def test_audit_export_streams_jsonl_and_csv(world: World, api: Callable[..., Any]) -> None:
    client = api(world.users["auditor"])
    jsonl = client.get("/api/v1/audit-events/export/?action=access_request.submitted")
    assert jsonl.status_code == 200 and jsonl["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in b"".join(jsonl.streaming_content).decode().splitlines()]
    assert len(lines) == 2 and {line["action"] for line in lines} == {"access_request.submitted"}
    csv_response = client.get("/api/v1/audit-events/export/?format=csv&action=access_request.submitted")
    text = b"".join(csv_response.streaming_content).decode()
    assert text.splitlines()[0].startswith("id,occurred_at,actor_username") and len(text.splitlines()) == 3
    bad = client.get("/api/v1/audit-events/export/?format=xml")
    assert bad.status_code == 400 and error(bad)["field"] == "format"


def test_audit_list_filters_and_pages_with_a_cursor(world: World, api: Callable[..., Any]) -> None:
    client = api(world.users["auditor"])
    first = client.get("/api/v1/audit-events/?page_size=2").json()
    assert len(first["results"]) == 2 and first["next"]
    second = client.get(first["next"]).json()
    assert not {e["id"] for e in first["results"]} & {e["id"] for e in second["results"]}
    only = client.get("/api/v1/audit-events/?actor=other_owner&action=access_request.approved").json()["results"]
    assert [e["action"] for e in only] == ["access_request.approved"]


def test_an_audit_page_is_exactly_what_the_serializer_renders(
    world: World, api: Callable[..., Any], settings: Any
) -> None:
    """The list reads plain rows for speed; what it answers is the serializer's, field for field,
    times in the configured time zone included."""
    from audit import services as audit
    from governance.api.serializers import AuditEventSerializer

    settings.TIME_ZONE = "Europe/Paris"
    audit.record(
        action="test.rendered",
        actor=world.users["auditor"],
        target_type="dataset",
        target_id=7,
        target_repr="finance.ledger",
        changes={"owner": ["a", "b"]},
        reason="why",
        metadata={"n": 1.5, "nested": {"k": [1, None]}},
    )
    client = api(world.users["auditor"])
    answered = client.get("/api/v1/audit-events/?page_size=50").json()["results"]
    events = AuditEvent.objects.order_by("-occurred_at", "-id")[:50]
    expected = json.loads(json.dumps(AuditEventSerializer(events, many=True).data))
    assert answered == expected
    rendered = next(e for e in answered if e["action"] == "test.rendered")
    assert rendered["occurred_at"].endswith("+01:00") and rendered["metadata"] == {"n": 1.5, "nested": {"k": [1, None]}}


# --- query counts ----------------------------------------------------------------------------------------


LISTS = [
    "/api/v1/datasets/",
    "/api/v1/classifications/",
    "/api/v1/roles/",
    "/api/v1/access-requests/",
    "/api/v1/grants/",
    "/api/v1/provisioning-jobs/",
    "/api/v1/drift-findings/",
    "/api/v1/sources/",
    "/api/v1/audit-events/",
    "/api/v1/tokens/",
]


def _queries(client: APIClient, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(ctx)


@pytest.mark.parametrize("url", LISTS)
def test_list_query_count_does_not_grow_with_rows(
    world: World, api: Callable[..., Any], make_dataset: Any, url: str
) -> None:
    client = api(world.users["officer"])
    client.get(url)  # warm: content types, the officer's groups
    before = _queries(client, url)
    # Ten more of everything the lists show.
    for i in range(10):
        ds = make_dataset(f"more_{i}", owner=world.users["owner"], pii={"id": "email"})
        req = access_request_submit(requester=world.users["analyst"], dataset=ds, justification="x", duration=DAYS)
        from governance.services.requests import access_request_approve

        access_request_approve(access_request=req, approver=world.users["owner"])
    assert _queries(client, url) == before, url


# Token (with its user), the caller's groups when a rule asks, the page's count, the page (and one
# prefetch for roles' members); none of them grows with the rows (see the test above).
PINNED = {
    "/api/v1/datasets/": 3,
    "/api/v1/classifications/": 2,
    "/api/v1/roles/": 4,
    "/api/v1/access-requests/": 4,
    "/api/v1/grants/": 4,
    "/api/v1/provisioning-jobs/": 4,
    "/api/v1/drift-findings/": 4,
    "/api/v1/sources/": 4,
    "/api/v1/audit-events/": 4,  # one of them: the redactions in force (audit.redaction)
    "/api/v1/tokens/": 3,
}


@pytest.mark.parametrize(("url", "expected"), PINNED.items())
def test_list_query_counts_are_pinned(world: World, api: Callable[..., Any], url: str, expected: int) -> None:
    client = api(world.users["officer"])
    client.get(url)
    assert _queries(client, url) == expected


# --- found by review -------------------------------------------------------------------------------------


def test_malformed_body_with_an_idempotency_key_is_a_400_and_decides_nothing(
    world: World, api: Callable[..., Any]
) -> None:
    response = api(world.users["owner"]).post(
        f"/api/v1/access-requests/{world.pending.pk}/approve/",
        data='{"comment": "ok", "stage": ',
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY="a1",
    )
    assert response.status_code == 400 and error(response)["code"] == "parse_error"
    assert AccessRequest.objects.get(pk=world.pending.pk).state == RequestState.PENDING
    assert not IdempotencyRecord.objects.exists()


def test_idempotency_fingerprint_is_keyed(world: World, api: Callable[..., Any]) -> None:
    import hashlib

    body = {"name": "lake", "host": "db.internal", "database": "lake", "username": "p", "password": "hunter2"}
    response = api(world.users["gov_admin"]).post("/api/v1/sources/", body, format="json", HTTP_IDEMPOTENCY_KEY="s1")
    assert response.status_code == 201 and "password" not in response.json()
    record = IdempotencyRecord.objects.get(key="s1")
    plain = hashlib.sha256(f"POST /api/v1/sources/\n{json.dumps(body, sort_keys=True)}".encode()).hexdigest()
    assert record.fingerprint != plain and "hunter2" not in json.dumps(record.body)


@pytest.mark.parametrize(("cursor", "expected"), [("cD14", 404), ("cD0yMDI2LTEzLTQ1", 404), ("bm9uc2Vuc2U=", 200)])
def test_a_forged_audit_cursor_is_a_clean_error(
    world: World, api: Callable[..., Any], cursor: str, expected: int
) -> None:
    """p=x and p=2026-13-45 are positions that are no time: 'Invalid cursor'. A cursor without a
    position is simply the first page."""
    response = api(world.users["auditor"]).get(f"/api/v1/audit-events/?cursor={cursor}")
    assert response.status_code == expected
    if expected == 404:
        assert error(response)["message"] == "Invalid cursor"


@pytest.mark.parametrize(
    "url", ["/api/v1/roles/?ordering=active_memberships", "/api/v1/audit-events/?ordering=ip_address"]
)
def test_ordering_only_on_declared_fields(world: World, api: Callable[..., Any], url: str) -> None:
    assert api(world.users["auditor"]).get(url).status_code == 200  # ignored, not a 500


def test_a_method_an_endpoint_lacks_is_a_405_and_not_an_audited_refusal(
    world: World, token_for: Callable[..., str]
) -> None:
    client = bearer(token_for(world.users["analyst"], "read"))
    assert client.delete(f"/api/v1/grants/{world.granted.pk}/").status_code == 405
    assert client.options("/api/v1/access-requests/").status_code == 405
    assert not AuditEvent.objects.filter(action="api_token.scope_denied").exists()


def test_any_token_may_revoke_itself(world: World, token_for: Callable[..., str]) -> None:
    secret = token_for(world.users["analyst"], "request")
    response = bearer(secret).post(f"/api/v1/tokens/{secret.split('_')[1]}/revoke/", {}, format="json")
    assert response.status_code == 200


def test_audit_csv_export_defuses_formulas(world: World, api: Callable[..., Any]) -> None:
    from audit.services import record

    record(action="probe.formula", actor=None, reason='=HYPERLINK("http://x")')
    text = b"".join(
        api(world.users["auditor"])
        .get("/api/v1/audit-events/export/?format=csv&action=probe.formula")
        .streaming_content
    ).decode()
    assert "'=HYPERLINK" in text and ",=HYPERLINK" not in text


def test_a_refused_retry_is_audited(world: World, api: Callable[..., Any]) -> None:
    response = api(world.users["other_owner"]).post(
        f"/api/v1/provisioning-jobs/{world.job.pk}/retry/", {}, format="json"
    )
    assert response.status_code == 403
    assert AuditEvent.objects.filter(action="provisioning_job.retry", outcome="denied").exists()


def test_an_invalid_item_of_a_list_is_named_by_its_position_not_shown_as_a_dict(
    world: World, api: Callable[..., Any]
) -> None:
    before = AccessRequest.objects.count()
    response = api(world.users["analyst"]).post(
        "/api/v1/access-requests/",
        {"dataset": world.ledger.pk, "duration_days": 7, "columns": ["account", 5, True]},
        format="json",
    )
    assert response.status_code == 400
    err = error(response)
    assert err["code"] == "invalid"
    assert err["field"] == "columns"
    assert err["message"] == "columns[1]: Must be a string."
    assert err["fields"] == {"columns[1]": ["Must be a string."], "columns[2]": ["Must be a string."]}
    assert "{" not in err["message"]
    assert AccessRequest.objects.count() == before


def test_several_invalid_fields_are_each_named(world: World, api: Callable[..., Any]) -> None:
    response = api(world.users["analyst"]).post(
        "/api/v1/access-requests/", {"dataset": world.ledger.pk, "duration_days": 0, "level": "peek"}, format="json"
    )
    assert response.status_code == 400
    fields = error(response)["fields"]
    assert set(fields) == {"duration_days", "level"}
    assert all(isinstance(messages, list) and all(isinstance(m, str) for m in messages) for messages in fields.values())
