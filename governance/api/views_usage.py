"""The effective access report over the API: who holds what on a source right now, with each
grant's last use (docs/api.md#effective-access, docs/usage.md)."""

from __future__ import annotations

from typing import Any

from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from ..errors import InvalidInput, NotPermitted
from ..selectors.access_report import REFUSAL, report_grants, report_rows, report_sources
from .serializers_usage import EffectiveAccessRowSerializer
from .views import ApiViewMixin


class EffectiveAccessViewSet(ApiViewMixin, viewsets.GenericViewSet):
    """Officers, governance admins and auditors see every grant in force on the source; a dataset's
    owners and stewards those of their datasets; anyone else is refused (403). A page holds up to
    `page_size` grants; a portal Role's grant gives one row per member in force."""

    serializer_class = EffectiveAccessRowSerializer
    filter_backends: list[Any] = []

    @extend_schema(
        summary="Effective access on a source, with last use",
        parameters=[
            OpenApiParameter(
                "source",
                {"type": "string", "minLength": 1},
                required=True,
                description="The source's name (as in /sources/).",
            ),
        ],
    )
    def list(self, request: Request) -> Response:
        sources = report_sources(request.user)
        if not sources.exists():
            raise NotPermitted(REFUSAL)
        name = request.query_params.get("source")
        if not name:
            raise InvalidInput("source: the name of a data source is required.", field="source")
        source = sources.filter(name=name).first()
        if source is None:
            raise Http404(f"No source named {name} that you may see.")
        now = timezone.now()
        grants = report_grants(request.user, source, now=now)
        page = self.paginate_queryset(grants)
        rows = list(report_rows(page if page is not None else grants, now=now))
        data = self.get_serializer(rows, many=True).data
        return self.get_paginated_response(data) if page is not None else Response(data)
