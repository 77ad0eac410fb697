"""OpenAPI extensions for drf-spectacular (imported by the API's urls, which registers them)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from .validation import NO_NUL, string_pattern


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "gov_<key id>_<secret>",
            "description": "An API token from `manage.py api_token create`; its scopes limit what it may call.",
        }


class ErrorBodySerializer(serializers.Serializer[Any]):
    code = serializers.CharField(help_text="Stable, machine-readable: invalid, conflict, not_found, ...")
    message = serializers.CharField(help_text="For the person reading it.")
    field = serializers.CharField(required=False, help_text="The input field at fault, when there is one.")
    fields = serializers.DictField(required=False, help_text="Validation messages per field.")  # type: ignore[assignment]  # the envelope key, not DRF's
    details = serializers.DictField(required=False, help_text="Extra facts, e.g. the current state on a conflict.")


class ErrorEnvelopeSerializer(serializers.Serializer[Any]):
    error = ErrorBodySerializer()


# The errors every operation may answer with (docs/api.md, "Errors"); writes may also conflict.
_COMMON_ERRORS = {
    "400": "Invalid input (the envelope names the field).",
    "401": "No credentials, or an invalid, expired or revoked token.",
    "403": "Signed in, but not allowed (or the token lacks the scope).",
    "404": "No such object among those you may see.",
    "429": "Too many calls for this token; retry after details.retry_after_s.",
}
_WRITE_ERRORS = {
    "409": "Conflict with the current state (details.state), or an Idempotency-Key reused.",
    "413": "The request body is longer than the API accepts (API_MAX_BODY_BYTES, 2 MiB by default).",
}


class GovernanceAutoSchema(AutoSchema):
    """drf-spectacular's schema plus what it cannot infer: the error envelope on every operation,
    so that clients (and the fuzzer) know every status the API may answer, and the string rules DRF
    enforces (no NUL character anywhere; no blank value where one is not allowed), so that what the
    schema calls valid is what the API accepts (governance/api/validation.py)."""

    def _map_serializer_field(self, field: Any, direction: Any, bypass_extensions: bool = False) -> Any:
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if direction == "request" and isinstance(schema, dict) and schema.get("type") == "string":
            pattern = string_pattern(field)
            if pattern and "pattern" not in schema and "enum" not in schema:
                schema = {**schema, "pattern": pattern}
        return schema

    def _get_parameters(self) -> list[dict[str, Any]]:
        """Query parameters: a NUL character is refused in any of them (ApiViewMixin)."""
        parameters: list[dict[str, Any]] = super()._get_parameters()
        for parameter in parameters:
            schema = parameter.get("schema", {})
            plain = not {"pattern", "enum", "format"} & set(schema)
            if parameter["in"] == "query" and schema.get("type") == "string" and plain:
                parameter["schema"] = {**schema, "pattern": NO_NUL}
        return parameters

    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)  # type: ignore[arg-type]
        errors = dict(_COMMON_ERRORS)
        if self.method not in ("GET", "HEAD", "OPTIONS"):
            errors.update(_WRITE_ERRORS)
        for code, description in errors.items():
            if code not in responses:
                responses[code] = self._get_response_for_code(
                    OpenApiResponse(ErrorEnvelopeSerializer, description=description), code, direction=direction
                )
        return responses
