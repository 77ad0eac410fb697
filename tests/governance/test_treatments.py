"""Column treatments as policy (issue 20): Restricted + PII is pseudonymised by default and raw adds
the security officer's stage, through the portal (Django test client), the API and the admin; bad
choices are refused on the field, and nothing is saved."""

from __future__ import annotations

import datetime as dt
import importlib
from typing import Any

import pytest
from django.apps import apps
from django.test import Client
from django.urls import reverse

from accounts.models import User
from accounts.tokens import api_token_create
from audit.models import AuditEvent
from governance.models import AccessRequest, Classification, Dataset, TreatmentRule

pytestmark = pytest.mark.django_db


@pytest.fixture
def restricted(restricted_dataset: Dataset) -> Dataset:
    """The Restricted dataset (full_name: person name, ssn: PII), its classification with the
    treatment rules the migration seeds, and only the owner's stage of its own: so that the stage
    a raw column adds shows."""
    importlib.import_module("governance.migrations.0030_treatments").seed_restricted(apps, None)
    Classification.objects.filter(slug="restricted").update(approval_stages=["owner"])
    restricted_dataset.refresh_from_db()
    return restricted_dataset


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def form_url(dataset: Dataset) -> str:
    return f"/portal/datasets/{dataset.pk}/request/"


def ask(client: Client, dataset: Dataset, **fields: Any) -> Any:
    """The portal's request form posted for the PII columns, for five days, with `fields`."""
    payload = {
        "dataset": dataset.pk,
        "level": "read",
        "columns": pii(dataset),
        "duration_days": 5,
        "justification": "payroll audit",
    }
    return client.post(form_url(dataset), {**payload, **fields})


def pii(dataset: Dataset) -> list[int]:
    """The ids of the PII columns (Restricted: they are granted only when named)."""
    return [dataset.columns.get(name="full_name").pk, dataset.columns.get(name="ssn").pk]


def api(user: User) -> Any:
    from rest_framework.test import APIClient

    client = APIClient()
    secret = api_token_create(user=user, scopes="read,request", name="test").secret
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def error(response: Any) -> dict[str, Any]:
    return dict(response.json()["error"])


def test_the_portal_form_preselects_pseudonymised_and_raw_adds_the_officer_stage(
    analyst: User, restricted: Dataset
) -> None:
    client = signed_in(analyst)
    page = client.get(form_url(restricted)).content.decode()
    # One choice per PII column, in the table's order, the policy's default preselected.
    assert 'name="treatment_0"' in page and 'name="treatment_1"' in page
    assert '<option value="pseudonymised" selected>' in page
    assert "raw (needs another approval)" in page
    response = ask(client, restricted, treatment_0="pseudonymised", treatment_1="raw")
    assert response.status_code == 302
    req = AccessRequest.objects.get(requester=analyst)
    assert req.treatments == {"full_name": "pseudonymised", "ssn": "raw"}
    assert req.required_stages == ["owner", "security_officer"]
    assert "Raw ssn needs the security officer stage." in req.policy["notes"]
    assert {t["column"]: t["default"] for t in req.policy["treatments"]} == {
        "full_name": "pseudonymised",
        "ssn": "pseudonymised",
    }
    detail = client.get(f"/portal/requests/{req.pk}/").content.decode()
    assert "Column treatments" in detail and '<span class="pii">ssn</span> raw' in detail


def test_the_portal_default_needs_no_extra_stage(analyst: User, restricted: Dataset) -> None:
    response = ask(signed_in(analyst), restricted)
    assert response.status_code == 302
    req = AccessRequest.objects.get(requester=analyst)
    assert req.treatments == {"full_name": "pseudonymised", "ssn": "pseudonymised"}
    assert req.required_stages == ["owner"]


def test_the_portal_refuses_a_treatment_the_policy_does_not_offer_on_the_field(
    analyst: User, restricted: Dataset
) -> None:
    TreatmentRule.objects.filter(classification__slug="restricted", treatment="masked").delete()
    response = ask(signed_in(analyst), restricted, treatment_1="masked")
    assert response.status_code == 200
    assert "treatment_1" in response.context["form"].errors
    assert not AccessRequest.objects.exists()


