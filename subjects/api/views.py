"""The data-subject requests API (`/api/v1/subject-requests/`): list, create, preview, approve,
extend, execute (202: a worker carries it out) and the access export's one download. Privacy officers
act; officers, governance admins and auditors read; nobody else sees a request (404)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from django_filters import rest_framework as df
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import TokenScope
from governance.api.filters import StrictFilterSet
from governance.api.idempotency import idempotent
from governance.api.views import ApiViewMixin

from ..models import RequestDataset, RequestKind, RequestState, SubjectRequest
from ..selectors import requests_visible_to
from ..services import execution, rectification, requests, restriction
from . import serializers as shapes


class RequestFilter(StrictFilterSet):
    state = df.ChoiceFilter(choices=RequestState.choices)
    kind = df.ChoiceFilter(choices=RequestKind.choices)

    class Meta:
        model = SubjectRequest
        fields = ["state", "kind"]


@extend_schema_view(
    create=extend_schema(
        request=shapes.SubjectRequestCreateSerializer, responses={201: shapes.SubjectRequestSerializer}
    ),
    preview=extend_schema(request=None, responses=shapes.SubjectRequestDetailSerializer),
    approve=extend_schema(request=None, responses=shapes.SubjectRequestDetailSerializer),
    extend=extend_schema(request=shapes.ExtendSerializer, responses=shapes.SubjectRequestSerializer),
    corrections=extend_schema(request=shapes.CorrectionsSerializer, responses=shapes.SubjectRequestDetailSerializer),
    execute=extend_schema(request=None, responses={202: None}),
    export=extend_schema(
        responses={(200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="The ZIP, once.")}
    ),
)
class SubjectRequestViewSet(
    ApiViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Data-subject requests (docs/subjects.md), soonest deadline first."""

    filterset_class = RequestFilter
    scopes = {
        "create": TokenScope.APPROVE,
        "preview": TokenScope.APPROVE,
        "approve": TokenScope.APPROVE,
        "extend": TokenScope.APPROVE,
        "corrections": TokenScope.APPROVE,
        "execute": TokenScope.APPROVE,
        "export": TokenScope.APPROVE,
    }

    def get_queryset(self) -> QuerySet[SubjectRequest]:
        if getattr(self, "swagger_fake_view", False):
            return SubjectRequest.objects.none()
        return requests_visible_to(self.request.user).order_by("due_at", "pk")

    def get_serializer_class(self) -> Any:
        return shapes.SubjectRequestDetailSerializer if self.action == "retrieve" else shapes.SubjectRequestSerializer

    def _detail(self, obj: SubjectRequest, code: int = status.HTTP_200_OK) -> Response:
        return Response(shapes.SubjectRequestDetailSerializer(obj).data, status=code)

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        shape = shapes.SubjectRequestCreateSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        made = requests.subject_request_create(actor=request.user, **shape.validated_data)
        return Response(shapes.SubjectRequestSerializer(made).data, status=status.HTTP_201_CREATED)

    @action(detail=True, methods=["post"])
    @idempotent
    def preview(self, request: Request, pk: str | None = None) -> Response:
        return self._detail(requests.subject_request_preview(actor=request.user, request=self.get_object()))

    @action(detail=True, methods=["post"])
    @idempotent
    def approve(self, request: Request, pk: str | None = None) -> Response:
        return self._detail(requests.subject_request_approve(actor=request.user, request=self.get_object()))

    @action(detail=True, methods=["post"])
    @idempotent
    def extend(self, request: Request, pk: str | None = None) -> Response:
        obj = self.get_object()
        shape = shapes.ExtendSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        done = requests.subject_request_extend(actor=request.user, request=obj, reason=shape.validated_data["reason"])
        return Response(shapes.SubjectRequestSerializer(done).data)

    @action(detail=True, methods=["post"])
    @idempotent
    def corrections(self, request: Request, pk: str | None = None) -> Response:
        """A rectification's corrections (replacing earlier ones); an approved request is approved again."""
        obj = self.get_object()
        shape = shapes.CorrectionsSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        items = [dict(item) for item in shape.validated_data["corrections"]]
        return self._detail(rectification.subject_request_correct(actor=request.user, request=obj, corrections=items))

    @action(detail=True, methods=["post"])
    @idempotent
    def execute(self, request: Request, pk: str | None = None) -> Response:
        requests.subject_request_execute_later(actor=request.user, request=self.get_object())
        return Response(status=status.HTTP_202_ACCEPTED)

    @action(detail=True, methods=["get"])
    def export(self, request: Request, pk: str | None = None) -> HttpResponse:
        obj = self.get_object()
        payload = execution.subject_export_download(actor=request.user, request=obj)
        response = HttpResponse(payload, content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="subject-request-{obj.pk}.zip"'
        response["Cache-Control"] = "no-store"
        return response


@extend_schema_view(acknowledge=extend_schema(request=None, responses=shapes.RestrictionSerializer))
class RestrictionViewSet(ApiViewMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Restrictions (Art. 18) on the datasets the caller owns or stewards (governance admins: all):
    where the subject's rows are and how they match, never who the subject is. The owner acknowledges
    once the rows are no longer processed (docs/subjects.md: a marker, not an enforcement)."""

    serializer_class = shapes.RestrictionSerializer
    scopes = {"acknowledge": TokenScope.APPROVE}

    def get_queryset(self) -> QuerySet[RequestDataset]:
        if getattr(self, "swagger_fake_view", False):
            return RequestDataset.objects.none()
        return restriction.restrictions_for(self.request.user)

    @action(detail=True, methods=["post"])
    @idempotent
    def acknowledge(self, request: Request, pk: str | None = None) -> Response:
        done = restriction.subject_restriction_acknowledge(actor=request.user, row=self.get_object())
        return Response(shapes.RestrictionSerializer(done).data)
