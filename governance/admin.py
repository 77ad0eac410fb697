"""Django admin as the approval workbench. Every save and action calls a service.

This module holds roles, the approval workbench (requests, approvals) and grants; the catalog pages
are in admin_catalog, provisioning in admin_provisioning (with admin_health), drift in admin_drift.
Importing this module registers them all."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from accounts.models import User
from accounts.roles import SECURITY_OFFICERS

from . import (
    admin_catalog,  # noqa: F401 - registers classifications, sources, datasets, column tags
    admin_credentials,  # noqa: F401 - registers the CredentialRotation admin
    admin_drift,  # noqa: F401 - registers the DriftFinding admin
    admin_operations,  # noqa: F401 - registers the Operation admin (syncs, reconciles in the background)
    admin_provisioning,  # noqa: F401 - registers provisioning jobs and source principals
    admin_row_filters,  # noqa: F401 - registers row filters and grantee attributes
    policy,
)
from .admin_helpers import (
    ManagedInCodeAdminMixin,
    ReadOnlyAdminMixin,
    ServiceAdminMixin,
    confirmation_page,
    run_bulk,
    run_service,
)
from .admin_jit import GrantJitAdminMixin
from .admin_matrix import GrantMatrixAdminMixin
from .forms import AccessRequestSubmitForm, access_request_submit_from_form
from .models import (
    AccessRequest,
    Approval,
    ApprovalStage,
    Classification,
    Grant,
    RequestState,
    Role,
    RoleMembership,
)
from .selectors.lineage import grants_approved_under_weaker_policy
from .selectors.plans import plan_preview
from .selectors.requests import access_requests_awaiting, access_requests_visible_to, grants_visible_to
from .selectors.usage import WITH_USAGE, last_use_of
from .services import grants as grant_services
from .services import requests as request_services
from .services import roles as role_services
from .services.publishing import batched_publishing

# --- roles ----------------------------------------------------------------------------------------


@admin.register(Role)
class RoleAdmin(ManagedInCodeAdminMixin, ServiceAdminMixin, admin.ModelAdmin):
    list_display = ("name", "kind", "owner", "member_count")
    list_filter = ("kind",)
    list_select_related = ("owner",)
    search_fields = ("name", "description")
    fields = ("name", "kind", "description", "owner")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Role]:
        now = timezone.now()
        active = Q(memberships__removed_at__isnull=True, memberships__starts_at__lte=now) & (
            Q(memberships__ends_at__isnull=True) | Q(memberships__ends_at__gt=now)
        )
        return super().get_queryset(request).annotate(n_members=Count("memberships", filter=active))

    @admin.display(description="active members", ordering="n_members")
    def member_count(self, obj: Any) -> int:
        return obj.n_members

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Role, form: Any, change: bool) -> None:
        data = form.cleaned_data
        if change:
            changed = {k: data[k] for k in form.changed_data if k in role_services.ROLE_FIELDS}
            self.call_service(request, lambda: role_services.role_update(role=obj, actor=request.user, **changed))
            return
        created = self.call_service(
            request,
            lambda: role_services.role_create(
                actor=request.user,
                name=data["name"],
                kind=data["kind"],
                description=data["description"],
                owner=data["owner"],
            ),
        )
        obj.pk = created.pk if created else None


@admin.register(RoleMembership)
class RoleMembershipAdmin(ServiceAdminMixin, admin.ModelAdmin):
    list_display = ("role", "user", "managed_by", "starts_at", "ends_at", "removed_at", "added_by")
    list_filter = ("managed_by", "role")
    list_select_related = ("role", "user", "added_by")
    search_fields = ("user__username", "role__name")
    fields = ("role", "user", "ends_at", "reason")
    actions = ("end_memberships",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ("role", "user", "ends_at", "reason") if obj is not None else ()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: RoleMembership, form: Any, change: bool) -> None:
        if change:
            return
        data = form.cleaned_data
        created = self.call_service(
            request,
            lambda: role_services.role_member_add(
                role=data["role"], user=data["user"], actor=request.user, ends_at=data["ends_at"], reason=data["reason"]
            ),
        )
        obj.pk = created.pk if created else None

    @admin.action(description="End the selected memberships now")
    def end_memberships(self, request: HttpRequest, queryset: QuerySet[RoleMembership]) -> None:
        run_bulk(
            request,
            queryset,
            lambda m: role_services.role_member_remove(membership=m, actor=request.user),
            verb="membership(s) ended",
            label=str,
        )


# --- access requests: the approval workbench ------------------------------------------------------


class WaitingForMeFilter(admin.SimpleListFilter):
    title = "inbox"
    parameter_name = "inbox"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("mine", "Waiting for my decision")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "mine":
            return queryset.filter(pk__in=access_requests_awaiting(request.user).values("pk"))
        return queryset


class ApprovalInline(admin.TabularInline):
    model = Approval
    extra = 0
    can_delete = False
    fields = ("stage", "decision", "approver", "comment", "decided_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AccessRequest)
class AccessRequestAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "dataset_name",
        "classification",
        "level",
        "grantee",
        "requester",
        "state",
        "current_stage",
        "submitted_at",
    )
    list_filter = (WaitingForMeFilter, "state", "current_stage", "level", "dataset__classification")
    list_select_related = ("dataset__classification", "dataset__source", "requester", "grantee_user", "grantee_role")
    search_fields = (
        "dataset__name",
        "dataset__schema",
        "requester__username",
        "grantee_user__username",
        "justification",
    )
    date_hierarchy = "submitted_at"
    actions = ("approve_selected", "deny_selected")
    inlines = (ApprovalInline,)
    fields = (
        "requester",
        "grantee_user",
        "grantee_role",
        "dataset",
        "level",
        "covered_columns",
        "justification",
        "duration_display",
        "jit_credentials",
        "row_filter_text",
        "state",
        "current_stage",
        "submitted_at",
        "decided_at",
        "decision_reason",
    )
    readonly_fields = fields
    change_form_template = "admin/governance/accessrequest/change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[AccessRequest]:
        return access_requests_visible_to(request.user)

    @admin.display(description="dataset", ordering="dataset__name")
    def dataset_name(self, obj: AccessRequest) -> str:
        return f"{obj.dataset.source.name}:{obj.dataset.qualified_name}"

    @admin.display(description="classification", ordering="dataset__classification__rank")
    def classification(self, obj: AccessRequest) -> str:
        return obj.dataset.classification.name

    @admin.display(description="grantee")
    def grantee(self, obj: AccessRequest) -> str:
        return obj.grantee_display

    @admin.display(description="duration")
    def duration_display(self, obj: AccessRequest) -> str:
        return f"{obj.duration_text} from approval"

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # decisions go through the buttons, which call the services

    # Submitting goes through its own view so that policy refusals come back as form errors.
    def get_urls(self) -> list[Any]:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("submit/", self.admin_site.admin_view(self.submit_view), name=f"{prefix}_submit"),
            path("<int:object_id>/decide/", self.admin_site.admin_view(self.decide_view), name=f"{prefix}_decide"),
            *super().get_urls(),
        ]

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:governance_accessrequest_submit"))

    def submit_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            return HttpResponseRedirect(reverse("admin:index"))
        form = AccessRequestSubmitForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            created = access_request_submit_from_form(form, requester=request.user)
            if created is not None:
                messages.success(request, f"Request #{created.pk} submitted: {created.get_state_display()}.")
                return HttpResponseRedirect(reverse("admin:governance_accessrequest_change", args=[created.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": "Request access",
            "opts": self.opts,
            "form": form,
            "classifications": [
                (c, " → ".join(ApprovalStage(st).label for st in c.approval_stages) or "automatic")
                for c in Classification.objects.all()
            ],
        }
        return TemplateResponse(request, "admin/governance/accessrequest/submit.html", context)

    def decide_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        access_request = get_object_or_404(self.get_queryset(request), pk=object_id)
        decision = request.POST.get("decision")
        stage = request.POST.get("stage") or None
        # An unknown stage is passed on: the service refuses it as invalid input (and records it).
        stage_label = ApprovalStage(stage).label.lower() if stage in ApprovalStage.values else "current"
        comment = request.POST.get("comment", "")
        if decision == "approve":
            run_service(
                request,
                lambda: request_services.access_request_approve(
                    access_request=access_request,
                    approver=request.user,
                    stage=stage,
                    comment=comment,
                    epsilon=policy.parse_epsilon(request.POST.get("epsilon", "")),
                ),
                success=f"Request #{access_request.pk}: {stage_label} stage approved.",
            )
        elif decision == "deny":
            run_service(
                request,
                lambda: request_services.access_request_deny(
                    access_request=access_request, approver=request.user, stage=stage, comment=comment
                ),
                success=f"Request #{access_request.pk} denied.",
            )
        elif decision == "cancel":
            run_service(
                request,
                lambda: request_services.access_request_cancel(
                    access_request=access_request, actor=request.user, reason=comment
                ),
                success=f"Request #{access_request.pk} cancelled.",
            )
        else:
            messages.error(request, "Choose approve, deny or cancel.")
        return HttpResponseRedirect(reverse("admin:governance_accessrequest_change", args=[access_request.pk]))

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        obj = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if obj is not None:
            extra["decision_panel"] = self._decision_panel(request, obj)
        return super().change_view(request, object_id, form_url, extra_context=extra)

    def _decision_panel(self, request: HttpRequest, obj: AccessRequest) -> dict[str, Any]:
        """The policy that applies, its stages, who may act on each, and whether this user may."""
        decided = {a.stage: a for a in obj.approvals.select_related("approver")}
        stages = []
        for stage in obj.required_stages:
            if stage == ApprovalStage.OWNER:
                who = list(
                    User.objects.filter(
                        Q(datasetuserobjectpermission__content_object=obj.dataset)
                        & Q(datasetuserobjectpermission__permission__codename="approve_access")
                    ).values_list("username", flat=True)
                )
            else:
                who = list(
                    User.objects.filter(groups__name=SECURITY_OFFICERS, is_active=True).values_list(
                        "username", flat=True
                    )
                )
            stages.append(
                {
                    "stage": stage,
                    "label": ApprovalStage(stage).label,
                    "approval": decided.get(stage),
                    "current": stage == obj.current_stage,
                    "who": who,
                }
            )
        refusal = None
        if obj.state == RequestState.PENDING and obj.current_stage:
            refusal = policy.approver_refusal(user=request.user, access_request=obj, stage=obj.current_stage)
        return {
            "policy": obj.policy,
            "stages": stages,
            "may_decide": obj.state == RequestState.PENDING and refusal is None,
            "refusal": refusal,
            "may_cancel": obj.state == RequestState.PENDING
            and request.user.pk in {obj.requester_id, obj.grantee_user_id},
            "decide_url": reverse("admin:governance_accessrequest_decide", args=[obj.pk]),
            "plan": plan_preview(obj),
        }

    def _bulk_decision(self, request: HttpRequest, queryset: QuerySet[AccessRequest], decision: str) -> Any:
        if request.POST.get("confirm"):
            comment = request.POST.get("comment", "")

            def shown_stage(r: AccessRequest) -> str | None:
                # The stage the confirmation page showed: if someone decided it since, the service
                # answers with a conflict instead of approving a stage this approver never saw.
                return request.POST.get(f"stage_{r.pk}") or r.current_stage or None

            if decision == "approve":
                call = lambda r: request_services.access_request_approve(  # noqa: E731
                    access_request=r, approver=request.user, stage=shown_stage(r), comment=comment
                )
            else:
                call = lambda r: request_services.access_request_deny(  # noqa: E731
                    access_request=r, approver=request.user, stage=shown_stage(r), comment=comment
                )
            # Approving many requests at once: their grants reach the targets in batches.
            with batched_publishing():
                run_bulk(request, queryset, call, verb=f"request(s) {decision}d", label=lambda r: f"Request #{r.pk}")
            return None
        return confirmation_page(
            self,
            request,
            queryset,
            title=f"{decision.capitalize()} {queryset.count()} request(s)",
            action=f"{decision}_selected",
            verb=decision,
            comment_required=decision == "deny",
        )

    @admin.action(description="Approve the current stage of the selected requests")
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[AccessRequest]) -> Any:
        return self._bulk_decision(request, queryset, "approve")

    @admin.action(description="Deny the selected requests")
    def deny_selected(self, request: HttpRequest, queryset: QuerySet[AccessRequest]) -> Any:
        return self._bulk_decision(request, queryset, "deny")


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("request", "stage", "decision", "approver", "decided_at")
    list_filter = ("stage", "decision")
    list_select_related = ("request__dataset__source", "request__grantee_user", "request__grantee_role", "approver")
    search_fields = ("approver__username", "comment")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Approval]:
        return super().get_queryset(request).filter(request__in=access_requests_visible_to(request.user).values("pk"))


class ActiveGrantFilter(admin.SimpleListFilter):
    title = "in force"
    parameter_name = "in_force"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "In force now"), ("expiring", "Ending within 7 days"), ("no", "Ended")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        if self.value() == "yes":
            return queryset.filter(pk__in=Grant.objects.active().values("pk"))
        if self.value() == "expiring":
            return queryset.filter(
                pk__in=Grant.objects.active().filter(ends_at__lte=now + dt.timedelta(days=7)).values("pk")
            )
        if self.value() == "no":
            return queryset.exclude(pk__in=Grant.objects.active().values("pk"))
        return queryset


class WeakerPolicyFilter(admin.SimpleListFilter):
    title = "needs review"
    parameter_name = "review"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("weaker", "Approved under a weaker classification than today's")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "weaker":
            return queryset.filter(pk__in=grants_approved_under_weaker_policy().values("pk"))
        return queryset


@admin.register(Grant)
class GrantAdmin(GrantMatrixAdminMixin, GrantJitAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "dataset_name",
        "classification",
        "level",
        "grantee",
        "status",
        "starts_at",
        "ends_at",
        "revoked_at",
        "last_use",
        "break_glass",
    )
    list_filter = (ActiveGrantFilter, WeakerPolicyFilter, "status", "level", "dataset__classification")
    list_select_related = (
        "dataset__source",
        "dataset__classification",
        "grantee_user",
        "grantee_role",
        "revoked_by",
        "source_request",
        *WITH_USAGE,
    )
    search_fields = ("dataset__name", "dataset__schema", "grantee_user__username", "grantee_role__name")
    date_hierarchy = "starts_at"
    actions = ("revoke_selected",)
    readonly_fields = (
        "grantee_user",
        "grantee_role",
        "dataset",
        "level",
        "columns",
        "status",
        "starts_at",
        "ends_at",
        "revoked_at",
        "revoked_by",
        "revoke_reason",
        "reason",
        "source_request",
        "jit_login",
        "last_use",
        "break_glass",
    )
    fields = readonly_fields

    @admin.display(description="break-glass", boolean=True)
    def break_glass(self, obj: Grant) -> bool:
        """Granted at once by an on-call engineer, without approval (docs/break-glass.md)."""
        return obj.emergency

    def get_queryset(self, request: HttpRequest) -> QuerySet[Grant]:
        return grants_visible_to(request.user).select_related(*WITH_USAGE)

    @admin.display(description="last used")
    def last_use(self, obj: Grant) -> str:
        """When the grant was last used on its target, or since when no use was seen, or why its
        source cannot tell; flagged grants suggest revoking (docs/usage.md)."""
        use = last_use_of(obj)
        return f"{use.text}. {use.suggestion}" if use.flagged else use.text

    @admin.display(description="dataset", ordering="dataset__name")
    def dataset_name(self, obj: Grant) -> str:
        return f"{obj.dataset.source.name}:{obj.dataset.qualified_name}"

    @admin.display(description="classification")
    def classification(self, obj: Grant) -> str:
        return obj.dataset.classification.name

    @admin.display(description="grantee")
    def grantee(self, obj: Grant) -> str:
        return (
            f"role {obj.grantee_role.name}"
            if obj.grantee_role
            else str(obj.grantee_user.username if obj.grantee_user else "")
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # grants come from approved requests

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # grants are never deleted

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Revoke the selected grants")
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[Grant]) -> Any:
        if request.POST.get("confirm"):
            reason = request.POST.get("comment", "")
            run_bulk(
                request,
                queryset,
                lambda g: grant_services.grant_revoke(grant=g, actor=request.user, reason=reason),
                verb="grant(s) revoked",
                label=lambda g: f"Grant #{g.pk}",
            )
            return None
        return confirmation_page(
            self,
            request,
            queryset,
            title=f"Revoke {queryset.count()} grant(s)",
            action="revoke_selected",
            verb="revoke",
            comment_required=True,
        )
