"""``Idempotency-Key`` on creates and decisions: a retry gets the original answer, never a second
effect.

A call with the header runs inside one transaction with the record of its key: the record is
inserted first (a concurrent call with the same key waits on the unique index, then finds it), the
view runs (its services nest as savepoints; a refused call's audit event stays, as without the
key), and the response is stored with the record. A replay (same user, key, method, path and body)
returns the stored status and body with ``Idempotent-Replayed: true``; the same key with a
different call is a 409. A 5xx is not stored (the transaction rolls back): a retry runs again.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from ..errors import ConflictError, InvalidInput
from ..models import IdempotencyRecord

HEADER = "Idempotency-Key"


def _fingerprint(request: Request) -> str:
    """What identifies the call: method, path and parsed body, as an HMAC keyed with SECRET_KEY (a
    body may carry a data source password: a plain hash next to the stored answer could be brute-
    forced offline). A body that does not parse raises here, as it would without the header."""
    body: Any = request.data  # a ParseError propagates: a 400, never a call with an empty body
    canonical = json.dumps(body, sort_keys=True, default=str)
    message = f"{request.method} {request.path}\n{canonical}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()


def _key(request: Request) -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 255 or not key.isprintable():
        raise InvalidInput(f"{HEADER} must be 1 to 255 printable characters.", field=HEADER)
    return key


def _replay(record: IdempotencyRecord, fingerprint: str) -> Response:
    if record.fingerprint != fingerprint:
        raise ConflictError(
            f"This {HEADER} was already used for a different call; use a new key for a new call.",
            state="key_reused",
        )
    headers = {"Idempotent-Replayed": "true"}
    if record.location:
        headers["Location"] = record.location
    return Response(record.body, status=record.status_code, headers=headers)


def idempotent(method: Callable[..., Response]) -> Callable[..., Response]:
    """Decorate a viewset action (create, approve, deny, cancel, revoke, retry...)."""

    @functools.wraps(method)
    def wrapper(view: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = _key(request)
        if key is None:
            return method(view, request, *args, **kwargs)
        fingerprint = _fingerprint(request)
        user_id: int = request.user.pk or 0  # authenticated: the permission checks ran before the action
        fresh_after = timezone.now() - dt.timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS)
        with transaction.atomic():
            IdempotencyRecord.objects.filter(user_id=user_id, key=key, created_at__lt=fresh_after).delete()
            existing = IdempotencyRecord.objects.filter(user_id=user_id, key=key).first()
            if existing is not None:
                return _replay(existing, fingerprint)
            try:
                with transaction.atomic():
                    # Claims the key: a concurrent call with the same key blocks here until this
                    # transaction ends, then fails the unique index and replays what this one stored.
                    record = IdempotencyRecord.objects.create(
                        user_id=user_id, key=key, fingerprint=fingerprint, status_code=0
                    )
            except IntegrityError:
                return _replay(IdempotencyRecord.objects.get(user_id=user_id, key=key), fingerprint)
            try:
                response = method(view, request, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - turned into the API's response, then stored
                response = view.handle_exception(exc)
            if response.status_code >= 500:
                transaction.set_rollback(True)
                return response
            record.status_code = response.status_code
            record.body = response.data
            record.location = response.headers.get("Location", "")
            record.save(update_fields=["status_code", "body", "location"])
        return response

    return wrapper


def idempotency_records_purge() -> int:
    """Delete records past IDEMPOTENCY_TTL_HOURS (beat). Not audited: they are a cache of answers."""
    cutoff = timezone.now() - dt.timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted
