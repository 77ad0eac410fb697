"""`rewrap_secrets` moves the subjects app's encrypted fields (a request's identifiers, an access
export) under the current key: after the old key is retired, a preview still decrypts."""

from __future__ import annotations

import datetime as dt
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from audit.models import AuditEvent
from governance import crypto
from subjects.models import RequestState, SubjectExport, SubjectRequest
from subjects.services.requests import identifiers_of, subject_request_create, subject_request_preview

from .conftest import SUBJECT

pytestmark = pytest.mark.django_db


def test_rewrap_secrets_moves_identifiers_and_exports_and_a_preview_still_decrypts(
    privacy: tuple[Any, Any], settings: Any
) -> None:
    creator, _approver = privacy
    old_key, new_key = crypto.generate_key(), crypto.generate_key()
    settings.FIELD_ENCRYPTION_KEYS = [old_key]
    request = subject_request_create(actor=creator, kind="access", identifiers={"email": SUBJECT})
    SubjectExport.objects.create(
        request=request,
        payload_encrypted=crypto.encrypt("UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="),
        expires_at=timezone.now() + dt.timedelta(days=1),
    )
    stored = SubjectRequest.objects.get(pk=request.pk).identifiers_encrypted

    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]
    out = StringIO()
    call_command("rewrap_secrets", stdout=out)
    assert "subject_identifiers: 1." in out.getvalue() and "subject_exports: 1." in out.getvalue()
    event = AuditEvent.objects.filter(action="encryption_keys.rotated").latest("pk")
    assert (event.metadata["subject_identifiers"], event.metadata["subject_exports"]) == (1, 1)

    settings.FIELD_ENCRYPTION_KEYS = [new_key]  # the old key retired
    request.refresh_from_db()
    assert request.identifiers_encrypted != stored
    assert identifiers_of(request) == {"email": SUBJECT}
    assert subject_request_preview(actor=creator, request=request).state == RequestState.PREVIEWED
    held = SubjectExport.objects.get(request=request)
    assert crypto.decrypt(held.payload_encrypted) == "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="
