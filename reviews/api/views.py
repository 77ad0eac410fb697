"""The review API (`/api/v1/reviews/`): campaigns (create, start, close, evidence CSV) and items
(decide one or many, delegate). Visibility is the selectors'; who may act is the services' (the
same checks as the portal and the admin: a reviewer decides only their items, never their own
access). A campaign or item outside what the caller sees answers 404."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import TokenScope
from accounts.roles import sees_everything
from governance.api.idempotency import idempotent
from governance.api.views import ApiViewMixin
from governance.errors import InvalidInput, NotFound, NotPermitted

from ..models import ReviewCampaign, ReviewItem
from ..selectors import campaigns_visible_to, items_of, review_items_visible_to
from ..services import campaigns as campaign_services
from ..services import decisions
from ..views import evidence_csv_response, evidence_pdf_response
from . import serializers as shapes


@extend_schema_view(
    create=extend_schema(
        request=shapes.ReviewCampaignCreateSerializer, responses={201: shapes.ReviewCampaignSerializer}
    ),
    start=extend_schema(request=None, responses=shapes.ReviewCampaignSerializer),
    close=extend_schema(request=None, responses=shapes.ReviewCampaignSerializer),
    evidence=extend_schema(
        summary="The campaign's evidence: every item, decision and verification, and the audit checkpoint",
        responses={(200, "text/csv"): OpenApiTypes.STR},
    ),
    evidence_pdf=extend_schema(
        summary="The campaign's evidence pack as PDF: the evidence rows, the scope and the audit checkpoint",
        responses={(200, "application/pdf"): OpenApiTypes.BINARY},
    ),
)
class ReviewCampaignViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """Access review campaigns, with the number of items and of decisions."""

    serializer_class = shapes.ReviewCampaignSerializer
    ordering_fields = ["created_at", "deadline_at", "name"]
    scopes = {"create": TokenScope.ADMIN, "start": TokenScope.ADMIN, "close": TokenScope.ADMIN}

    def get_queryset(self) -> QuerySet[ReviewCampaign]:
        if getattr(self, "swagger_fake_view", False):
            return ReviewCampaign.objects.none()
        return campaigns_visible_to(self.request.user).order_by("-created_at", "-pk")

    def _fresh(self, pk: int) -> dict[str, Any]:
        return self.get_serializer(self.get_queryset().get(pk=pk)).data

    def create(self, request: Request) -> Response:
        shape = shapes.ReviewCampaignCreateSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        data = dict(shape.validated_data)
        if data["dataset_owner"] is not None:
            owner = get_user_model().objects.filter(username=data["dataset_owner"]).first()
            if owner is None:
                raise InvalidInput(f"There is no user {data['dataset_owner']!r}.", field="dataset_owner")
            data["dataset_owner"] = owner
        campaign = campaign_services.review_campaign_create(actor=request.user, **data)
        return Response(self._fresh(campaign.pk), status=status.HTTP_201_CREATED)

    @action(detail=True, methods=["post"])
    @idempotent
    def start(self, request: Request, pk: str | None = None) -> Response:
        campaign = self.get_object()
        campaign_services.review_campaign_start(campaign=campaign.pk, actor=request.user)
        return Response(self._fresh(campaign.pk))

    @action(detail=True, methods=["post"])
    @idempotent
    def close(self, request: Request, pk: str | None = None) -> Response:
        campaign = self.get_object()
        campaign_services.review_campaign_close(campaign=campaign.pk, actor=request.user)
        return Response(self._fresh(campaign.pk))

    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def evidence(self, request: Request, pk: str | None = None) -> HttpResponse:
        campaign = self.get_object()
        if not sees_everything(request.user):
            raise NotPermitted("Review evidence is for security officers, governance admins and auditors.")
        return evidence_csv_response(campaign)

    @action(detail=True, methods=["get"], url_path="evidence-pdf", pagination_class=None, filter_backends=[])
    def evidence_pdf(self, request: Request, pk: str | None = None) -> HttpResponse:
        campaign = self.get_object()
        if not sees_everything(request.user):
            raise NotPermitted("Review evidence is for security officers, governance admins and auditors.")
        return evidence_pdf_response(campaign, request)


@extend_schema_view(
    decide=extend_schema(request=shapes.ItemDecisionSerializer, responses=shapes.ReviewItemSerializer),
    decide_many=extend_schema(
        operation_id="reviews_items_decide_many",
        summary="Decide many items the same way: all of them or none",
        request=shapes.BulkItemDecisionSerializer,
        responses=shapes.ReviewItemSerializer(many=True),
    ),
    delegate=extend_schema(request=shapes.DelegateSerializer, responses=shapes.ReviewItemSerializer),
)
class ReviewItemViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """Review items: all of them for officers, admins and auditors; a reviewer's own otherwise.
    Decisions accept an `Idempotency-Key` header."""

    serializer_class = shapes.ReviewItemSerializer
    ordering_fields = ["id", "decided_at"]
    scopes = {"decide": TokenScope.APPROVE, "decide_many": TokenScope.APPROVE, "delegate": TokenScope.APPROVE}

    def get_queryset(self) -> QuerySet[ReviewItem]:
        if getattr(self, "swagger_fake_view", False):
            return ReviewItem.objects.none()
        return review_items_visible_to(self.request.user)

    @action(detail=True, methods=["post"])
    @idempotent
    def decide(self, request: Request, pk: str | None = None) -> Response:
        item = self.get_object()
        shape = shapes.ItemDecisionSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        decisions.review_item_decide(item=item.pk, actor=request.user, **shape.validated_data)
        return Response(self.get_serializer(self.get_queryset().get(pk=item.pk)).data)

    @action(detail=False, methods=["post"], url_path="decide", filter_backends=[], pagination_class=None)
    @idempotent
    def decide_many(self, request: Request) -> Response:
        shape = shapes.BulkItemDecisionSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        data = dict(shape.validated_data)
        ids = list(dict.fromkeys(data.pop("ids")))
        visible = set(self.get_queryset().filter(pk__in=ids).values_list("pk", flat=True))
        for pk in ids:
            if pk not in visible:
                raise NotFound(f"Review item #{pk} is not among the items you may see.", field="ids", id=pk)
        decisions.review_items_decide(ids=ids, actor=request.user, **data)
        fresh = {i.pk: i for i in self.get_queryset().filter(pk__in=ids)}
        return Response(self.get_serializer([fresh[pk] for pk in ids], many=True).data)

    @action(detail=True, methods=["post"])
    @idempotent
    def delegate(self, request: Request, pk: str | None = None) -> Response:
        item = self.get_object()
        shape = shapes.DelegateSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        to = get_user_model().objects.filter(username=shape.validated_data["to"], is_active=True).first()
        if to is None:
            raise InvalidInput(f"There is no active user {shape.validated_data['to']!r}.", field="to")
        decisions.review_item_delegate(item=item.pk, actor=request.user, to=to, comment=shape.validated_data["comment"])
        # The item may have left the caller's view (a reviewer who delegated it): answer it as it is now.
        return Response(self.get_serializer(items_of(ReviewItem.objects.filter(pk=item.pk)).get()).data)
