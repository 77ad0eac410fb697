"""Policy as code over the API, for a CI pipeline: export and plan with a `policy:read` token, apply
with `policy:apply` (a token lacking it: 403, nothing changed, the refusal audited), audited as
gitops with the caller; a refused document is a 400 naming its path; an object managed in code is
refused by the other routes (409) and its admin page says where it is managed."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import yaml
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from governance.models import Classification, Role
from governance.services.roles import role_create

pytestmark = pytest.mark.django_db


def test_export_plan_apply_with_scoped_tokens(classifications: Any, gov_admin: Any, analyst: Any, api: Any) -> None:
    reader = api(gov_admin, "policy:read")
    exported = reader.get("/api/v1/policy/?section=classifications")
    assert exported.status_code == 200
    document = exported.json()
    assert [c["slug"] for c in document["classifications"]] == ["public", "internal", "confidential", "restricted"]
    as_yaml = reader.get("/api/v1/policy/?section=classifications", HTTP_ACCEPT="application/yaml")
    assert yaml.safe_load(as_yaml.content) == document

    document["classifications"][2]["max_duration"] = "14 days"
    planned = reader.post("/api/v1/policy/plan/", document, format="json")
    assert planned.status_code == 200, planned.content
    assert planned.json()["text"] == (
        "classifications\n  ~ confidential: max_duration 90 days → 14 days\n"
        "0 to create, 1 to change, 0 to remove. 4 objects to mark as managed in code.\n"
    )

    # Without the policy:apply scope: 403, and nothing changed.
    refused = reader.post("/api/v1/policy/apply/", document, format="json")
    assert refused.status_code == 403
    assert "lacks the 'policy:apply' scope" in refused.json()["error"]["message"]
    assert Classification.objects.get(slug="confidential").max_duration == dt.timedelta(days=90)
    assert AuditEvent.objects.filter(action="api_token.scope_denied", metadata__needed="policy:apply").count() == 1
    # Nor does an `admin` token reach these routes.
    assert api(gov_admin, "read,admin").post("/api/v1/policy/apply/", document, format="json").status_code == 403

    applier = api(gov_admin, "policy:apply")
    applied = applier.post("/api/v1/policy/apply/", yaml.safe_dump(document), content_type="application/yaml")
    assert applied.status_code == 200, applied.content
    assert applied.json()["summary"] == "0 created, 1 changed, 0 removed. 4 objects marked as managed in code."
    assert Classification.objects.get(slug="confidential").max_duration == dt.timedelta(days=14)
    event = AuditEvent.objects.get(action="classification.updated")
    assert (event.source, event.actor_id, event.metadata["door"]) == ("gitops", gov_admin.pk, "api")
    again = applier.post("/api/v1/policy/apply/", document, format="json")
    assert (again.status_code, again.json()["changes"], again.json()["unmanaged"]) == (200, 0, [])

    # A person who is no governance admin may not apply, whatever their token.
    not_admin = api(analyst, "policy:read,policy:apply")
    assert not_admin.get("/api/v1/policy/").status_code == 403
    assert not_admin.post("/api/v1/policy/apply/", document, format="json").status_code == 403


def test_a_refused_document_names_its_path(classifications: Any, gov_admin: Any, api: Any) -> None:
    client = api(gov_admin, "policy:read,policy:apply")
    bad = {"version": 1, "classifications": [{"slug": "confidential", "max_duration": "a fortnight"}]}
    for route in ("plan", "apply"):
        response = client.post(f"/api/v1/policy/{route}/", bad, format="json")
        assert response.status_code == 400
        body = response.json()["error"]
        assert body["field"] == "classifications[0].max_duration"
        assert body["message"].startswith("classifications[0].max_duration: 'a fortnight' is not a duration")
    grants = {"version": 1, "standing_grants": [{"role": "nobody", "dataset": "x:a.b", "level": "read"}]}
    response = client.post("/api/v1/policy/plan/", grants, format="json")
    assert response.json()["error"]["message"] == "standing_grants[0].role: there is no role 'nobody'."
    assert Classification.objects.get(slug="confidential").max_duration == dt.timedelta(days=90)


def test_a_role_managed_in_code_is_refused_elsewhere_and_the_admin_says_so(
    classifications: Any, gov_admin: Any, analyst: Any, api: Any
) -> None:
    role_create(actor=gov_admin, name="Finance readers")
    document = {
        "version": 1,
        "roles": [{"name": "Finance readers", "description": "Reads the ledger", "members": ["analyst"]}],
    }
    applied = api(gov_admin, "policy:apply").post("/api/v1/policy/apply/", document, format="json")
    assert applied.status_code == 200, applied.content
    role = Role.objects.get(name="Finance readers")
    assert role.description == "Reads the ledger"
    assert list(role.memberships.filter(removed_at__isnull=True).values_list("user__username", flat=True)) == [
        "analyst"
    ]

    client = Client()
    client.force_login(gov_admin)
    page = client.get(reverse("admin:governance_role_change", args=[role.pk]))
    assert "Role Finance readers is managed in code: policy document sha256:" in page.content.decode()
    response = client.post(
        reverse("admin:governance_role_change", args=[role.pk]),
        {"name": "Finance readers", "slug": role.slug, "kind": "human", "description": "hand edit", "owner": ""},
        follow=True,
    )
    assert "Role Finance readers is managed in code" in response.content.decode()
    role.refresh_from_db()
    assert role.description == "Reads the ledger"
