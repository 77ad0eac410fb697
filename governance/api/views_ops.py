"""API views for operators and auditors: data sources, reconcile, the audit trail, API tokens."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, pagination, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import ApiToken, TokenScope
from accounts.roles import sees_everything
from accounts.tokens import api_token_revoke
from audit.models import AuditEvent

from ..errors import NotPermitted
from ..models import DataSource, OperationKind
from ..services import catalog as catalog_services
from ..services.credentials import datasource_credentials_rotate
from ..services.operations import operation_start
from ..services.principals import source_principal_map
from . import filters, serializers
from .idempotency import idempotent
from .pagination import at_least_one, query_positive_int
from .permissions import GovernanceAdminOnly, TokenScopes
from .serializers_operations import (
    CredentialRotationSerializer,
    OperationSerializer,
    RotationRequestSerializer,
    SyncRequestSerializer,
    operation_url,
)
from .views import ApiViewMixin

# --- data sources ------------------------------------------------------------------------------------


@extend_schema_view(
    reconcile=extend_schema(request=serializers.ReconcileRequestSerializer, responses={202: OperationSerializer}),
    sync=extend_schema(request=SyncRequestSerializer, responses={202: OperationSerializer}),
    rotate_credentials=extend_schema(request=RotationRequestSerializer, responses={200: CredentialRotationSerializer}),
    s3_datasets=extend_schema(
        request=serializers.S3DatasetRegisterSerializer, responses={201: serializers.S3DatasetSerializer}
    ),
    principals=extend_schema(
        request=serializers.PrincipalMapSerializer, responses={201: serializers.PrincipalSerializer}
    ),
)
class DataSourceViewSet(
    ApiViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Registered data sources. Governance admins register and edit them; officers and auditors
    read them; credentials are accepted and never returned."""

    serializer_class = serializers.DataSourceSerializer
    lookup_field = "name"
    scopes = {
        "create": TokenScope.ADMIN,
        "update": TokenScope.ADMIN,
        "partial_update": TokenScope.ADMIN,
        "reconcile": TokenScope.ADMIN,
        "sync": TokenScope.ADMIN,
        "rotate_credentials": TokenScope.ADMIN,
        "s3_datasets": TokenScope.ADMIN,
        "principals": TokenScope.ADMIN,
    }

    def get_permissions(self) -> list[Any]:
        return [*super().get_permissions(), GovernanceAdminOnly()]

    def get_queryset(self) -> QuerySet[DataSource]:
        return DataSource.objects.select_related("default_classification", "owner").order_by("name")

    @idempotent
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        shape = self.get_serializer(data=request.data)
        shape.is_valid(raise_exception=True)
        fields = dict(shape.validated_data)
        password = fields.pop("password", "")
        source = catalog_services.datasource_create(actor=request.user, password=password, **fields)
        headers = {"Location": f"/api/v1/sources/{source.name}/"}
        return Response(self.get_serializer(source).data, status=status.HTTP_201_CREATED, headers=headers)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        source = self.get_object()
        shape = self.get_serializer(source, data=request.data, partial=kwargs.get("partial", False))
        shape.is_valid(raise_exception=True)
        fields = dict(shape.validated_data)
        password = fields.pop("password", None)
        source = catalog_services.datasource_update(source=source, actor=request.user, password=password, **fields)
        return Response(self.get_serializer(source).data)

    @action(detail=True, methods=["post"])
    def reconcile(self, request: Request, name: str | None = None) -> Response:
        """Start a reconcile run (202, `Location`: the operation to poll): a worker compares the
        target's privileges with the grants in force and, with `fix`, repairs; findings appear
        under /drift-findings/."""
        source = self.get_object()
        shape = serializers.ReconcileRequestSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        operation = operation_start(
            kind=OperationKind.RECONCILE, source=source, fix=shape.validated_data["fix"], actor=request.user
        )
        return self._accepted(operation)

    @action(detail=True, methods=["post"])
    def sync(self, request: Request, name: str | None = None) -> Response:
        """Start a catalog sync of this source (202, `Location`: the operation to poll): a worker
        reads its schemas, tables and columns, samples for PII and updates the catalog."""
        source = self.get_object()
        SyncRequestSerializer(data=request.data).is_valid(raise_exception=True)
        operation = operation_start(kind=OperationKind.CATALOG_SYNC, source=source, actor=request.user)
        return self._accepted(operation)

    @action(detail=True, methods=["post"], url_path="rotate-credentials")
    def rotate_credentials(self, request: Request, name: str | None = None) -> Response:
        """Rotate the portal's own password on this source now (docs/security.md#credential-rotation),
        in the request (a second or so). 200 with the rotation: `status` is `rotated`, or `failed`
        with `error` (the old password still works, the failure is an open finding); 409 when the
        portal may not rotate this source (a reference it may not write, another kind) or a rotation
        is already under way."""
        source = self.get_object()
        RotationRequestSerializer(data=request.data).is_valid(raise_exception=True)
        rotation = datasource_credentials_rotate(source=source, actor=request.user)
        return Response(CredentialRotationSerializer(rotation).data)

    def _accepted(self, operation: Any) -> Response:
        body = OperationSerializer(operation).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": operation_url(operation)})

    @action(detail=True, methods=["post"], url_path="s3-datasets")
    def s3_datasets(self, request: Request, name: str | None = None) -> Response:
        """Register an S3 prefix of this AWS source as a governed dataset (201)."""
        source = self.get_object()
        shape = serializers.S3DatasetRegisterSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        dataset = catalog_services.dataset_register_s3(source=source, actor=request.user, **shape.validated_data)
        location = f"s3://{dataset.schema}/{dataset.name}" if dataset.name else f"s3://{dataset.schema}"
        body = {
            "id": dataset.pk,
            "source": source.name,
            "location": location,
            "classification": dataset.classification.slug,
        }
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": f"/api/v1/datasets/{dataset.pk}/"})

    @action(detail=True, methods=["post"])
    def principals(self, request: Request, name: str | None = None) -> Response:
        """Map a person or a portal role to an existing identity on this source (201)."""
        source = self.get_object()
        shape = serializers.PrincipalMapSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        data = shape.validated_data
        row = source_principal_map(
            source=source, actor=request.user, name=data["name"], user=data.get("user"), role=data.get("role")
        )
        body = {
            "source": source.name,
            "name": row.db_role,
            "user": row.user.username if row.user else None,
            "role": row.role.slug if row.role else None,
        }
        return Response(body, status=status.HTTP_201_CREATED)


