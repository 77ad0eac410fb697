"""The owners' side of the data-subject requests API: subject identifiers (suggest, confirm,
reject), relationships between datasets (read, declare) and each dataset's handling (read, set).
Catalog metadata, readable by every signed-in caller; who may change what is the services' rule."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django_filters import rest_framework as df
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import TokenScope
from governance.api.filters import IdFilter, StrictFilterSet
from governance.api.idempotency import idempotent
from governance.api.pagination import MAX_INTEGER
from governance.api.views import ApiViewMixin
from governance.errors import InvalidInput, NotFound
from governance.models import Dataset, TagStatus
from governance.selectors.catalog import datasets_visible_to

from ..models import DatasetHandling, HandlingAction, IdentifierKind, Relationship, SubjectIdentifier
from ..selectors import handling_of
from ..services import identifiers as services
from . import serializers as shapes


def _dataset(user: Any, pk: Any, field: str) -> Dataset:
    dataset = datasets_visible_to(user).filter(pk=pk).first()
    if dataset is None:
        raise InvalidInput(f"There is no dataset {pk}.", field=field)
    return dataset


class IdentifierFilter(StrictFilterSet):
    dataset = IdFilter(field_name="column__dataset_id")
    kind = df.ChoiceFilter(choices=IdentifierKind.choices)
    status = df.ChoiceFilter(choices=TagStatus.choices)

    class Meta:
        model = SubjectIdentifier
        fields = ["dataset", "kind", "status"]


class RelationshipFilter(StrictFilterSet):
    dataset = IdFilter(field_name="dataset_id")

    class Meta:
        model = Relationship
        fields = ["dataset"]


@extend_schema_view(
    confirm=extend_schema(request=None, responses=shapes.SubjectIdentifierSerializer),
    reject=extend_schema(request=None, responses=shapes.SubjectIdentifierSerializer),
    suggest=extend_schema(request=shapes.SuggestSerializer, responses={200: None}),
)
class SubjectIdentifierViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """Columns that identify data subjects (docs/subjects.md): suggested, then decided by stewards."""

    serializer_class = shapes.SubjectIdentifierSerializer
    filterset_class = IdentifierFilter
    scopes = {"confirm": TokenScope.APPROVE, "reject": TokenScope.APPROVE, "suggest": TokenScope.APPROVE}

    def get_queryset(self) -> QuerySet[SubjectIdentifier]:
        return SubjectIdentifier.objects.select_related("column", "decided_by").order_by("pk")

    def _decide(self, decision: str) -> Response:
        ident = services.subject_identifier_decide(
            identifier=self.get_object(), decision=decision, actor=self.request.user
        )
        return Response(self.get_serializer(ident).data)

    @action(detail=True, methods=["post"])
    @idempotent
    def confirm(self, request: Request, pk: str | None = None) -> Response:
        return self._decide("confirm")

    @action(detail=True, methods=["post"])
    @idempotent
    def reject(self, request: Request, pk: str | None = None) -> Response:
        return self._decide("reject")

    @action(detail=False, methods=["post"])
    @idempotent
    def suggest(self, request: Request) -> Response:
        shape = shapes.SuggestSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        new = services.identifiers_suggest_named(actor=request.user, source_name=shape.validated_data["source"])
        return Response({"new": new})


@extend_schema_view(
    create=extend_schema(request=shapes.RelationshipDeclareSerializer, responses={201: shapes.RelationshipSerializer})
)
class RelationshipViewSet(ApiViewMixin, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """How rows of one dataset belong to a subject found in another: foreign keys and declared ones."""

    serializer_class = shapes.RelationshipSerializer
    filterset_class = RelationshipFilter
    scopes = {"create": TokenScope.APPROVE}

    def get_queryset(self) -> QuerySet[Relationship]:
        return Relationship.objects.select_related("declared_by").order_by("pk")

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        shape = shapes.RelationshipDeclareSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        data = shape.validated_data
        rel = services.relationship_declare(
            actor=request.user,
            dataset=_dataset(request.user, data["dataset"], "dataset"),
            columns=data["columns"],
            referenced=_dataset(request.user, data["referenced"], "referenced"),
            referenced_columns=data["referenced_columns"],
        )
        return Response(self.get_serializer(rel).data, status=status.HTTP_201_CREATED)


DATASET_ID = OpenApiParameter("dataset", int, OpenApiParameter.PATH, description="The dataset's id.")


@extend_schema_view(
    retrieve=extend_schema(parameters=[DATASET_ID], responses=shapes.HandlingSerializer),
    update=extend_schema(
        parameters=[DATASET_ID], request=shapes.HandlingWriteSerializer, responses=shapes.HandlingSerializer
    ),
)
class HandlingViewSet(ApiViewMixin, viewsets.GenericViewSet):
    """What a request does to a dataset (erase by default), by dataset id; set by its owner or steward."""

    serializer_class = shapes.HandlingSerializer
    lookup_field = "dataset"
    lookup_value_regex = "[0-9]+"
    http_method_names = ["get", "put", "head", "options"]
    scopes = {"update": TokenScope.APPROVE}

    def get_queryset(self) -> QuerySet[DatasetHandling]:
        return DatasetHandling.objects.none()

    def _dataset(self) -> Dataset:
        pk = int(self.kwargs["dataset"])  # digits only (lookup_value_regex)
        dataset = datasets_visible_to(self.request.user).filter(pk=pk).first() if pk <= MAX_INTEGER else None
        if dataset is None:
            raise NotFound(f"There is no dataset {self.kwargs['dataset']}.")
        return dataset

    def retrieve(self, request: Request, dataset: str | None = None) -> Response:
        found = self._dataset()
        held = handling_of(found.pk) or DatasetHandling(dataset=found, action=HandlingAction.ERASE)
        return Response(shapes.HandlingSerializer(held).data)

    def update(self, request: Request, dataset: str | None = None) -> Response:
        found = self._dataset()
        shape = shapes.HandlingWriteSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        held = services.dataset_handling_set(actor=request.user, dataset=found, **shape.validated_data)
        return Response(shapes.HandlingSerializer(held).data)
