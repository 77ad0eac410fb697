"""`/api/v1/quality/as-code/`: checks as code over the API (docs/quality.md#checks-as-code).

GET exports the named datasets' checks (YAML with `Accept: application/yaml`, JSON otherwise); `plan/`
answers what a document would change, changing nothing (the `read` scope; anyone but auditors, who
POST nothing: check definitions are catalog metadata); `apply/` makes the changes as the caller, with
the `approve` scope, when the caller may define the checks of every dataset the document names. A
document is a JSON body, or YAML with `Content-Type: application/yaml`; a refused one is a 400
naming the path of the first problem (`datasets[0].checks[2].threshold`), every problem in
`details.errors`."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import parsers, renderers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import TokenScope
from governance.api.parsers import JSONParser, max_body_bytes, too_large
from governance.api.schema import GovernanceAutoSchema
from governance.api.views import ApiViewMixin
from governance.selectors.catalog import datasets_visible_to

from .. import as_code
from ..selectors import datasets_with_checks

YAML = "application/yaml"


class YAMLParser(parsers.BaseParser):
    """A YAML body, read like the API's JSON (at most API_MAX_BODY_BYTES: 413), then as_code's safe
    loader (no aliases, no deep nesting, JSON values only: 400 otherwise)."""

    media_type = YAML

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = max_body_bytes()
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise too_large(limit)
        return as_code.load_yaml(raw)


class YAMLRenderer(renderers.BaseRenderer):
    media_type = YAML
    format = "yaml"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return b"" if data is None else as_code.to_yaml(data).encode()


class DocumentSchema(GovernanceAutoSchema):
    """The export (the `list` route) answers one document, not a list of them."""

    def _is_list_view(self, serializer: Any = None) -> bool:
        return False


DOCUMENT = {"application/json": as_code.openapi_schema(), YAML: {"type": "string", "description": "The same, as YAML."}}
PLAN = {
    "type": "object",
    "description": "What the document changes: per dataset, the checks created, changed ({field: [before, after]}) "
    "and removed, and the integrity watch set.",
    "properties": {
        "version": {"type": "integer"},
        "document": {"type": "string", "description": "sha256 of the document (its audit events carry it)."},
        "changes": {"type": "integer"},
        "datasets": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
        "summary": {"type": "string"},
        "refused": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Datasets named whose checks the caller may not change: apply would be a 403.",
        },
    },
    "required": ["version", "document", "changes", "datasets", "summary", "refused"],
}


@extend_schema(tags=["quality"])
class AsCodeViewSet(ApiViewMixin, viewsets.GenericViewSet):
    """Data quality checks as code: export, plan, apply (docs/quality.md#checks-as-code)."""

    parser_classes = [JSONParser, YAMLParser]
    renderer_classes = [renderers.JSONRenderer, YAMLRenderer]
    scopes = {"plan": TokenScope.READ, "apply": TokenScope.APPROVE}
    pagination_class = None
    schema = DocumentSchema()
    filter_backends: list[Any] = []

    @extend_schema(
        parameters=[
            OpenApiParameter("dataset", str, many=True, description="<source>:<schema>.<name> (repeatable)."),
            OpenApiParameter("source", str, description="Only the datasets of this source."),
        ],
        responses={(200, "application/json"): as_code.openapi_schema(), (200, YAML): OpenApiTypes.STR},
    )
    def list(self, request: Request) -> Response:
        """The document of the named datasets (without `dataset`: every dataset with a check or a watch)."""
        source = request.query_params.get("source") or None
        keys = request.query_params.getlist("dataset")
        within = datasets_visible_to(request.user)
        if source:
            within = within.filter(source__name=source)
        if keys:
            datasets: Any = as_code.find_datasets(keys, within=within)
        else:
            datasets = within.filter(pk__in=datasets_with_checks(source).values("pk"))
        return Response(as_code.export_checks(datasets))

    @extend_schema(request=DOCUMENT, responses={200: PLAN})
    @action(detail=False, methods=["post"])
    def plan(self, request: Request) -> Response:
        """What applying the document would change; nothing is changed."""
        planned = as_code.plan(request.data, request.user, within=datasets_visible_to(request.user))
        return Response({**planned.as_dict(), "summary": planned.summary(), "refused": list(planned.refused)})

    @extend_schema(request=DOCUMENT, responses={200: PLAN})
    @action(detail=False, methods=["post"])
    def apply(self, request: Request) -> Response:
        """Apply the document as the caller, in one transaction: what was changed (nothing the second time)."""
        planned = as_code.plan(request.data, within=datasets_visible_to(request.user))
        done = as_code.apply(planned, request.user)
        return Response({**done.as_dict(), "summary": done.summary(applied=True), "refused": []})

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=False, methods=["get"], url_path="schema")
    def json_schema(self, request: Request) -> Response:
        """The document's JSON Schema (docs/schemas/quality-checks.schema.json)."""
        return Response(as_code.schema())
