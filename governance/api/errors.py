"""One error envelope for every API error (house rule 10).

    {"error": {"code": "conflict", "message": "...", "field": "duration",
               "fields": {"duration": ["..."]}, "details": {...}}}

`code` is stable and machine-readable; `message` is for the person; `fields` lists validation
errors per field; `details` carries extra facts (for a conflict, the object's current state).
Domain errors (`governance.errors`) carry their own status; DRF's own errors keep theirs. Anything
else is a 500 with a generic message (the traceback goes to the log, never to the client).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ..errors import DomainError
from .parsers import BodyTooLarge

log = logging.getLogger(__name__)

_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.ParseError: "parse_error",
    BodyTooLarge: "payload_too_large",
    exceptions.ValidationError: "invalid",
}


def envelope(code: str, message: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    body.update({k: v for k, v in extra.items() if v not in (None, {}, [])})
    return {"error": body}


def _collect(detail: Any, path: str, out: dict[str, list[str]]) -> None:
    """DRF's error detail, nested as the input was, as messages per path: `duration_days`,
    `columns[0]` (an item of a list: DRF reports it as `{0: [...]}`), `address.city` (a nested
    object). The path is what the person sent, so a message can name it in words."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if isinstance(key, int) or (path and str(key).isdigit()):
                _collect(value, f"{path}[{key}]", out)
            else:
                _collect(value, f"{path}.{key}" if path else str(key), out)
    elif isinstance(detail, list):
        for index, item in enumerate(detail):
            if isinstance(item, dict | list):
                if item:  # a list of nested objects has an empty {} for each valid one
                    _collect(item, f"{path}[{index}]", out)
            else:
                out.setdefault(path, []).append(str(item))
    else:
        out.setdefault(path, []).append(str(detail))


def _validation(exc: exceptions.ValidationError) -> Response:
    fields: dict[str, list[str]] = {}
    _collect(exc.detail, "", fields)
    non_field = fields.pop("non_field_errors", []) + fields.pop("", [])
    first_field = next(iter(fields), None)
    if non_field:
        message = "; ".join(non_field)
    elif first_field:
        message = f"{first_field}: {fields[first_field][0]}"
    else:
        message = "Invalid input."
    # `field` is the body's own field (what a form maps to an input: `columns`); `fields` and the
    # message say where inside it (`columns[1]`).
    top = re.split(r"[.\[]", first_field, maxsplit=1)[0] if first_field else None
    body = envelope("invalid", message, field=top, fields=fields)
    return Response(body, status=status.HTTP_400_BAD_REQUEST)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        return Response(
            envelope(exc.code, exc.message, field=exc.field, details=exc.details or None), status=exc.status
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    if isinstance(exc, exceptions.ValidationError):
        return _validation(exc)
    response = drf_exception_handler(exc, context)
    if response is None:
        log.exception("Unhandled error in %s", context.get("view").__class__.__name__, exc_info=exc)
        return Response(envelope("server_error", "Something went wrong on our side."), status=500)
    assert isinstance(exc, exceptions.APIException)
    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), "error")
    message = str(exc.detail) if not isinstance(exc.detail, (list, dict)) else "Request failed."
    extra: dict[str, Any] = {}
    wait = getattr(exc, "wait", None)
    if isinstance(exc, exceptions.Throttled) and wait is not None:
        extra["details"] = {"retry_after_s": int(wait)}
    response.data = envelope(code, message, **extra)
    return response
