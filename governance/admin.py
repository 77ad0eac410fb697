"""Django admin as the approval workbench. Every save and action calls a service."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import FilteredSelectMultiple
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from accounts.models import User
from accounts.roles import SECURITY_OFFICERS, administers_sources, is_governance_admin, operates_provisioning

from . import (
    admin_drift,  # noqa: F401 - registers the DriftFinding admin
    policy,
)
from .admin_health import JobWaitingFilter, SourceHealthFilter, source_health_display  # registers SourceHealth
from .admin_helpers import ServiceAdminMixin, confirmation_page, run_bulk, run_service
from .admin_jit import GrantJitAdminMixin
from .admin_matrix import GrantMatrixAdminMixin
from .errors import DomainError
from .forms import AccessRequestSubmitForm, access_request_submit_from_form
from .models import (
    AccessRequest,
    Approval,
    ApprovalStage,
    Classification,
    Column,
    ColumnTag,
    Dataset,
    DataSource,
    Grant,
    JobStatus,
    ProvisioningJob,
    RequestState,
    Role,
    RoleMembership,
    SourcePrincipal,
    TagStatus,
    tag_label,
)
from .selectors.catalog import dataset_stewards
from .selectors.lineage import dataset_lineage
from .selectors.requests import access_requests_awaiting, access_requests_visible_to, grants_visible_to
from .services import catalog as catalog_services
from .services import classifications as classification_services
from .services import grants as grant_services
from .services import provisioning as provisioning_services
from .services import requests as request_services
from .services import roles as role_services


def _is_admin(user: Any) -> bool:
    return bool(user.is_superuser or is_governance_admin(user))


# --- classifications ----------------------------------------------------------------------------


class ClassificationForm(forms.ModelForm):
    approval_stages = forms.MultipleChoiceField(
        choices=ApprovalStage.choices, required=False, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = Classification
        fields = classification_services.CLASSIFICATION_FIELDS


@admin.register(Classification)
class ClassificationAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = ClassificationForm
    list_display = (
        "name",
        "rank",
        "stages",
        "max_duration_days",
        "justification_required",
        "auto_approve",
        "pii_requires_explicit_request",
    )
    readonly_fields = ("slug", "rank")

    @admin.display(description="approval stages")
    def stages(self, obj: Classification) -> str:
        return " → ".join(ApprovalStage(s).label for s in obj.approval_stages) or "none (auto-approve)"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the levels are fixed; their policy is edited

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Classification, form: Any, change: bool) -> None:
        fields = {
            name: form.cleaned_data[name]
            for name in form.changed_data
            if name in classification_services.CLASSIFICATION_FIELDS
        }
        self.call_service(
            request,
            lambda: classification_services.classification_update(classification=obj, actor=request.user, **fields),
        )


# --- data sources ---------------------------------------------------------------------------------


class DataSourceForm(forms.ModelForm):
    """The password is write-only: never rendered back, kept when left empty."""

    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave empty to keep the stored password.",
    )
    clear_password = forms.BooleanField(required=False, help_text="Remove the stored password.")

    class Meta:
        model = DataSource
        fields = [
            "name",
            "kind",
            "description",
            "host",
            "port",
            "database",
            "username",
            "password",
            "clear_password",
            "sslmode",
            "ssl_root_cert",
            "password_ref",
            "aws_account_id",
            "aws_region",
            "aws_endpoint_url",
            "include_schemas",
            "default_classification",
            "owner",
            "provisioning_enabled",
            "role_prefix",
            "auto_fix_drift",
        ]


@admin.register(DataSource)
class DataSourceAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = DataSourceForm
    list_display = (
        "name",
        "kind",
        "host",
        "database",
        "dataset_count",
        "last_synced_at",
        "sync_status",
        "health_state",
    )
    list_filter = ("kind", SourceHealthFilter)
    list_select_related = ("health",)
    search_fields = ("name", "host", "database", "description")
    readonly_fields = ("has_password", "last_synced_at", "last_sync_error", "created_at", "updated_at")
    actions = ("sync_catalog",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[DataSource]:
        return super().get_queryset(request).annotate(n_datasets=Count("datasets"))

    @admin.display(description="datasets", ordering="n_datasets")
    def dataset_count(self, obj: Any) -> int:
        return obj.n_datasets

    @admin.display(description="last sync")
    def sync_status(self, obj: DataSource) -> str:
        if obj.last_sync_error:
            return "failed: " + obj.last_sync_error[:80]
        return "ok" if obj.last_synced_at else "never"

    @admin.display(description="health")
    def health_state(self, obj: DataSource) -> str:
        return source_health_display(obj)

    @admin.display(boolean=True, description="password stored")
    def has_password(self, obj: DataSource) -> bool:
        return obj.has_password

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # datasets, grants and audit rows point at sources

    def save_model(self, request: HttpRequest, obj: DataSource, form: Any, change: bool) -> None:
        data = form.cleaned_data
        fields = {k: data[k] for k in catalog_services.DATASOURCE_FIELDS if k in data}
        password = data.get("password") or None
        if data.get("clear_password"):
            password = ""
        if change:
            changed = {k: v for k, v in fields.items() if k in form.changed_data}
            self.call_service(
                request,
                lambda: catalog_services.datasource_update(
                    source=obj, actor=request.user, password=password, **changed
                ),
            )
            return
        name = fields.pop("name")
        created = self.call_service(
            request,
            lambda: catalog_services.datasource_create(
                actor=request.user, name=name, password=password or "", **fields
            ),
        )
        obj.pk = created.pk if created else None

    def has_sync_permission(self, request: HttpRequest) -> bool:
        return administers_sources(request.user)

    @admin.action(description="Sync catalog from the selected sources", permissions=["sync"])
    def sync_catalog(self, request: HttpRequest, queryset: QuerySet[DataSource]) -> None:
        from .services.sync import datasource_sync

        for source in queryset:
            try:
                result = datasource_sync(source=source, actor=request.user)
            except DomainError as exc:
                messages.error(request, f"{source.name}: {exc.message}")
            else:
                messages.success(request, f"{source.name}: {result.summary()}")


# --- datasets, columns, tags --------------------------------------------------------------------


class ColumnInline(admin.TabularInline):
    model = Column
    extra = 0
    can_delete = False
    fields = ("ordinal", "name", "data_type", "is_nullable", "tag_list", "is_present")
    readonly_fields = fields
    ordering = ("ordinal",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Column]:
        return super().get_queryset(request).prefetch_related("tags")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="PII / PHI tags")
    def tag_list(self, obj: Column) -> str:
        tags = [(t.get_tag_display(), t.status) for t in obj.tags.all() if t.status != TagStatus.REJECTED]
        tags += [(tag_label(e["tag"]), f"inherited from {e['column']}") for e in obj.inherited_from]
        return format_html_join(", ", "{} ({})", tags) or "—"


class DatasetForm(forms.ModelForm):
    stewards = forms.ModelMultipleChoiceField(
        queryset=User.objects.filter(is_active=True),
        required=False,
        widget=FilteredSelectMultiple("stewards", is_stacked=False),
        help_text="Stewards confirm column tags and approve the owner stage, like the owner.",
    )

    class Meta:
        model = Dataset
        fields = ["description", "tags", "declared_classification", "owner"]
        labels = {"declared_classification": "Classification (declared)"}
        help_texts = {
            "declared_classification": "The dataset's own level. The effective one is the strictest of this and "
            "of everything the dataset reads (views).",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["stewards"].initial = list(dataset_stewards(self.instance))

    def clean_declared_classification(self) -> Classification:
        new = self.cleaned_data["declared_classification"]
        if self.instance.pk:
            floor = catalog_services.minimum_classification(self.instance)
            if floor is not None and new.rank < floor.rank:
                raise forms.ValidationError(
                    f"This dataset has confirmed sensitive columns and must stay at least {floor.name}."
                )
        return new


class PiiFilter(admin.SimpleListFilter):
    title = "PII"
    parameter_name = "pii"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("confirmed", "Confirmed PII"), ("suggested", "Suggestions to review"), ("none", "No PII")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "suggested":
            return queryset.filter(columns__tags__status=value).distinct()
        with_pii = Dataset.objects.filter(policy.pii_q("columns__")).values("pk")
        if value == "confirmed":  # own confirmed tags, or inherited through a view
            return queryset.filter(pk__in=with_pii)
        if value == "none":
            return queryset.exclude(pk__in=with_pii)
        return queryset


@admin.register(Dataset)
class DatasetAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = DatasetForm
    list_display = ("qualified", "source", "kind", "classification", "owner", "pii_columns", "is_present")
    list_filter = ("classification", "source", "kind", "is_present", PiiFilter)
    list_select_related = ("source", "classification", "owner")
    search_fields = ("schema", "name", "description", "tags")
    readonly_fields = (
        "source",
        "schema",
        "name",
        "kind",
        "is_present",
        "vanished_at",
        "last_seen_at",
        "classification",
        "lineage",
    )
    inlines = (ColumnInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Dataset]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_pii=Count("columns", filter=Q(columns__is_present=True) & policy.pii_q("columns__"), distinct=True)
            )
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(self.readonly_fields)
        if not _is_admin(request.user):
            fields += ["declared_classification", "owner"]
        return fields

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [*self.readonly_fields, "description", "tags", "declared_classification", "owner", "stewards"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if not _is_admin(request.user):
            # Replaces the admin's own exclude list, which holds the read-only fields (some of them,
            # like `lineage`, are not model fields at all): keep them out of the form too.
            kwargs["exclude"] = ["stewards", *self.get_readonly_fields(request, obj)]
        return super().get_form(request, obj, change=change, **kwargs)

    @admin.display(description="dataset", ordering="name")
    def qualified(self, obj: Dataset) -> str:
        return obj.qualified_name

    @admin.display(description="PII columns", ordering="n_pii")
    def pii_columns(self, obj: Any) -> int:
        return obj.n_pii

    @admin.display(description="lineage")
    def lineage(self, obj: Dataset) -> str:
        """What the dataset reads and what reads it, and what the sync could not trace."""
        facts = dataset_lineage(obj)
        lines = [
            format_html("reads {} ({}){}", u.label, u.classification, f" through {u.via}" if u.via else "")
            for u in facts.upstream
        ]
        lines += [format_html("read by {} ({})", d.label, d.classification) for d in facts.downstream]
        lines += [format_html("{}", note) for note in obj.lineage_notes]
        lines += [
            format_html(
                "SECURITY DEFINER function {} (owner {}{}) reads it",
                r["function"],
                r["owner"],
                ", anyone may call it" if r.get("public_execute") else "",
            )
            for r in obj.definer_risks
        ]
        return format_html_join("", "<div>{}</div>", ((line,) for line in lines)) or "—"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # datasets come from catalog sync

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # vanished datasets are flagged, never deleted

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if _is_admin(request.user):
            return True
        if obj is None:
            return super().has_change_permission(request, obj)
        return policy.holds_dataset_perm(request.user, obj, "steward_dataset")

    def save_model(self, request: HttpRequest, obj: Dataset, form: Any, change: bool) -> None:
        fields = {k: form.cleaned_data[k] for k in catalog_services.DATASET_FIELDS if k in form.changed_data}

        def save() -> None:
            # One transaction: a refused steward change also undoes the field edits before it.
            with transaction.atomic():
                if fields:
                    catalog_services.dataset_update(dataset=obj, actor=request.user, **fields)
                if "stewards" in form.cleaned_data and "stewards" in form.changed_data:
                    catalog_services.dataset_set_stewards(
                        dataset=obj, users=form.cleaned_data["stewards"], actor=request.user
                    )

        self.call_service(request, save)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass  # stewards are saved by the service; columns are read-only


@admin.register(ColumnTag)
class ColumnTagAdmin(admin.ModelAdmin):
    """The steward's review queue of PII suggestions."""

    list_display = ("column_name", "dataset", "tag", "status", "confidence", "evidence", "decided_by")
    list_filter = ("status", "tag", "column__dataset__classification", "column__dataset__source")
    list_select_related = ("column__dataset__source", "decided_by")
    search_fields = ("column__name", "column__dataset__name", "column__dataset__schema")
    actions = ("confirm_tags", "reject_tags")
    readonly_fields = ("column", "tag", "status", "evidence", "confidence", "decided_by", "decided_at", "created_at")

    @admin.display(description="column", ordering="column__name")
    def column_name(self, obj: ColumnTag) -> str:
        return obj.column.name

    @admin.display(description="dataset")
    def dataset(self, obj: ColumnTag) -> str:
        return f"{obj.column.dataset.source.name}:{obj.column.dataset.qualified_name}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Confirm selected tags")
    def confirm_tags(self, request: HttpRequest, queryset: QuerySet[ColumnTag]) -> None:
        run_bulk(
            request,
            queryset,
            lambda t: catalog_services.column_tag_confirm(tag=t, actor=request.user),
            verb="tag(s) confirmed",
            label=str,
        )

    @admin.action(description="Reject selected tags")
    def reject_tags(self, request: HttpRequest, queryset: QuerySet[ColumnTag]) -> None:
        run_bulk(
            request,
            queryset,
            lambda t: catalog_services.column_tag_reject(tag=t, actor=request.user),
            verb="tag(s) rejected",
            label=str,
        )


