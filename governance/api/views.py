"""API views: authenticate, check the token's scope, take the queryset from a selector, validate the
shape of the input, call a service, serialize. Nothing here decides policy or writes a row itself.

Visibility rule (docs/api.md): a list shows only what the caller may see; an object outside that
set answers 404, the same as one that does not exist, so ids cannot be probed. Catalog metadata
(datasets, classifications, roles) is visible to every signed-in user, as in the admin.
"""

from __future__ import annotations

from typing import Any

from django.contrib.postgres.aggregates import ArrayAgg
from django.db.models import BooleanField, ExpressionWrapper, Prefetch, Q, QuerySet, Value, prefetch_related_objects
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import TokenScope
from accounts.roles import sees_everything
from audit.context import authenticate as context_authenticate

from ..errors import DomainError, InvalidInput, NotPermitted
from ..models import (
    AccessRequest,
    Approval,
    Classification,
    Column,
    ColumnTag,
    Dataset,
    DriftFinding,
    Grant,
    JobStatus,
    ProvisioningJob,
    RequestState,
    Role,
    RoleMembership,
    RowFilter,
    TagStatus,
)
from ..models.grants import in_force_q
from ..policy import pii_q
from ..selectors.catalog import datasets_approvable_by, datasets_visible_to
from ..selectors.lineage import dataset_lineage
from ..selectors.plans import plan_preview
from ..selectors.requests import access_requests_awaiting, access_requests_visible_to, grants_visible_to
from ..services import grants as grant_services
from ..services import requests as request_services
from ..services.engine.jobs import provisioning_job_retry
from ..services.grant_ends import grant_end_change
from . import filters, serializers
from .idempotency import idempotent


class ApiViewMixin:
    """Common to every API view: the audit context learns the token's user."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """DRF's `initial()` with the throttle checked before the permissions: a token hammering
        calls it may not make is slowed down before each refusal writes its audit event."""
        self.format_kwarg = self.get_format_suffix(**kwargs)  # type: ignore[attr-defined]
        neg = self.perform_content_negotiation(request)  # type: ignore[attr-defined]
        request.accepted_renderer, request.accepted_media_type = neg
        version, scheme = self.determine_version(request, *args, **kwargs)  # type: ignore[attr-defined]
        request.version, request.versioning_scheme = version, scheme
        self.perform_authentication(request)  # type: ignore[attr-defined]
        if request.user.is_authenticated:
            context_authenticate(request.user.pk)
        self.check_throttles(request)  # type: ignore[attr-defined]
        self.check_permissions(request)  # type: ignore[attr-defined]
        refuse_nul_in_query(request)


def refuse_nul_in_query(request: Request) -> None:
    """No query parameter may hold a NUL character (the schema says so): PostgreSQL text cannot
    hold one, and a filter, an ordering or a cursor that silently dropped it would answer another
    question than the one asked."""
    for name, values in request.query_params.lists():
        if "\x00" in name or any("\x00" in value for value in values):
            raise InvalidInput(f"{name.replace(chr(0), '')}: NUL characters are not allowed.", field=name)


def _swagger(view: Any) -> bool:
    return bool(getattr(view, "swagger_fake_view", False))


# --- catalog ---------------------------------------------------------------------------------------


class ClassificationViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """The classification levels and the approval policy each one carries."""

    serializer_class = serializers.ClassificationSerializer
    lookup_field = "slug"
    queryset = Classification.objects.order_by("rank")
    pagination_class = None


def _pii_columns() -> Any:
    """The names of a dataset's columns holding sensitive data (own or inherited: policy.pii_q)."""
    return ArrayAgg(
        "columns__name",
        filter=Q(columns__is_present=True) & pii_q("columns__"),
        distinct=True,
        default=Value([]),
    )


