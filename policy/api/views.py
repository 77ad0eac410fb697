"""`/api/v1/policy/`: the portal's policy as code for a CI pipeline (docs/policy-as-code.md#api).

GET exports the document (YAML with `Accept: application/yaml`, JSON otherwise); `plan/` answers
what a document would change, changing nothing; `apply/` makes the changes as the caller, in one
transaction, audited with source `gitops`. A token needs `policy:read` for the export and the plan
and `policy:apply` to apply (no other scope reaches these routes); the caller must be a governance
admin (officers and auditors, who see everything, may export and plan). A document is a JSON body,
or YAML with `Content-Type: application/yaml`; a refused one is a 400 naming the path of its first
problem, every problem in `details.errors`; a change to an object managed in code through any other
route is a 409 naming its document.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import renderers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import TokenScope
from accounts.roles import is_governance_admin, sees_everything
from governance.api.parsers import JSONParser
from governance.api.views import ApiViewMixin
from governance.errors import InvalidInput, NotPermitted
from quality.api.as_code import YAML, DocumentSchema, YAMLParser

from ..document import openapi_schema, schema, to_yaml
from ..export import SECTIONS, export_document
from ..plans import plan
from ..services import policy_apply


class YAMLRenderer(renderers.BaseRenderer):
    media_type = YAML
    format = "yaml"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return b"" if data is None else to_yaml(data).encode()


DOCUMENT = {"application/json": openapi_schema(), YAML: {"type": "string", "description": "The same, as YAML."}}
PLAN = {
    "type": "object",
    "description": "What the document changes: per section, the objects created, changed ({field: [before, after]}) "
    "and removed, the grants provisioned and revoked, the objects marked as managed in code.",
    "properties": {
        "version": {"type": "integer"},
        "document": {"type": "string", "description": "sha256 of the document (its audit events carry it)."},
        "changes": {"type": "integer"},
        "grants": {"type": "object", "additionalProperties": {"type": "integer"}},
        "sections": {"type": "object", "additionalProperties": True},
        "unmanaged": {"type": "array", "items": {"type": "string"}},
        "quality": {"type": "object", "additionalProperties": True},
        "summary": {"type": "string"},
        "text": {"type": "string", "description": "The plan as `manage.py policy plan` prints it."},
    },
    "required": ["version", "document", "changes", "grants", "sections", "unmanaged", "summary", "text"],
}


def _may_read(user: Any) -> None:
    if not (is_governance_admin(user) or sees_everything(user)):
        raise NotPermitted("The policy document is for governance admins, security officers and auditors.")


@extend_schema(tags=["policy"])
class PolicyViewSet(ApiViewMixin, viewsets.GenericViewSet):
    """The portal's policy as code: export, plan, apply (docs/policy-as-code.md)."""

    parser_classes = [JSONParser, YAMLParser]
    renderer_classes = [renderers.JSONRenderer, YAMLRenderer]
    scopes = {
        "list": TokenScope.POLICY_READ,
        "plan": TokenScope.POLICY_READ,
        "apply": TokenScope.POLICY_APPLY,
        "json_schema": TokenScope.POLICY_READ,
    }
    pagination_class = None
    schema = DocumentSchema()
    filter_backends: list[Any] = []

    @extend_schema(
        parameters=[
            OpenApiParameter("section", str, many=True, enum=list(SECTIONS), description="Only these sections.")
        ],
        responses={(200, "application/json"): openapi_schema(), (200, YAML): OpenApiTypes.STR},
    )
    def list(self, request: Request) -> Response:
        """The document: every section, or the `section`s named."""
        _may_read(request.user)
        sections = request.query_params.getlist("section") or list(SECTIONS)
        unknown = [s for s in sections if s not in SECTIONS]
        if unknown:
            raise InvalidInput(f"section: {unknown[0]!r} is not one of {', '.join(SECTIONS)}.", field="section")
        return Response(export_document(tuple(sections)))

    @extend_schema(request=DOCUMENT, responses={200: PLAN})
    @action(detail=False, methods=["post"])
    def plan(self, request: Request) -> Response:
        """What applying the document would change; nothing is changed."""
        _may_read(request.user)
        planned = plan(request.data, request.user)
        return Response({**planned.as_dict(), "summary": planned.summary(), "text": planned.render()})

    @extend_schema(request=DOCUMENT, responses={200: PLAN})
    @action(detail=False, methods=["post"])
    def apply(self, request: Request) -> Response:
        """Apply the document as the caller, in one transaction: what was changed (nothing the second time)."""
        planned = plan(request.data, request.user)
        done = policy_apply(planned=planned, actor=request.user, origin="api")
        return Response({**done.as_dict(), "summary": done.summary(applied=True), "text": done.render(applied=True)})

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["get"], url_path="schema")
    def json_schema(self, request: Request) -> Response:
        """The document's JSON Schema (docs/schemas/policy-as-code.schema.json)."""
        return Response(schema())