# --- roles ----------------------------------------------------------------------------------------


@admin.register(Role)
class RoleAdmin(ServiceAdminMixin, admin.ModelAdmin):
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
    list_display = ("role", "user", "starts_at", "ends_at", "removed_at", "added_by")
    list_filter = ("role",)
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
        days = obj.duration.total_seconds() / 86400
        return f"{days:g} day{'s' if days != 1 else ''} from approval"

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
                    access_request=access_request, approver=request.user, stage=stage, comment=comment
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

    @staticmethod
    def _plan(obj: AccessRequest) -> list[str]:
        """The exact SQL this request would run on its target once approved (PostgreSQL sources)."""
        from .models import SourceKind
        from .provisioning import plan_text

        if obj.dataset.source.kind != SourceKind.POSTGRESQL:
            return []
        return plan_text(obj)

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
            "plan": self._plan(obj),
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
            with provisioning_services.batched_publishing():
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
class ApprovalAdmin(admin.ModelAdmin):
    list_display = ("request", "stage", "decision", "approver", "decided_at")
    list_filter = ("stage", "decision")
    list_select_related = ("request__dataset__source", "request__grantee_user", "request__grantee_role", "approver")
    search_fields = ("approver__username", "comment")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Approval]:
        return super().get_queryset(request).filter(request__in=access_requests_visible_to(request.user).values("pk"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


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
    )
    list_filter = (ActiveGrantFilter, "status", "level", "dataset__classification")
    list_select_related = ("dataset__source", "dataset__classification", "grantee_user", "grantee_role", "revoked_by")
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
    )
    fields = readonly_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Grant]:
        return grants_visible_to(request.user)

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