@extend_schema_view(
    list=extend_schema(summary="Search and browse the catalog"),
    access=extend_schema(summary="Who can access this dataset (owners, approvers, officers, auditors)"),
)
class DatasetViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """Datasets with their classification, owner and PII columns. Every signed-in user may browse
    the catalog (people must find data before they can ask for it)."""

    filterset_class = filters.DatasetFilter
    ordering_fields = ["name", "schema", "updated_at"]

    def get_queryset(self) -> QuerySet[Dataset]:
        qs = (
            datasets_visible_to(self.request.user)
            .select_related("declared_classification")
            .annotate(pii_columns=_pii_columns())
            .order_by("source__name", "schema", "name", "pk")
        )
        if self.action == "retrieve":
            confirmed = ColumnTag.objects.filter(status=TagStatus.CONFIRMED)
            qs = qs.prefetch_related(
                Prefetch(
                    "columns",
                    queryset=Column.objects.filter(is_present=True)
                    .order_by("ordinal")
                    .prefetch_related(Prefetch("tags", queryset=confirmed, to_attr="confirmed_tags")),
                    to_attr="present_columns",
                )
            )
        return qs

    def get_serializer_class(self) -> Any:
        return serializers.DatasetDetailSerializer if self.action == "retrieve" else serializers.DatasetSerializer

    def get_object(self) -> Dataset:
        dataset: Dataset = super().get_object()
        if self.action == "retrieve":
            dataset.lineage = dataset_lineage(dataset)  # type: ignore[attr-defined]  # read by the serializer
        return dataset

    @extend_schema(responses=serializers.GrantSerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=[])  # the catalog's filters are not for grants
    def access(self, request: Request, pk: str | None = None) -> Response:
        dataset = self.get_object()
        user = request.user
        may = sees_everything(user) or datasets_approvable_by(user).filter(pk=dataset.pk).exists()
        if not may:
            raise NotPermitted(
                "Only the dataset's owners and stewards, officers, admins and auditors see who has access."
            )
        grants = (
            _grants_with_in_force(Grant.objects.active().filter(dataset=dataset))
            .select_related("grantee_user", "grantee_role", "dataset__source", "revoked_by", "source_request")
            .order_by("pk")
        )
        page = self.paginate_queryset(grants)
        data = serializers.GrantSerializer(page if page is not None else grants, many=True).data
        return self.get_paginated_response(data) if page is not None else Response(data)


class RoleViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """Portal roles (groups of people or service accounts that can be granted access) and their
    current members."""

    serializer_class = serializers.RoleSerializer
    lookup_field = "slug"

    def get_queryset(self) -> QuerySet[Role]:
        members = RoleMembership.objects.active().select_related("user").order_by("user__username")
        return (
            Role.objects.select_related("owner")
            .prefetch_related(Prefetch("memberships", queryset=members, to_attr="active_memberships"))
            .order_by("slug")
        )


# --- access requests --------------------------------------------------------------------------------


def _with_grant(qs: QuerySet[AccessRequest]) -> QuerySet[AccessRequest]:
    return qs.select_related("grant")