def test_the_api_takes_treatments_per_column_and_refuses_bad_ones_on_the_field(
    analyst: User, restricted: Dataset
) -> None:
    client = api(analyst)
    base = {
        "dataset": restricted.pk,
        "columns": ["full_name", "ssn"],
        "duration_days": 5,
        "justification": "payroll audit",
    }
    for treatments, why in (
        ({"ssn": "bogus"}, "ssn"),  # not a treatment
        ({"department": "masked"}, "not a PII column"),  # not a PII column
        ({"ssn": "raw", "full_name": "masked"}, None),  # fine: see below
    ):
        response = client.post("/api/v1/access-requests/", {**base, "treatments": treatments}, format="json")
        if why is None:
            break
        assert response.status_code == 400, response.content
        err = error(response)
        assert err["field"] == "treatments" and why in str(err), err
    assert not AccessRequest.objects.filter(treatments__ssn="bogus").exists()
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["treatments"] == {"full_name": "masked", "ssn": "raw"}
    assert AccessRequest.objects.get(pk=body["id"]).required_stages == ["owner", "security_officer"]
    refused = client.post(
        "/api/v1/access-requests/", {**base, "level": "write", "treatments": {"ssn": "nulled"}}, format="json"
    )
    assert refused.status_code == 400 and error(refused)["field"] == "treatments"


def test_the_admin_edits_treatment_rules_inline_through_the_service(
    superuser: User, classifications: dict[str, Classification]
) -> None:
    c = classifications["confidential"]
    form = {
        "name": "Confidential",
        "description": c.description,
        "approval_stages": ["owner"],
        "min_duration_0": "1",
        "min_duration_1": "hours",
        "max_duration_0": "90",
        "max_duration_1": "days",
        "allow_pii_access": "on",
        "treatment_rules-TOTAL_FORMS": "2",
        "treatment_rules-INITIAL_FORMS": "0",
        "treatment_rules-0-tag": "email",
        "treatment_rules-0-treatment": "masked",
        "treatment_rules-0-is_default": "on",
        "treatment_rules-1-tag": "email",
        "treatment_rules-1-treatment": "raw",
        "treatment_rules-1-stage": "security_officer",
    }
    client = signed_in(superuser)
    url = reverse("admin:governance_classification_change", args=[c.pk])
    assert client.post(url, form).status_code == 302
    rules = {(r.tag, r.treatment, r.is_default, r.stage) for r in TreatmentRule.objects.filter(classification=c)}
    assert rules == {("email", "masked", True, ""), ("email", "raw", False, "security_officer")}
    event = AuditEvent.objects.get(action="classification.treatments_updated")
    assert event.actor_id == superuser.pk
    # Two defaults for one kind: refused with a message, the rules as they were.
    twice = {**form, "treatment_rules-1-is_default": "on"}
    response = client.post(url, twice, follow=True)
    assert "email has two default treatments." in [str(m) for m in response.context["messages"]]
    assert TreatmentRule.objects.filter(classification=c).count() == 2


def test_the_admin_workbench_submits_treatments(superuser: User, analyst: User, restricted: Dataset) -> None:
    response = signed_in(analyst).post(
        reverse("admin:governance_accessrequest_submit"),
        {
            "dataset": restricted.pk,
            "level": "read",
            "duration_days": "14",
            "justification": "Board attrition pack",
            "columns": pii(restricted),
            "treatments": "ssn=raw",
        },
    )
    assert response.status_code in (200, 302)
    req = AccessRequest.objects.get(requester=analyst)
    assert req.treatments == {"full_name": "pseudonymised", "ssn": "raw"}
    assert req.required_stages == ["owner", "security_officer"]


def test_the_pseudonym_key_is_made_once_encrypted_and_rewrapped_by_key_rotation(
    analyst: User, restricted: Dataset, settings: Any
) -> None:
    from governance import crypto
    from governance.models import GovernedSchema
    from governance.services.keys import encryption_keys_rotate

    old_key, new_key = crypto.generate_key(), crypto.generate_key()
    settings.FIELD_ENCRYPTION_KEYS = [old_key]
    for n in range(2):  # two treated requests: one key for the source
        api(analyst).post(
            "/api/v1/access-requests/",
            {"dataset": restricted.pk, "columns": ["ssn"], "duration_days": 5 + n, "justification": "x"},
            format="json",
        )
        AccessRequest.objects.update(state="cancelled")
    row = GovernedSchema.objects.get(source=restricted.source)
    key = crypto.decrypt(row.pseudonym_key_encrypted)
    assert len(bytes.fromhex(key)) == 32 and key not in row.pseudonym_key_encrypted
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]
    assert encryption_keys_rotate().pseudonym_keys == 1
    settings.FIELD_ENCRYPTION_KEYS = [new_key]
    row.refresh_from_db()
    assert crypto.decrypt(row.pseudonym_key_encrypted) == key  # re-wrapped, the same key: the same tokens


