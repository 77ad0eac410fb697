"""Row filters through the API (docs/privacy.md "Row filters"): the filters of the datasets one
sees, and defining one (owners, stewards, governance admins; the `approve` scope). A filter outside
the grammar answers 400 naming `expression` and the offending part."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import TokenScope

from ..errors import InvalidInput
from ..models import RowFilter
from ..selectors.catalog import datasets_visible_to
from ..services.row_filters import row_filter_define, row_security_set
from .idempotency import idempotent
from .validation import StrictTypesMixin
from .views import ApiViewMixin


class RowFilterSerializer(serializers.ModelSerializer[RowFilter]):
    class Meta:
        model = RowFilter
        fields = ["id", "dataset", "name", "expression", "created_at", "updated_at"]
        read_only_fields = fields


class RowFilterDefineSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    dataset = serializers.IntegerField(help_text="Dataset id.")
    name = serializers.CharField(max_length=100)
    expression = serializers.CharField(
        max_length=2000, help_text="e.g. region IN ('EU','UK') AND active, or tenant_id = grantee.tenant"
    )


class RowSecuritySerializer(StrictTypesMixin, serializers.Serializer[Any]):
    dataset = serializers.IntegerField(help_text="Dataset id.")
    force = serializers.BooleanField(help_text="Bind the table's owner too (FORCE ROW LEVEL SECURITY).")
    confirmed = serializers.ListField(
        child=serializers.CharField(max_length=63),
        max_length=100,
        help_text="Readers the portal does not manage that may lose their rows once RLS is enabled.",
    )


@extend_schema_view(
    list=extend_schema(summary="Row filters of the datasets I can see"),
    security=extend_schema(
        summary="The dataset's row security: FORCE, and the readers the owner accepts to lose rows",
        request=RowSecuritySerializer,
        responses=RowSecuritySerializer,
    ),
    create=extend_schema(
        summary="Define (or change) a named row filter",
        request=RowFilterDefineSerializer,
        responses=RowFilterSerializer,
    ),
)
class RowFilterViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """Named row filters; a request may ask for a grant limited to one (`row_filter` on
    access-requests). Defining one accepts an `Idempotency-Key` header."""

    serializer_class = RowFilterSerializer
    scopes = {"create": TokenScope.APPROVE, "security": TokenScope.APPROVE}

    def get_queryset(self) -> QuerySet[RowFilter]:
        if getattr(self, "swagger_fake_view", False):
            return RowFilter.objects.none()
        visible = datasets_visible_to(self.request.user).values("pk")
        return RowFilter.objects.filter(dataset__in=visible).order_by("dataset_id", "name", "pk")

    def _dataset(self, request: Request, pk: int) -> Any:
        dataset = datasets_visible_to(request.user).filter(pk=pk).first()
        if dataset is None:
            raise InvalidInput(f"Dataset {pk} does not exist.", field="dataset")
        return dataset

    @action(detail=False, methods=["post"])
    @idempotent
    def security(self, request: Request) -> Response:
        shape = RowSecuritySerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        attrs = shape.validated_data
        dataset = row_security_set(
            dataset=self._dataset(request, attrs["dataset"]),
            force=attrs["force"],
            confirmed=attrs["confirmed"],
            actor=request.user,
        )
        return Response({"dataset": dataset.pk, **(dataset.row_security or {})})

    @idempotent
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        shape = RowFilterDefineSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        attrs = shape.validated_data
        dataset = self._dataset(request, attrs["dataset"])
        row = row_filter_define(dataset=dataset, name=attrs["name"], expression=attrs["expression"], actor=request.user)
        return Response(RowFilterSerializer(row).data, status=status.HTTP_201_CREATED)
