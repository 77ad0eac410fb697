"""The workbench's catalog pages: classifications, data sources, datasets with their columns and
lineage, column tags. Registered on import by governance/admin.py; every save and action calls a
service."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import FilteredSelectMultiple
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html, format_html_join

from accounts.models import User
from accounts.roles import administers_sources

from . import durations, policy
from .admin_credentials import rotate_credentials
from .admin_health import SourceHealthFilter, source_health_display  # registers SourceHealth
from .admin_helpers import ManagedInCodeAdminMixin, ServiceAdminMixin
from .admin_operations import start_operations
from .errors import DomainError
from .forms import HoursOrDaysField
from .models import (
    ApprovalStage,
    Classification,
    Column,
    ColumnTag,
    Dataset,
    DataSource,
    OperationKind,
    TagStatus,
    TreatmentRule,
    tag_label,
)
from .secrets import check_reference
from .selectors.catalog import dataset_stewards, datasets_stewarded_by
from .selectors.lineage import dataset_lineage
from .selectors.stewardship import reasons
from .services import catalog as catalog_services
from .services import classifications as classification_services
from .services import treatments as treatment_services
from .services.stewardship import column_tags_decide

# --- classifications ----------------------------------------------------------------------------


class ClassificationForm(forms.ModelForm):
    approval_stages = forms.MultipleChoiceField(
        choices=ApprovalStage.choices, required=False, widget=forms.CheckboxSelectMultiple
    )

    min_duration = HoursOrDaysField(label="Shortest duration", help_text="Shortest grant a request may ask for.")
    max_duration = HoursOrDaysField(label="Longest duration", help_text="Longest grant a request may ask for.")

    class Meta:
        model = Classification
        fields = classification_services.CLASSIFICATION_FIELDS

    def clean(self) -> dict[str, Any]:
        """The duration rules in words on their fields (the service checks them again)."""
        data = super().clean() or {}
        shortest, longest = data.get("min_duration"), data.get("max_duration")
        floor = durations.floor()
        for name, value in (("min_duration", shortest), ("max_duration", longest)):
            if value is not None and value < floor:
                self.add_error(name, f"At least {durations.words(floor)}.")
        if shortest and longest and shortest > longest:
            self.add_error(
                "min_duration",
                f"The shortest duration ({durations.words(shortest)}) is longer than the longest "
                f"({durations.words(longest)}).",
            )
        return data


class TreatmentRuleForm(forms.ModelForm):
    class Meta:
        model = TreatmentRule
        fields = ("tag", "treatment", "is_default", "stage")

    def validate_unique(self) -> None:
        """The rules are replaced as a set by the service, which checks them together (a default
        moving from one row to another is not a conflict with the row as stored)."""


class TreatmentRuleInline(admin.TabularInline):
    """Column treatments allowed for this classification's PII (docs/policy.md#column-treatments)."""

    model = TreatmentRule
    form = TreatmentRuleForm
    extra = 1
    verbose_name = "column treatment rule"