@extend_schema_view(
    list=extend_schema(
        summary="Access requests I may see",
        parameters=[
            OpenApiParameter(
                "view",
                str,
                enum=["all", "mine", "awaiting"],
                description="mine: made by or for me; awaiting: waiting for my decision; all (default): all I may see.",
            )
        ],
    ),
    create=extend_schema(
        request=serializers.AccessRequestCreateSerializer, responses={201: serializers.AccessRequestDetailSerializer}
    ),
    approve=extend_schema(request=serializers.ApproveSerializer, responses=serializers.AccessRequestDetailSerializer),
    deny=extend_schema(request=serializers.DenySerializer, responses=serializers.AccessRequestDetailSerializer),
    cancel=extend_schema(request=serializers.CancelSerializer, responses=serializers.AccessRequestDetailSerializer),
)
class AccessRequestViewSet(
    ApiViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Request access; follow, approve, deny or cancel requests. Creates and decisions accept an
    `Idempotency-Key` header."""

    filterset_class = filters.AccessRequestFilter
    scopes = {
        "create": TokenScope.REQUEST,
        "cancel": TokenScope.REQUEST,
        "approve": TokenScope.APPROVE,
        "deny": TokenScope.APPROVE,
    }

    def get_queryset(self) -> QuerySet[AccessRequest]:
        user = self.request.user
        if _swagger(self):
            return AccessRequest.objects.none()
        view = self.request.query_params.get("view", "all")
        if self.action == "list" and view == "awaiting":
            qs = access_requests_awaiting(user)
        else:
            qs = access_requests_visible_to(user)
            if self.action == "list" and view == "mine":
                qs = qs.filter(Q(requester=user) | Q(grantee_user=user))
            elif self.action == "list" and view not in ("all", "mine"):
                raise InvalidInput("view must be all, mine or awaiting.", field="view")
        if self.action == "retrieve":
            qs = qs.prefetch_related("approvals__approver")
        return _with_grant(qs).order_by("-submitted_at", "-pk")

    def get_serializer_class(self) -> Any:
        if self.action == "retrieve":
            return serializers.AccessRequestDetailSerializer
        if self.action == "create":
            return serializers.AccessRequestCreateSerializer
        return serializers.AccessRequestSerializer

    def _detail(self, obj: AccessRequest, status_code: int = status.HTTP_200_OK, *, created: bool = False) -> Response:
        """The detail of a request a service just changed. A new one comes with its requester,
        grantee and dataset loaded by the submit service: only its approvals are read; after a
        decision the row is read again with its relations."""
        context: dict[str, Any] = {}
        if created:
            if obj.state == RequestState.PENDING:
                context["approvals"] = []  # nobody has decided a request submitted a moment ago
            else:
                prefetch_related_objects(
                    [obj], Prefetch("approvals", queryset=Approval.objects.select_related("approver"))
                )
        else:
            obj = (
                _with_grant(
                    AccessRequest.objects.select_related(
                        "requester", "grantee_user", "grantee_role", "dataset__source", "dataset__classification"
                    )
                )
                .prefetch_related("approvals__approver")
                .get(pk=obj.pk)
            )
        data = serializers.AccessRequestDetailSerializer(obj, context={**self._detail_context(obj), **context}).data
        headers = {"Location": f"/api/v1/access-requests/{obj.pk}/"} if status_code == status.HTTP_201_CREATED else {}
        return Response(data, status=status_code, headers=headers)

    @staticmethod
    def _detail_context(obj: AccessRequest) -> dict[str, Any]:
        plan = plan_preview(obj)
        grant = getattr(obj, "grant", None) if obj.state == RequestState.APPROVED else None
        job = ProvisioningJob.objects.filter(grant=grant).order_by("-queued_at", "-pk").first() if grant else None
        return {"plan": plan, "job": job}

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        obj = self.get_object()
        return Response(serializers.AccessRequestDetailSerializer(obj, context=self._detail_context(obj)).data)

    @idempotent
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        shape = serializers.AccessRequestCreateSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        attrs = shape.validated_data
        dataset = Dataset.objects.filter(pk=attrs["dataset"]).select_related("source", "classification").first()
        if dataset is None:
            raise InvalidInput(f"Dataset {attrs['dataset']} does not exist.", field="dataset")
        columns = list(dataset.columns.filter(name__in=attrs["columns"], is_present=True)) if attrs["columns"] else []
        unknown = sorted(set(attrs["columns"]) - {c.name for c in columns})
        if unknown:
            raise InvalidInput(f"Unknown column(s) of {dataset}: {', '.join(unknown)}.", field="columns")
        row_filter = None
        if attrs.get("row_filter") is not None:
            row_filter = RowFilter.objects.filter(pk=attrs["row_filter"], dataset=dataset).first()
            if row_filter is None:
                raise InvalidInput(
                    f"Row filter {attrs['row_filter']} is not a filter of {dataset}.", field="row_filter"
                )
        role = None
        if attrs.get("grantee_role"):
            role = Role.objects.filter(slug=attrs["grantee_role"]).first()
            if role is None:
                raise InvalidInput(f"Role {attrs['grantee_role']!r} does not exist.", field="grantee_role")
        try:
            req = request_services.access_request_submit(
                requester=request.user,
                dataset=dataset,
                level=attrs["level"],
                justification=attrs["justification"],
                duration=shape.duration(attrs),
                longest_allowed=attrs["longest_allowed"],
                columns=columns,
                grantee_role=role,
                jit_credentials=attrs["jit_credentials"],
                treatments=attrs["treatments"],
                row_filter=row_filter,
            )
        except DomainError as exc:
            # The service speaks of "duration": name the field this call used.
            given = "duration_hours" if attrs.get("duration_hours") is not None else "duration_days"
            if exc.field == "duration":
                exc.field = given
            if isinstance(exc.details.get("errors"), dict) and "duration" in exc.details["errors"]:
                exc.details["errors"][given] = exc.details["errors"].pop("duration")
            raise
        return self._detail(req, status.HTTP_201_CREATED, created=True)

    def _decision(self, request: Request, shape_class: Any = serializers.DecisionSerializer) -> dict[str, Any]:
        shape = shape_class(data=request.data)
        shape.is_valid(raise_exception=True)
        return dict(shape.validated_data)

    @action(detail=True, methods=["post"])
    @idempotent
    def approve(self, request: Request, pk: str | None = None) -> Response:
        obj = self.get_object()
        attrs = self._decision(request, serializers.ApproveSerializer)
        req = request_services.access_request_approve(
            access_request=obj,
            approver=request.user,
            stage=attrs["stage"],
            comment=attrs["comment"],
            epsilon=attrs["epsilon"],
        )
        return self._detail(req)

    @action(detail=True, methods=["post"])
    @idempotent
    def deny(self, request: Request, pk: str | None = None) -> Response:
        obj = self.get_object()
        attrs = self._decision(request, serializers.DenySerializer)
        req = request_services.access_request_deny(
            access_request=obj, approver=request.user, stage=attrs["stage"], comment=attrs["comment"]
        )
        return self._detail(req)

    @action(detail=True, methods=["post"])
    @idempotent
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        obj = self.get_object()
        shape = serializers.CancelSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        req = request_services.access_request_cancel(
            access_request=obj, actor=request.user, reason=shape.validated_data["reason"]
        )
        return self._detail(req)


# --- grants ------------------------------------------------------------------------------------------


def _grants_with_in_force(qs: QuerySet[Grant]) -> QuerySet[Grant]:
    return qs.annotate(in_force=ExpressionWrapper(in_force_q(), output_field=BooleanField()))


@extend_schema_view(
    list=extend_schema(summary="Grants I may see; ?user= answers 'what can this user access'"),
    revoke=extend_schema(request=serializers.ReasonSerializer, responses=serializers.GrantSerializer),
    end=extend_schema(
        summary="Move the end of a grant in force (earlier: whoever may revoke it; later: its approvers)",
        request=serializers.GrantEndSerializer,
        responses=serializers.GrantSerializer,
    ),
)
class GrantViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """Grants (who may access which data, until when). Revoking accepts an `Idempotency-Key`."""

    serializer_class = serializers.GrantSerializer
    filterset_class = filters.GrantFilter
    scopes = {"revoke": TokenScope.APPROVE, "end": TokenScope.APPROVE}

    def get_queryset(self) -> QuerySet[Grant]:
        if _swagger(self):
            return Grant.objects.none()
        return _grants_with_in_force(grants_visible_to(self.request.user)).order_by("-starts_at", "-pk")

    @action(detail=True, methods=["post"])
    @idempotent
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        grant = self.get_object()
        shape = serializers.ReasonSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        grant_services.grant_revoke(grant=grant, actor=request.user, reason=shape.validated_data["reason"])
        return Response(self.get_serializer(self.get_queryset().get(pk=grant.pk)).data)

    @action(detail=True, methods=["post"])
    @idempotent
    def end(self, request: Request, pk: str | None = None) -> Response:
        grant = self.get_object()
        shape = serializers.GrantEndSerializer(data=request.data)
        shape.is_valid(raise_exception=True)
        grant_end_change(
            grant=grant,
            ends_at=shape.validated_data["ends_at"],
            actor=request.user,
            reason=shape.validated_data["reason"],
        )
        return Response(self.get_serializer(self.get_queryset().get(pk=grant.pk)).data)


# --- provisioning ------------------------------------------------------------------------------------


@extend_schema_view(retry=extend_schema(request=None, responses=serializers.ProvisioningJobSerializer))
class ProvisioningJobViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """Provisioning jobs of the grants I may see; governance admins and officers retry failed ones."""

    serializer_class = serializers.ProvisioningJobSerializer
    filterset_class = filters.ProvisioningJobFilter
    scopes = {"retry": TokenScope.ADMIN}

    def get_queryset(self) -> QuerySet[ProvisioningJob]:
        if _swagger(self):
            return ProvisioningJob.objects.none()
        qs = ProvisioningJob.objects.select_related("grant__dataset__source", "source")
        user = self.request.user
        if not sees_everything(user):
            qs = qs.filter(grant__in=grants_visible_to(user).values("pk"))
        return qs.order_by("-queued_at", "-pk")

    @action(detail=True, methods=["post"])
    @idempotent
    def retry(self, request: Request, pk: str | None = None) -> Response:
        job = self.get_object()
        provisioning_job_retry(job=job, actor=request.user)
        return Response(self.get_serializer(self.get_queryset().get(pk=job.pk)).data)


class DriftFindingViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    """Drift the reconciler found: privileges on targets that disagree with the grants in force."""

    serializer_class = serializers.DriftFindingSerializer
    filterset_class = filters.DriftFindingFilter

    def get_queryset(self) -> QuerySet[DriftFinding]:
        if _swagger(self):
            return DriftFinding.objects.none()
        if not sees_everything(self.request.user):
            return DriftFinding.objects.none()
        return DriftFinding.objects.select_related("source", "resolved_by").order_by("-found_at", "-pk")


def job_status_counts() -> dict[str, int]:
    return {s: ProvisioningJob.objects.filter(status=s).count() for s in JobStatus.values}


def get_visible_request(user: Any, pk: int) -> AccessRequest:
    return get_object_or_404(access_requests_visible_to(user), pk=pk)
