"""The self-service form (SUBJECTS_SELF_SERVICE, off by default): a signed-in portal user files a
request about themselves (docs/subjects.md#self-service).

The subject's identifiers are never typed: they are taken from the user's own account, so that
nobody can ask for somebody else's data. Only the account's e-mail address is used (set by the
identity provider, SCIM or an administrator; the portal has no page where a user changes it). The
portal username is not taken as a `user_id`: a `user_id` identifier is a key of a target's own user
table, and a login name that happened to equal another person's key there would find that person.

The request is an ordinary draft, marked `self_service`, created by the user; the privacy officers
preview, approve and execute it as any other (docs/subjects.md#who).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from governance import crypto
from governance.errors import InvalidInput, NotFound, NotPermitted
from governance.services.common import refusal_recorded

from ..models import IdentifierKind, RequestKind, SubjectRequest
from .requests import MAX_VALUE

MAX_MESSAGE = 2000


def self_service_enabled() -> bool:
    return bool(getattr(settings, "SUBJECTS_SELF_SERVICE", False))


def own_identifiers(user: Any) -> dict[str, str]:
    """The identifiers a user's own request is made with: their account's e-mail address."""
    email = (getattr(user, "email", "") or "").strip()
    if not email or len(email) > MAX_VALUE:
        raise InvalidInput(
            "Your account has no e-mail address, so the portal cannot find your data: ask a privacy officer.",
            field="kind",
        )
    try:
        validate_email(email)
    except ValidationError:
        raise InvalidInput(
            "Your account's e-mail address is not valid, so the portal cannot find your data: ask a privacy officer.",
            field="kind",
        ) from None
    return {IdentifierKind.EMAIL: email}


def subject_request_file(*, actor: Any, kind: str, message: str = "") -> SubjectRequest:
    """A signed-in user asks about their own data; the request waits in draft for the officers."""
    with refusal_recorded(
        action="subject_request.file", actor=actor, metadata={"kind": str(kind)[:20], "self_service": True}
    ):
        if not self_service_enabled():
            raise NotFound("The self-service form is not enabled.")
        if actor is None or not getattr(actor, "is_active", False) or not getattr(actor, "is_authenticated", False):
            raise NotPermitted("Sign in to file a request about your data.")
        if kind not in RequestKind.values:
            raise InvalidInput(f"Choose one of {', '.join(RequestKind.values)}.", field="kind")
        message = (message or "").strip()
        if len(message) > MAX_MESSAGE:
            raise InvalidInput(f"The message is longer than {MAX_MESSAGE} characters.", field="message")
        identifiers = own_identifiers(actor)
        now = timezone.now()
        with transaction.atomic():
            request = SubjectRequest.objects.create(
                kind=kind,
                identifiers_encrypted=crypto.encrypt(json.dumps(identifiers, sort_keys=True)),
                identifier_kinds=sorted(identifiers),
                self_service=True,
                message_encrypted=crypto.encrypt(message) if message else "",
                created_by=actor,
                created_at=now,
                due_at=now + dt.timedelta(days=settings.SUBJECTS_DEADLINE_DAYS),
            )
            audit.record(
                action="subject_request.created",
                actor=actor,
                target=request,
                metadata={
                    "kind": kind,
                    "identifier_kinds": sorted(identifiers),
                    "due_at": request.due_at.isoformat(),
                    "self_service": True,
                },
            )
    return request


def message_of(request: SubjectRequest) -> str:
    """The subject's message, decrypted for the officers' page only (it may hold personal data)."""
    return crypto.decrypt(request.message_encrypted) if request.message_encrypted else ""