@admin.register(Classification)
class ClassificationAdmin(ManagedInCodeAdminMixin, ServiceAdminMixin, admin.ModelAdmin):
    form = ClassificationForm
    inlines = [TreatmentRuleInline]
    list_display = (
        "name",
        "rank",
        "stages",
        "min_duration_text",
        "max_duration_text",
        "justification_required",
        "auto_approve",
        "pii_requires_explicit_request",
        "terminate_sessions_on_revoke",
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

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not TreatmentRule:
            super().save_formset(request, form, formset, change)
            return
        rules = [f.cleaned_data for f in formset.forms if f.cleaned_data and not f.cleaned_data.get("DELETE")]
        self.call_service(
            request,
            lambda: treatment_services.treatment_rules_set(
                classification=form.instance, actor=request.user, rules=rules
            ),
        )
        # What the admin's change message reads from a formset it saved itself (the audit event
        # written by the service is the record).
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []


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
    credential_rotation_days = forms.IntegerField(
        required=False,
        min_value=0,
        help_text="Rotate the portal's own password on this source every N days (0: never; empty: 30).",
    )

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
            "credential_rotation_days",
            "rotate_secret_ref",
        ]

    def clean_password_ref(self) -> str:
        """A malformed reference is an error on the field itself (the service checks it again)."""
        ref = str(self.cleaned_data.get("password_ref") or "")
        try:
            return check_reference(ref) if ref else ""
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_credential_rotation_days(self) -> int:
        value = self.cleaned_data.get("credential_rotation_days")
        if value is None:  # left empty (or not sent): the model's default
            return int(DataSource._meta.get_field("credential_rotation_days").get_default())
        return int(value)


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
    readonly_fields = (
        "has_password",
        "credential_changed_at",
        "last_synced_at",
        "last_sync_error",
        "created_at",
        "updated_at",
    )
    actions = ("sync_catalog", rotate_credentials)

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
    def sync_catalog(self, request: HttpRequest, queryset: QuerySet[DataSource]) -> HttpResponse | None:
        """Start a sync of each source in a worker and show its progress (admin_operations)."""
        return start_operations(request, queryset.order_by("name"), kind=OperationKind.CATALOG_SYNC)


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
class DatasetAdmin(ManagedInCodeAdminMixin, ServiceAdminMixin, admin.ModelAdmin):
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
        if not administers_sources(request.user):
            fields += ["declared_classification", "owner"]
        return fields

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [*self.readonly_fields, "description", "tags", "declared_classification", "owner", "stewards"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if not administers_sources(request.user):
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
        if administers_sources(request.user):
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
    """The review queue of PII suggestions in the workbench. Owners and stewards see (and decide)
    the tags of their datasets only, like in the portal's Suggestions page; officers, governance
    admins and auditors see all (auditors decide nothing: the services refuse them)."""

    list_display = ("column_name", "dataset", "tag", "status", "confidence", "why", "decided_by")
    list_filter = ("status", "tag", "column__dataset__classification", "column__dataset__source")
    list_select_related = ("column__dataset__source", "decided_by")
    search_fields = ("column__name", "column__dataset__name", "column__dataset__schema")
    actions = ("confirm_tags", "reject_tags")
    readonly_fields = (
        "column",
        "tag",
        "status",
        "why",
        "confidence",
        "evaluated_at",
        "decided_by",
        "decided_at",
        "created_at",
    )
    fields = readonly_fields

    def _stewards_some(self, request: HttpRequest) -> bool:
        user = request.user
        if not (user.is_active and user.is_staff):
            return False
        cached = getattr(request, "_stewards_some", None)
        if cached is None:
            cached = datasets_stewarded_by(user).exists()
            request._stewards_some = cached  # type: ignore[attr-defined]
        return bool(cached)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return super().has_module_permission(request) or self._stewards_some(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if super().has_view_permission(request, obj):
            return True
        if obj is None:
            return self._stewards_some(request)
        return policy.holds_dataset_perm(request.user, obj.column.dataset, "steward_dataset")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # every field is read-only: decisions are the actions, through the services

    def get_queryset(self, request: HttpRequest) -> QuerySet[ColumnTag]:
        qs = super().get_queryset(request)
        if self.has_view_permission_by_model(request):
            return qs
        return qs.filter(column__dataset__in=datasets_stewarded_by(request.user).values("pk"))

    def has_view_permission_by_model(self, request: HttpRequest) -> bool:
        return super().has_view_permission(request) or super().has_change_permission(request)

    @admin.display(description="column", ordering="column__name")
    def column_name(self, obj: ColumnTag) -> str:
        return obj.column.name

    @admin.display(description="dataset")
    def dataset(self, obj: ColumnTag) -> str:
        return f"{obj.column.dataset.source.name}:{obj.column.dataset.qualified_name}"

    @admin.display(description="why")
    def why(self, obj: ColumnTag) -> str:
        return format_html_join("", "<div>{}</div>", ((line,) for line in reasons(obj))) or "—"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def _decide(self, request: HttpRequest, queryset: QuerySet[ColumnTag], decision: str) -> None:
        """All the selected tags or none (services.stewardship); the refusal names the tag."""
        ids = list(queryset.values_list("pk", flat=True))
        try:
            decided = column_tags_decide(ids=ids, decision=decision, actor=request.user)
        except DomainError as exc:
            messages.error(request, f"{exc.message} Nothing was decided.")
        else:
            verb = "confirmed" if decision == "confirm" else "rejected"
            messages.success(request, f"{len(decided)} tag(s) {verb}.")

    @admin.action(description="Confirm selected tags")
    def confirm_tags(self, request: HttpRequest, queryset: QuerySet[ColumnTag]) -> None:
        self._decide(request, queryset, "confirm")

    @admin.action(description="Reject selected tags")
    def reject_tags(self, request: HttpRequest, queryset: QuerySet[ColumnTag]) -> None:
        self._decide(request, queryset, "reject")