# --- audit --------------------------------------------------------------------------------------------


class AuditCursor(pagination.CursorPagination):
    """Newest first; stable under concurrent inserts (a cursor, not an offset). A cursor that was
    not issued by this API (its position does not parse as a time) is 'Invalid cursor', not a 500."""

    ordering = ("-occurred_at", "-id")
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_page_size(self, request: Request) -> int:
        size = query_positive_int(request, "page_size")  # a 400 for anything but an integer >= 1
        return self.page_size if size is None else min(size, self.max_page_size)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return at_least_one(super().get_schema_operation_parameters(view), self.max_page_size)

    def decode_cursor(self, request: Request) -> Any:
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            from django.utils.dateparse import parse_datetime

            try:
                valid = parse_datetime(str(cursor.position)) is not None
            except ValueError:
                valid = False
            if not valid:
                from rest_framework.exceptions import NotFound

                raise NotFound(self.invalid_cursor_message)
        return cursor


EXPORT_FIELDS = serializers.AuditEventSerializer.Meta.fields


def _shown(rows: Iterable[dict[str, Any]], shown: Any) -> Iterator[dict[str, Any]]:
    """Rows read with their actor id, as displayed (audit.redaction), without the id."""
    for row in rows:
        row = shown.row(row) if shown else row
        row.pop("actor_id", None)
        yield row


def _rows(qs: QuerySet[AuditEvent]) -> Iterator[dict[str, Any]]:
    from audit import redaction

    yield from _shown(qs.values(*EXPORT_FIELDS, "actor_id").iterator(chunk_size=2000), redaction.current())


def _jsonl(qs: QuerySet[AuditEvent]) -> Iterator[str]:
    for row in _rows(qs):
        yield json.dumps(row, cls=DjangoJSONEncoder, sort_keys=True) + "\n"


