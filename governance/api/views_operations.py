"""The long operations the API starts (202 + Location): the status a caller polls."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import mixins, viewsets

from accounts.roles import sees_everything

from ..models import Operation
from .serializers_operations import OperationSerializer
from .views import ApiViewMixin


class OperationViewSet(ApiViewMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """One long operation (a catalog sync, a reconcile) and how far it got: `state` goes queued,
    running, then succeeded or failed; `done` of `total` count the current `stage`. Its starter,
    governance admins, officers and auditors see it; anyone else gets a 404."""

    serializer_class = OperationSerializer

    def get_queryset(self) -> QuerySet[Operation]:
        if getattr(self, "swagger_fake_view", False):
            return Operation.objects.none()
        user: Any = self.request.user
        rows = Operation.objects.select_related("source", "started_by")
        if sees_everything(user):
            return rows
        return rows.filter(started_by_id=user.pk)
