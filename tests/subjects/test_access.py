"""Access (portability): a ZIP with JSON and CSV per dataset of exactly the subject's rows, encrypted
at rest, downloaded once by the officer who created the request, then gone; deadlines and their
one extension."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import zipfile
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from governance.errors import ConflictError, InvalidInput, NotFound, NotPermitted
from subjects.models import RequestState, SubjectExport, SubjectRequest
from subjects.selectors import requests_due, requests_overdue
from subjects.services.execution import subject_export_download, subject_exports_purge
from subjects.services.requests import (
    subject_request_approve,
    subject_request_create,
    subject_request_execute,
    subject_request_extend,
    subject_request_preview,
)

from .conftest import CRM_TABLES, HOSTILE, SHOP_TABLES, SUBJECT, checksum

pytestmark = pytest.mark.django_db(transaction=True)


def approved_access(creator: Any, approver: Any) -> Any:
    request = subject_request_create(actor=creator, kind="access", identifiers={"email": SUBJECT})
    subject_request_preview(actor=creator, request=request)
    return subject_request_approve(actor=approver, request=request)


def test_an_access_request_exports_exactly_the_subjects_rows(
    governed: tuple[Any, Any], privacy: tuple[Any, Any]
) -> None:
    shop, crm = governed
    creator, approver = privacy
    before = {t: checksum(shop.database, t) for t in SHOP_TABLES} | {t: checksum(crm.database, t) for t in CRM_TABLES}
    request = subject_request_execute(actor=creator, request=approved_access(creator, approver))
    assert request.state == RequestState.DONE, request.error

    held = SubjectExport.objects.get(request=request)
    assert SUBJECT not in held.payload_encrypted and "Lovelace" not in held.payload_encrypted  # encrypted at rest
    with pytest.raises(NotPermitted, match="Only the officer who created the request"):
        subject_export_download(actor=approver, request=request)
    payload = subject_export_download(actor=creator, request=request)

    archive = zipfile.ZipFile(io.BytesIO(payload))
    manifest = {(m["schema"], m["table"]): m for m in json.loads(archive.read("manifest.json"))}
    found = {}
    for key, entry in manifest.items():
        json_name, csv_name = entry["files"]
        records = json.loads(archive.read(json_name))
        rows = list(csv.DictReader(io.StringIO(archive.read(csv_name).decode())))
        assert len(rows) == len(records) == entry["rows"]
        id_column = "line_id" if key == ("crm", HOSTILE) else "id"
        found[key] = sorted(r[id_column] for r in records)
        assert sorted(int(r[id_column]) for r in rows) == found[key]
    assert found == {
        ("shop", "customers"): [1],
        ("shop", "orders"): [10, 11],
        ("shop", "events"): [100, 101],
        ("crm", "customers"): [1],
        ("crm", "orders"): [20],
        ("crm", HOSTILE): [200, 201],
        ("crm", "events"): [300, 301],
    }
    customer = json.loads(archive.read(manifest[("shop", "customers")]["files"][0]))[0]
    assert customer == {"id": 1, "email": SUBJECT, "full_name": "Ada Lovelace", "country": "UK"}
    # An access request reads: every source is exactly as it was.
    after = {t: checksum(shop.database, t) for t in SHOP_TABLES} | {t: checksum(crm.database, t) for t in CRM_TABLES}
    assert after == before

    # Downloaded once, then deleted.
    assert not SubjectExport.objects.exists()
    with pytest.raises(ConflictError, match="downloaded already"):
        subject_export_download(actor=creator, request=request)
    event = AuditEvent.objects.get(action="subject_request.export_downloaded")
    assert (event.actor, event.metadata) == (creator, {"size": len(payload)})


def test_an_export_expires_unread(governed: tuple[Any, Any], privacy: tuple[Any, Any], settings: Any) -> None:
    creator, approver = privacy
    request = subject_request_execute(actor=creator, request=approved_access(creator, approver))
    SubjectExport.objects.filter(request=request).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert subject_exports_purge() == 1
    with pytest.raises(NotFound, match="no export"):
        subject_export_download(actor=creator, request=request)


def test_deadlines_are_thirty_days_extendable_once_and_listed_when_due(
    db: Any, privacy: tuple[Any, Any], auditor: Any, analyst: Any
) -> None:
    creator, _ = privacy
    request = subject_request_create(actor=creator, kind="rectification", identifiers={"customer_id": "42"})
    assert request.due_at - request.created_at == dt.timedelta(days=30)
    now = timezone.now()
    assert list(requests_due(creator, now=now)) == []
    assert list(requests_due(creator, now=now + dt.timedelta(days=24))) == [request]
    assert list(requests_overdue(auditor, now=now + dt.timedelta(days=31))) == [request]
    assert list(requests_due(analyst, now=now + dt.timedelta(days=24))) == []  # not an officer: sees none

    with pytest.raises(InvalidInput, match="Say why") as bad:
        subject_request_extend(actor=creator, request=request, reason=" ")
    assert bad.value.field == "reason"
    request = subject_request_extend(actor=creator, request=request, reason="Complex: 14 systems")
    assert request.due_at - request.created_at == dt.timedelta(days=90)
    with pytest.raises(ConflictError, match="extended once already"):
        subject_request_extend(actor=creator, request=request, reason="again")
    event = AuditEvent.objects.get(action="subject_request.extended")
    assert event.reason == "Complex: 14 systems"
    assert "42" not in json.dumps(event.metadata)


def test_the_dashboard_shows_requests_due_to_those_who_see_them(
    db: Any, privacy: tuple[Any, Any], owner: Any, client: Any
) -> None:
    creator, _ = privacy
    soon = subject_request_create(actor=creator, kind="erasure", identifiers={"email": SUBJECT}, reference="CASE-9")
    late = subject_request_create(actor=creator, kind="access", identifiers={"email": "b@example.com"})
    SubjectRequest.objects.filter(pk=soon.pk).update(due_at=timezone.now() + dt.timedelta(days=3))
    SubjectRequest.objects.filter(pk=late.pk).update(due_at=timezone.now() - dt.timedelta(days=1))

    client.force_login(creator)
    page = client.get("/portal/dashboard/").content.decode()
    assert "Data-subject requests due within 7 days" in page
    assert f'<a href="/portal/subjects/{soon.pk}/">#{soon.pk}</a> Erasure' in page and "CASE-9" in page
    assert f'<a href="/portal/subjects/{late.pk}/">#{late.pk}</a> Access / portability' in page and "overdue" in page
    assert SUBJECT not in page
    client.force_login(owner)
    assert "Data-subject requests" not in client.get("/portal/dashboard/").content.decode()
