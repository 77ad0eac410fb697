"""Stewardship through the API: the PII suggestions (and decided tags) of the datasets I own or
steward, why each was made, confirm or reject one or many, and what a confirmation would do to
classifications before it is made.

Visibility: a tag outside the datasets the caller stewards (officers, governance admins and
auditors: all) answers 404, like one that does not exist. Deciding needs the `approve` scope and
the right to decide (the services check it: owners and stewards on their datasets, officers and
governance admins anywhere; a confirmed tag is rejected only by officers and admins).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import TokenScope

from ..errors import NotFound
from ..models import ColumnTag
from ..selectors.stewardship import Preview, classification_preview, column_tags_visible_to
from ..services import catalog as catalog_services
from ..services.stewardship import column_tags_decide
from . import filters
from . import serializers_stewardship as shapes
from .idempotency import idempotent
from .views import ApiViewMixin


def preview_data(preview: Preview) -> dict[str, Any]:
    return {
        "summary": preview.sentence(),
        "confirming": preview.confirming,
        "raised": preview.raised,
        "views": preview.views,
        "unchanged": preview.unchanged,
    }


@extend_schema_view(
    list=extend_schema(summary="PII suggestions and decided tags of the datasets I steward"),
    confirm=extend_schema(request=None, responses=shapes.ColumnTagSerializer),
    reject=extend_schema(request=None, responses=shapes.ColumnTagSerializer),
    decide=extend_schema(
        summary="Confirm or reject many tags: all of them or none",
        request=shapes.BulkDecisionSerializer,
        responses=shapes.BulkResultSerializer,
    ),
    preview=extend_schema(
        summary="What confirming these tags would do to classifications (nothing is written)",
        request=shapes.TagIdsSerializer,
        responses=shapes.PreviewSerializer,
    ),
)
class ColumnTagViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """Column tags: suggested by discovery, confirmed or rejected by a steward. Decisions accept an
    `Idempotency-Key` header."""

    serializer_class = shapes.ColumnTagSerializer
    filterset_class = filters.ColumnTagFilter
    scopes = {
        "confirm": TokenScope.APPROVE,
        "reject": TokenScope.APPROVE,
        "decide": TokenScope.APPROVE,
        "preview": TokenScope.READ,
    }

    def get_queryset(self) -> QuerySet[ColumnTag]:
        if getattr(self, "swagger_fake_view", False):
            return ColumnTag.objects.none()
        return column_tags_visible_to(self.request.user).order_by(
            "column__dataset__source__name", "column__dataset__schema", "column__dataset__name", "column__ordinal", "pk"
        )

    def _visible(self, ids: list[int]) -> list[ColumnTag]:
        """The tags `ids`, in that order; the first one the caller may not see is a 404 naming it."""
        found = {t.pk: t for t in self.get_queryset().filter(pk__in=ids)}
        for pk in ids:
            if pk not in found:
                raise NotFound(f"Tag #{pk} is not among the tags you may see.", field="ids", id=pk)
        return [found[pk] for pk in ids]

    def _fresh(self, pk: int) -> ColumnTag:
        return self.get_queryset().get(pk=pk)

    @action(detail=True, methods=["post"])
    @idempotent
    def confirm(self, request: Request, pk: str | None = None) -> Response:
        tag = self.get_object()
        catalog_services.column_tag_confirm(tag=tag, actor=request.user)
        return Response(self.get_serializer(self._fresh(tag.pk)).data)

    @action(detail=True, methods=["post"])
    @idempotent
    def reject(self, request: Request, pk: str | None = None) -> Response:
        tag = self.get_object()
        catalog_services.column_tag_reject(tag=tag, actor=request.user)
        return Response(self.get_serializer(self._fresh(tag.pk)).data)

    @action(detail=False, methods=["post"], filter_backends=[], pagination_class=None)
    @idempotent
    def decide(self, request: Request) -> Response:
        shape = shapes.BulkDecisionSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        ids = list(dict.fromkeys(shape.validated_data["ids"]))
        decision = shape.validated_data["decision"]
        tags = self._visible(ids)
        preview = classification_preview(tags) if decision == "confirm" else Preview()
        column_tags_decide(ids=ids, decision=decision, actor=request.user)
        fresh = {t.pk: t for t in self.get_queryset().filter(pk__in=ids)}
        decided = shapes.ColumnTagSerializer([fresh[pk] for pk in ids], many=True).data
        return Response({"decided": decided, "preview": shapes.PreviewSerializer(preview_data(preview)).data})

    @action(detail=False, methods=["post"], filter_backends=[], pagination_class=None)
    def preview(self, request: Request) -> Response:
        shape = shapes.TagIdsSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        tags = self._visible(list(dict.fromkeys(shape.validated_data["ids"])))
        return Response(shapes.PreviewSerializer(preview_data(classification_preview(tags))).data)