# --- provisioning -----------------------------------------------------------------------------------


class OverdueRevocationFilter(admin.SimpleListFilter):
    title = "overdue"
    parameter_name = "overdue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("revocations", "Revocations overdue (access still in place)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "revocations":
            return queryset.filter(pk__in=provisioning_services.overdue_revocations().values("pk"))
        return queryset


@admin.register(ProvisioningJob)
class ProvisioningJobAdmin(admin.ModelAdmin):
    """Every apply/revoke with its attempts, error and the SQL it ran; failed jobs can be retried."""

    list_display = ("id", "action", "state", "grant_display", "attempts", "duration_ms", "queued_at", "short_error")
    list_filter = (OverdueRevocationFilter, JobWaitingFilter, "status", "action", "grant__dataset__source")
    list_select_related = ("grant__dataset__source", "grant__grantee_user", "grant__grantee_role")
    search_fields = ("last_error", "grant__dataset__name", "grant__grantee_user__username")
    actions = ("retry_jobs",)
    readonly_fields = (
        "grant",
        "action",
        "status",
        "attempts",
        "last_error",
        "sql",
        "plan_digest",
        "queued_at",
        "started_at",
        "finished_at",
        "next_attempt_at",
        "waiting_since",
        "published_at",
        "lease_expires_at",
        "duration_ms",
    )
    fields = readonly_fields
    show_full_result_count = False

    @admin.display(description="grant or membership")
    def grant_display(self, obj: ProvisioningJob) -> str:
        g = obj.grant
        if g is None:
            return f"membership #{obj.membership_id} on source #{obj.source_id}"
        who = f"role {g.grantee_role.name}" if g.grantee_role else (g.grantee_user.username if g.grantee_user else "")
        return f"#{g.pk} {g.level} on {g.dataset.source.name}:{g.dataset.qualified_name} for {who}"

    @admin.display(description="status", ordering="status")
    def state(self, obj: ProvisioningJob) -> str:
        if obj.waiting_since is not None and obj.status == JobStatus.QUEUED:
            return f"waiting for its source since {obj.waiting_since:%Y-%m-%d %H:%M:%S}"
        return obj.get_status_display()

    @admin.display(description="error")
    def short_error(self, obj: ProvisioningJob) -> str:
        return obj.last_error[:120]

    @admin.display(description="SQL executed")
    def sql(self, obj: ProvisioningJob) -> str:
        return format_html("<pre>{}</pre>", "\n".join(obj.statements))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        # Officers and governance admins act; auditors (and owners) see the page, not the action.
        return operates_provisioning(request.user)

    @admin.action(description="Retry the selected failed jobs", permissions=["retry"])
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[ProvisioningJob]) -> None:
        run_bulk(
            request,
            queryset,
            lambda j: provisioning_services.provisioning_job_retry(job=j, actor=request.user),
            verb="job(s) queued again",
            label=lambda j: f"Job #{j.pk}",
        )


@admin.register(SourcePrincipal)
class SourcePrincipalAdmin(admin.ModelAdmin):
    """Which target role stands for whom. Managed rows are created by the engine."""

    list_display = ("db_role", "source", "user", "role", "managed", "created_at")
    list_filter = ("source", "managed")
    list_select_related = ("source", "user", "role")
    search_fields = ("db_role", "user__username", "role__name")
    readonly_fields = ("source", "user", "role", "db_role", "managed", "created_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