def _cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (a user agent of `=HYPERLINK(...)`, say) is
    prefixed with a quote: the export is read by people, in spreadsheets."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv(qs: QuerySet[AuditEvent]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    for row in _rows(qs):
        for key in ("changes", "metadata"):
            row[key] = json.dumps(row[key], cls=DjangoJSONEncoder, sort_keys=True)
        writer.writerow({key: _cell(value) for key, value in row.items()})
        if buffer.tell() > 65536:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@extend_schema_view(
    export=extend_schema(
        parameters=[OpenApiParameter("format", str, enum=["jsonl", "csv"], description="jsonl (default) or csv.")],
        responses={(200, "application/x-ndjson"): OpenApiTypes.STR, (200, "text/csv"): OpenApiTypes.STR},
    )
)
class AuditEventViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """The audit trail: read-only, for auditors, officers and governance admins. Lists page with a
    cursor; `export` streams every matching event as JSON Lines or CSV."""

    serializer_class = serializers.AuditEventSerializer
    filterset_class = filters.AuditEventFilter
    pagination_class = AuditCursor
    ordering_fields: list[str] = []  # the cursor fixes the order (newest first)

    def get_queryset(self) -> QuerySet[AuditEvent]:
        if getattr(self, "swagger_fake_view", False):
            return AuditEvent.objects.none()
        if not sees_everything(self.request.user):
            raise NotPermitted("The audit trail is for auditors, security officers and governance admins.")
        return AuditEvent.objects.all()

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """A page read as plain rows (`values()`), not model instances run through the serializer's
        fifteen fields one by one: that was three quarters of a search's time at 10 million events
        (docs/performance.md). The output is the serializer's: its own field formats the one value
        that is not already JSON-ready (the time), pinned against it by tests/api."""
        from audit import redaction

        queryset = self.filter_queryset(self.get_queryset()).values(*EXPORT_FIELDS, "actor_id")
        page = self.paginate_queryset(queryset) or []
        when = serializers.AuditEventSerializer().fields["occurred_at"].to_representation
        shown = redaction.current() if page else None
        return self.get_paginated_response(
            [{**row, "occurred_at": when(row["occurred_at"])} for row in _shown(page, shown)]
        )

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        from audit import redaction

        event = redaction.current().event(self.get_object())
        return Response(self.get_serializer(event).data)

    @action(detail=False, methods=["get"], pagination_class=None, filter_backends=None)
    def export(self, request: Request) -> StreamingHttpResponse:
        qs = self.filter_queryset(self.get_queryset()).order_by("occurred_at", "id")
        kind = request.query_params.get("format", "jsonl")
        if kind == "csv":
            response = StreamingHttpResponse(_csv(qs), content_type="text/csv")
            response["Content-Disposition"] = 'attachment; filename="audit-events.csv"'
        elif kind == "jsonl":
            response = StreamingHttpResponse(_jsonl(qs), content_type="application/x-ndjson")
            response["Content-Disposition"] = 'attachment; filename="audit-events.jsonl"'
        else:
            from ..errors import InvalidInput

            raise InvalidInput("format must be jsonl or csv.", field="format")
        return response

    def filter_queryset(self, queryset: Any) -> Any:
        # `export` switches the backends off for the schema; filter with the same FilterSet anyway.
        if self.action == "export":
            filterset = filters.AuditEventFilter(self.request.query_params, queryset=queryset, request=self.request)
            if not filterset.is_valid():
                from rest_framework.exceptions import ValidationError

                raise ValidationError(filterset.errors)
            return filterset.qs
        return super().filter_queryset(queryset)


# --- API tokens -------------------------------------------------------------------------------------------


@extend_schema_view(revoke=extend_schema(request=None, responses=serializers.ApiTokenSerializer))
class ApiTokenViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """My API tokens (never their secrets). Tokens are created with `manage.py api_token create`;
    a token can be revoked here by its owner (any scope: giving up access is always allowed)."""

    serializer_class = serializers.ApiTokenSerializer
    lookup_field = "key_id"
    scopes: dict[str, str | None] = {"revoke": None}  # any scope may give up its own token
    permission_classes = [TokenScopes]  # auditors too may give up their own tokens

    def get_queryset(self) -> QuerySet[ApiToken]:
        if getattr(self, "swagger_fake_view", False):
            return ApiToken.objects.none()
        owner = int(self.request.user.pk or 0)
        return ApiToken.objects.filter(user_id=owner).select_related("user").order_by("-created_at", "-pk")

    @action(detail=True, methods=["post"])
    @idempotent
    def revoke(self, request: Request, key_id: str | None = None) -> Response:
        token = self.get_object()
        token = api_token_revoke(token=token, actor=request.user, reason="revoked by its owner through the API")
        return Response(self.get_serializer(token).data)
