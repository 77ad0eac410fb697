"""The privacy API (`/api/v1/privacy/`): the caller's aggregate grants with their budget and query
history, a query per POST, and the owner's privacy policy of a dataset. Another user's grant
answers 404, as if it did not exist; refusals of the services keep their status (403, 409)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import TokenScope
from governance.api.views import ApiViewMixin
from governance.errors import NotFound
from governance.models import Dataset, Grant
from governance.selectors.catalog import datasets_visible_to

from ..selectors import aggregate_grants_of, policy_of, queries_of
from ..services.policy import Bound, Categories, privacy_policy_save
from ..services.queries import privacy_query_run
from . import serializers as shapes

HISTORY = 50


@extend_schema_view(
    query=extend_schema(
        summary="Run one differentially private aggregate on the grant (spends its epsilon)",
        request=shapes.AggregateQueryInputSerializer,
        responses={201: shapes.PrivacyQuerySerializer},
    ),
    queries=extend_schema(
        summary="The grant's queries, newest first", responses=shapes.PrivacyQuerySerializer(many=True)
    ),
)
class AggregateGrantViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """The caller's aggregate grants, each with its budget (total, spent, remaining)."""

    serializer_class = shapes.AggregateGrantSerializer
    scopes = {"query": TokenScope.REQUEST}

    def get_queryset(self) -> QuerySet[Grant]:
        if getattr(self, "swagger_fake_view", False):
            return Grant.objects.none()
        return aggregate_grants_of(self.request.user)

    @action(detail=True, methods=["post"])
    def query(self, request: Request, pk: str | None = None) -> Response:
        grant = self.get_object()
        shape = shapes.AggregateQueryInputSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        done = privacy_query_run(grant_id=grant.pk, actor=request.user, **shape.validated_data)
        return Response(shapes.PrivacyQuerySerializer(done).data, status=201)

    @action(detail=True, methods=["get"])
    def queries(self, request: Request, pk: str | None = None) -> Response:
        rows = queries_of(self.get_object()).select_related("actor")[:HISTORY]
        return Response(shapes.PrivacyQuerySerializer(rows, many=True).data)


class DatasetPrivacyPolicyView(ApiViewMixin, APIView):
    """A dataset's privacy policy: aggregates only or not, the privacy unit, the contribution
    limit, bounds and categories. Everyone who sees the catalog reads it; owners and stewards set it."""

    scopes = {"*": TokenScope.APPROVE}

    def _dataset(self, pk: int) -> Dataset:
        dataset = datasets_visible_to(self.request.user).filter(pk=pk).first()
        if dataset is None:
            raise NotFound(f"No dataset #{pk}.")
        return dataset

    @extend_schema(responses=shapes.PrivacyPolicySerializer)
    def get(self, request: Request, pk: int) -> Response:
        dataset = self._dataset(pk)
        return Response(shapes.PrivacyPolicySerializer.of(policy_of(dataset), dataset.aggregates_only))

    @extend_schema(request=shapes.PrivacyPolicySerializer, responses=shapes.PrivacyPolicySerializer)
    def put(self, request: Request, pk: int) -> Response:
        dataset = self._dataset(pk)
        shape = shapes.PrivacyPolicySerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        data: dict[str, Any] = dict(shape.validated_data)
        privacy_policy_save(
            dataset=dataset,
            actor=request.user,
            aggregates_only=data["aggregates_only"],
            unit_column=data["unit_column"],
            contribution_limit=data["contribution_limit"],
            bounds=[Bound(**b) for b in data["bounds"]],
            categoricals=[Categories(**c) for c in data["categoricals"]],
        )
        return self.get(request, pk)