def test_approval_stops_when_the_rules_no_longer_allow_the_chosen_treatment(
    analyst: User, owner: User, restricted: Dataset
) -> None:
    from governance.errors import ConflictError
    from governance.services.requests import access_request_approve, access_request_submit

    req = access_request_submit(
        requester=analyst,
        dataset=restricted,
        columns=list(restricted.columns.filter(name="ssn")),
        justification="payroll audit",
        duration=dt.timedelta(days=5),
        treatments={"ssn": "masked"},
    )
    assert req.required_stages == ["owner"]
    TreatmentRule.objects.filter(classification__slug="restricted", treatment="masked").update(stage="security_officer")
    with pytest.raises(ConflictError, match="security officer"):
        access_request_approve(access_request=req, approver=owner)
    req.refresh_from_db()
    assert req.state == "pending" and not req.approvals.exists()


def test_the_form_preview_shows_the_treatments_and_the_stage_raw_adds(analyst: User, restricted: Dataset) -> None:
    client = signed_in(analyst)
    url = f"/portal/datasets/{restricted.pk}/request/preview/"
    payload = {"dataset": restricted.pk, "level": "read", "columns": pii(restricted), "duration_days": 5}
    default = client.post(url, payload).content.decode()
    assert '<span class="pii">ssn</span> pseudonymised' in default and "Security officer" not in default
    raw = client.post(url, {**payload, "treatment_1": "raw"}).content.decode()
    assert '<span class="pii">ssn</span> raw' in raw and "Security officer" in raw
    assert not AccessRequest.objects.exists()


def test_a_source_that_cannot_enforce_treatments_offers_raw_only(
    analyst: User, classifications: dict[str, Classification]
) -> None:
    """An S3 prefix is read whole: a pseudonymised choice there would be a promise nobody keeps."""
    from governance.errors import PolicyViolation
    from governance.models import Column, ColumnTag, DataSource, TagStatus
    from governance.services.requests import access_request_submit

    importlib.import_module("governance.migrations.0030_treatments").seed_restricted(apps, None)
    Classification.objects.filter(slug="restricted").update(approval_stages=["owner"])
    s3 = DataSource.objects.create(name="lake", kind="aws", provisioning_enabled=False)
    ds = Dataset.objects.create(
        source=s3, schema="lake-bucket", name="hr/", classification=classifications["restricted"]
    )
    col = Column.objects.create(dataset=ds, name="ssn", data_type="string", ordinal=1)
    ColumnTag.objects.create(column=col, tag="ssn", status=TagStatus.CONFIRMED)
    ask: dict[str, Any] = {
        "requester": analyst,
        "dataset": ds,
        "columns": [col],
        "justification": "x",
        "duration": dt.timedelta(days=1),
    }
    with pytest.raises(PolicyViolation) as refused:
        access_request_submit(**ask, treatments={"ssn": "pseudonymised"})
    assert refused.value.field == "treatments" and "allowed: raw" in refused.value.message
    req = access_request_submit(**ask)
    assert req.treatments == {"ssn": "raw"} and req.required_stages == ["owner", "security_officer"]


@pytest.mark.django_db
def test_treated_columns_and_row_filters_are_not_combined(restricted: Dataset, analyst: User, owner: User) -> None:
    """A governed view reads the table as its owner role: under row-level security it would see no
    row, so the two are refused together, from either side."""
    from governance.errors import ConflictError, InvalidInput
    from governance.services.requests import access_request_cancel, access_request_submit
    from governance.services.row_filters import row_filter_define

    ssn = list(restricted.columns.filter(name="ssn"))
    pending = access_request_submit(
        requester=analyst, dataset=restricted, justification="x", duration=dt.timedelta(days=1),
        columns=ssn, treatments={"ssn": "masked"},
    )  # fmt: skip
    assert pending.treatments.get("ssn") == "masked"
    with pytest.raises(ConflictError, match="cannot be combined"):
        row_filter_define(dataset=restricted, name="mine", expression="full_name = 'Ada'", actor=owner)
    access_request_cancel(access_request=pending, actor=analyst)
    row_filter_define(dataset=restricted, name="mine", expression="full_name = 'Ada'", actor=owner)
    with pytest.raises(InvalidInput, match="cannot be combined") as refused:
        access_request_submit(
            requester=analyst, dataset=restricted, justification="x", duration=dt.timedelta(days=1),
            columns=ssn, treatments={"ssn": "masked"},
        )  # fmt: skip
    assert refused.value.field == "treatments"
