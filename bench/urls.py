"""The portal's URLs plus the benchmark's floor: plain DRF views over the same queries and the same
serializers (lists), or the same service (create), without authentication, scopes, visibility,
throttling, filters or idempotency: what the API layer adds is what the ratio measures."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.urls import path
from rest_framework import generics, permissions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import User
from config.urls import urlpatterns as portal
from governance.api.pagination import PageNumberPagination
from governance.api.serializers import AccessRequestSerializer, DatasetSerializer
from governance.api.views import _pii_columns
from governance.models import AccessRequest, Dataset
from governance.services.requests import access_request_submit


class PlainDatasets(generics.ListAPIView):
    authentication_classes: list[Any] = []
    permission_classes = [permissions.AllowAny]
    throttle_classes: list[Any] = []
    filter_backends: list[Any] = []
    pagination_class = PageNumberPagination
    serializer_class = DatasetSerializer
    queryset = (
        Dataset.objects.select_related("source", "classification", "owner")
        .annotate(pii_columns=_pii_columns())
        .order_by("source__name", "schema", "name", "pk")
    )


class PlainRequests(generics.ListAPIView):
    authentication_classes: list[Any] = []
    permission_classes = [permissions.AllowAny]
    throttle_classes: list[Any] = []
    filter_backends: list[Any] = []
    pagination_class = PageNumberPagination
    serializer_class = AccessRequestSerializer
    queryset = AccessRequest.objects.select_related(
        "requester", "grantee_user", "grantee_role", "dataset__source", "dataset__classification", "grant"
    ).order_by("-submitted_at", "-pk")


class PlainCreate(APIView):
    """The same submit service (policy, duplicate check, audit event) behind a bare DRF view: the
    requester is posted by id, no authentication, scopes, idempotency or detail response."""

    authentication_classes: list[Any] = []
    permission_classes = [permissions.AllowAny]
    throttle_classes: list[Any] = []

    def post(self, request: Request) -> Response:
        data: dict[str, Any] = dict(request.data)
        req = access_request_submit(
            requester=User.objects.get(pk=data["requester"]),
            dataset=Dataset.objects.get(pk=data["dataset"]),
            level=data["level"],
            justification=data["justification"],
            duration=dt.timedelta(days=int(data["duration_days"])),
        )
        return Response({"id": req.pk}, status=201)


urlpatterns = [
    path("bench/plain/datasets/", PlainDatasets.as_view()),
    path("bench/plain/access-requests/", PlainRequests.as_view()),
    path("bench/plain/create/", PlainCreate.as_view()),
    *portal,
]
