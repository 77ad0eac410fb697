"""The quality API (`/api/v1/quality/`): checks (define, change, review, remove), runs with their
results and profile, datasets' states, and "run now". Check definitions and results are catalog
metadata, readable by every signed-in caller; who may change what is the services' rule (the
dataset's owner and stewards, governance admins): 403 otherwise. Profile values follow
quality.selectors.may_see_profile_values."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django_filters import rest_framework as df
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import TokenScope
from governance.api.filters import IdFilter, StrictFilterSet
from governance.api.idempotency import idempotent
from governance.api.views import ApiViewMixin
from governance.errors import InvalidInput
from governance.selectors.catalog import datasets_visible_to

from ..models import DatasetQuality, QualityCheck, QualityRun, QualityStatus
from ..selectors import checks_visible_to, may_see_profile_values, runs_visible_to, states_visible_to
from ..services import checks as services
from ..services.runs import quality_run_request
from . import serializers as shapes


class CheckFilter(StrictFilterSet):
    dataset = IdFilter(field_name="dataset_id")
    kind = df.CharFilter()
    last_status = df.CharFilter()

    class Meta:
        model = QualityCheck
        fields = ["dataset", "kind", "last_status"]


class RunFilter(StrictFilterSet):
    dataset = IdFilter(field_name="dataset_id")
    status = df.ChoiceFilter(choices=QualityStatus.choices)

    class Meta:
        model = QualityRun
        fields = ["dataset", "status"]


class StateFilter(StrictFilterSet):
    status = df.ChoiceFilter(choices=QualityStatus.choices)

    class Meta:
        model = DatasetQuality
        fields = ["status"]


def _dataset(user: Any, pk: Any) -> Any:
    dataset = datasets_visible_to(user).filter(pk=pk).first()
    if dataset is None:
        raise InvalidInput(f"There is no dataset {pk}.", field="dataset")
    return dataset


@extend_schema_view(
    create=extend_schema(request=shapes.QualityCheckCreateSerializer, responses={201: shapes.QualityCheckSerializer}),
    partial_update=extend_schema(request=shapes.QualityCheckUpdateSerializer, responses=shapes.QualityCheckSerializer),
    review=extend_schema(request=None, responses=shapes.QualityCheckSerializer),
)
class QualityCheckViewSet(
    ApiViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Quality checks of the catalog's datasets (docs/quality.md)."""

    serializer_class = shapes.QualityCheckSerializer
    filterset_class = CheckFilter
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    scopes = {
        "create": TokenScope.APPROVE,
        "partial_update": TokenScope.APPROVE,
        "destroy": TokenScope.APPROVE,
        "review": TokenScope.APPROVE,
    }

    def get_queryset(self) -> QuerySet[QualityCheck]:
        if getattr(self, "swagger_fake_view", False):
            return QualityCheck.objects.none()
        return checks_visible_to(self.request.user)

    def create(self, request: Request) -> Response:
        shape = shapes.QualityCheckCreateSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        data = dict(shape.validated_data)
        dataset = _dataset(request.user, data.pop("dataset"))
        check = services.quality_check_create(actor=request.user, dataset=dataset, **data)
        return Response(self.get_serializer(check).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        check = self.get_object()
        shape = shapes.QualityCheckUpdateSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        fields = {k: v for k, v in shape.validated_data.items() if k in request.data}
        check = services.quality_check_update(actor=request.user, check=check, **fields)
        return Response(self.get_serializer(check).data)

    def perform_destroy(self, instance: QualityCheck) -> None:
        services.quality_check_delete(actor=self.request.user, check=instance)

    @action(detail=True, methods=["post"])
    @idempotent
    def review(self, request: Request, pk: str | None = None) -> Response:
        check = services.quality_check_review(actor=request.user, check=self.get_object())
        return Response(self.get_serializer(check).data)


class QualityRunViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """Runs of datasets' checks with each check's result; a run's detail adds the column profile."""

    filterset_class = RunFilter

    def get_queryset(self) -> QuerySet[QualityRun]:
        if getattr(self, "swagger_fake_view", False):
            return QualityRun.objects.none()
        return runs_visible_to(self.request.user).order_by("-started_at", "-pk")

    def get_serializer_class(self) -> Any:
        return shapes.QualityRunDetailSerializer if self.action == "retrieve" else shapes.QualityRunSerializer

    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        run = self.get_object()
        context = {**self.get_serializer_context(), "show_values": may_see_profile_values(request.user, run.dataset)}
        return Response(shapes.QualityRunDetailSerializer(run, context=context).data)


@extend_schema_view(run=extend_schema(request=None, responses={202: None}))
class DatasetQualityViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """Each dataset's quality state (what badges and the catalog's filter show); `run` asks for a run now."""

    serializer_class = shapes.DatasetQualitySerializer
    filterset_class = StateFilter
    lookup_field = "dataset"
    scopes = {"run": TokenScope.APPROVE}

    def get_queryset(self) -> QuerySet[DatasetQuality]:
        if getattr(self, "swagger_fake_view", False):
            return DatasetQuality.objects.none()
        return states_visible_to(self.request.user)

    @action(detail=True, methods=["post"])
    @idempotent
    def run(self, request: Request, dataset: str | None = None) -> Response:
        state = self.get_object()
        quality_run_request(actor=request.user, dataset=state.dataset)
        return Response(status=status.HTTP_202_ACCEPTED)
