"""The workbench's privacy pages: the owner's declaration of a dataset (saved through
privacy_policy_save, with its checks and audit event) and the queries (read only: budgets change
only by queries)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from governance.admin_helpers import ReadOnlyAdminMixin, ServiceAdminMixin

from .forms import DeclarationLines
from .models import PrivacyBudget, PrivacyPolicy, PrivacyQuery
from .services.policy import privacy_policy_save


class PrivacyPolicyAdminForm(DeclarationLines, forms.ModelForm):
    aggregates_only = forms.BooleanField(required=False, initial=True, label="Aggregates only")

    class Meta:
        model = PrivacyPolicy
        fields = ["dataset", "aggregates_only", "unit_column", "contribution_limit", "bounds", "categoricals"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial.update(DeclarationLines.lines_of(self.instance))
            self.initial["aggregates_only"] = self.instance.dataset.aggregates_only


@admin.register(PrivacyPolicy)
class PrivacyPolicyAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = PrivacyPolicyAdminForm
    list_display = ("dataset", "unit_column", "contribution_limit", "updated_at")
    search_fields = ("dataset__schema", "dataset__name")
    raw_id_fields = ("dataset",)

    def save_model(self, request: HttpRequest, obj: PrivacyPolicy, form: Any, change: bool) -> None:
        data = form.cleaned_data
        saved = self.call_service(
            request,
            lambda: privacy_policy_save(
                dataset=data["dataset"],
                actor=request.user,
                aggregates_only=data["aggregates_only"],
                unit_column=data["unit_column"],
                contribution_limit=data["contribution_limit"],
                bounds=data["bounds"],
                categoricals=data["categoricals"],
            ),
        )
        if saved is not None:
            obj.pk = saved.pk

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # unmark "aggregates only" instead: the declaration stays as a record


@admin.register(PrivacyBudget)
class PrivacyBudgetAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("grant", "spent", "updated_at")
    raw_id_fields = ("grant",)


@admin.register(PrivacyQuery)
class PrivacyQueryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "grant", "actor", "kind", "column", "epsilon", "status", "answer")
    list_filter = ("kind", "status")
    raw_id_fields = ("grant", "actor")
