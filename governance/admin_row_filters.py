"""Admin for row filters and grantee attributes (docs/privacy.md "Row filters"). Saving calls the
services; an expression outside the grammar is a form error on `expression` naming the part."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from .admin_helpers import ServiceAdminMixin
from .errors import DomainError
from .models import GranteeAttributes, RowFilter
from .services import row_filters as services


class RowFilterForm(forms.ModelForm):
    class Meta:
        model = RowFilter
        fields = ["dataset", "name", "expression"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        dataset, expression = data.get("dataset"), data.get("expression")
        if dataset is not None and expression:
            try:
                services.row_filter_parse(dataset, expression)
            except DomainError as exc:
                self.add_error("expression", exc.message)
        return data


@admin.register(RowFilter)
class RowFilterAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = RowFilterForm
    list_display = ("name", "dataset", "expression", "updated_at")
    search_fields = ("name", "dataset__name", "expression")
    list_select_related = ("dataset", "dataset__source")
    autocomplete_fields = ("dataset",)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # requests and grants keep pointing at their filter

    def save_model(self, request: HttpRequest, obj: RowFilter, form: Any, change: bool) -> None:
        data = form.cleaned_data
        saved = self.call_service(
            request,
            lambda: services.row_filter_define(
                dataset=data["dataset"], name=data["name"], expression=data["expression"], actor=request.user
            ),
        )
        obj.pk = saved.pk if saved else None


class GranteeAttributesForm(forms.ModelForm):
    class Meta:
        model = GranteeAttributes
        fields = ["user", "values"]

    def clean_values(self) -> Any:
        values = self.cleaned_data.get("values")
        if not isinstance(values, dict):
            raise forms.ValidationError('A JSON object of names and values, e.g. {"tenant": "acme"}.')
        return values


@admin.register(GranteeAttributes)
class GranteeAttributesAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = GranteeAttributesForm
    list_display = ("user", "values", "updated_at")
    search_fields = ("user__username",)
    autocomplete_fields = ("user",)

    def save_model(self, request: HttpRequest, obj: GranteeAttributes, form: Any, change: bool) -> None:
        data = form.cleaned_data
        saved = self.call_service(
            request,
            lambda: services.grantee_attributes_set(user=data["user"], values=data["values"] or {}, actor=request.user),
        )
        obj.pk = saved.pk if saved else None
