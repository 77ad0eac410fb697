"""The break-glass API (`/api/v1/break-glass/`): break the glass (POST), the uses the caller may see
(officers, admins and auditors: all; anyone else: their own), and an officer's review. The services
decide who may: the on-call group and a second factor to activate, a security officer other than the
person to review (403 otherwise)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from django_filters import rest_framework as df
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import TokenScope
from governance.api.filters import StrictFilterSet
from governance.api.idempotency import idempotent
from governance.api.views import ApiViewMixin
from governance.errors import InvalidInput
from governance.selectors.catalog import datasets_visible_to

from ..models import BreakGlassUse
from ..selectors import uses_visible_to
from ..services.activation import break_glass_activate
from ..services.review import break_glass_review
from . import serializers as shapes


class UseFilter(StrictFilterSet):
    reviewed = df.BooleanFilter(field_name="reviewed_at", lookup_expr="isnull", exclude=True)

    class Meta:
        model = BreakGlassUse
        fields = ["reviewed"]


@extend_schema_view(
    create=extend_schema(request=shapes.ActivateSerializer, responses={201: shapes.BreakGlassUseSerializer}),
    review=extend_schema(request=shapes.ReviewSerializer, responses=shapes.BreakGlassUseSerializer),
)
class BreakGlassUseViewSet(
    ApiViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Break-glass uses (docs/break-glass.md)."""

    serializer_class = shapes.BreakGlassUseSerializer
    filterset_class = UseFilter
    scopes = {"create": TokenScope.REQUEST, "review": TokenScope.APPROVE}

    def get_queryset(self) -> QuerySet[BreakGlassUse]:
        if getattr(self, "swagger_fake_view", False):
            return BreakGlassUse.objects.none()
        return uses_visible_to(self.request.user).order_by("-activated_at", "-pk")

    @idempotent
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        shape = shapes.ActivateSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        data = shape.validated_data
        dataset = datasets_visible_to(request.user).filter(pk=data["dataset"]).first()
        if dataset is None:
            raise InvalidInput(f"There is no dataset {data['dataset']}.", field="dataset")
        use = break_glass_activate(
            actor=request.user,
            dataset=dataset,
            reason=data["reason"],
            hours=Decimal(str(data["hours"])),
            otp_token=data["otp_token"],
            temporary_login=data["temporary_login"],
        )
        return Response(self.get_serializer(self.get_queryset().get(pk=use.pk)).data, status=status.HTTP_201_CREATED)

    @action(detail=True, methods=["post"])
    @idempotent
    def review(self, request: Request, pk: str | None = None) -> Response:
        use = self.get_object()
        shape = shapes.ReviewSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        break_glass_review(
            actor=request.user, use=use, outcome=shape.validated_data["outcome"], note=shape.validated_data["note"]
        )
        return Response(self.get_serializer(self.get_queryset().get(pk=use.pk)).data)
