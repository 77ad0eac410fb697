"""The permission matrix, read-only in the portal (owners see their datasets; officers, admins and
auditors see all). The admin's copy (governance.admin_matrix) renders the same template with the
approve, deny and revoke forms in each cell."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, QueryDict
from django.middleware.csrf import get_token
from django.shortcuts import render

from ..models import Classification, DataSource
from ..selectors.matrix import (
    DATASETS_PER_PAGE,
    MAX_PER_PAGE,
    Matrix,
    MatrixFilters,
    may_view_matrix,
    permission_matrix,
)
from .matrix_cells import rendered_rows


class MatrixFilterForm(forms.Form):
    rows = forms.ChoiceField(choices=[("roles", "Roles"), ("people", "People")], required=False, label="Rows")
    principal = forms.CharField(required=False, max_length=100, label="Role or person")
    dataset = forms.CharField(required=False, max_length=200, label="Dataset")
    source = forms.CharField(required=False, max_length=100, label="Source")
    classification = forms.SlugField(required=False, label="Classification")
    page = forms.IntegerField(required=False, min_value=1, max_value=100_000)
    principal_page = forms.IntegerField(required=False, min_value=1, max_value=100_000)
    per_page = forms.IntegerField(required=False, min_value=1, max_value=MAX_PER_PAGE)

    def filters(self) -> MatrixFilters:
        data = self.cleaned_data if self.is_valid() else {}
        return MatrixFilters(
            rows=data.get("rows") or "roles",
            principal=data.get("principal") or "",
            dataset=data.get("dataset") or "",
            source=data.get("source") or "",
            classification=data.get("classification") or "",
            page=data.get("page") or 1,
            principal_page=data.get("principal_page") or 1,
            per_page=data.get("per_page") or DATASETS_PER_PAGE,
        )


def matrix_context(request: HttpRequest, *, actions: bool) -> dict[str, Any]:
    """Everything the matrix template needs, for the portal and the admin alike."""
    form = MatrixFilterForm(request.GET)
    matrix: Matrix = permission_matrix(request.user, form.filters())
    query = QueryDict(mutable=True)
    for key, value in request.GET.lists():
        if key not in ("page", "principal_page"):
            query.setlist(key, value)
    here = request.get_full_path()
    return {
        "matrix": matrix,
        "rows": rendered_rows(matrix, actions=actions, csrf_token=get_token(request), here=here),
        "actions": actions,
        "filter_form": form,
        "errors": form.errors,
        "query": query.urlencode(),
        "sources": DataSource.objects.order_by("name").values_list("name", flat=True),
        "classifications": Classification.objects.order_by("rank").values_list("slug", "name"),
    }


@login_required
def matrix(request: HttpRequest) -> HttpResponse:
    if not may_view_matrix(request.user):
        return render(request, "portal/forbidden.html", {"nav": "matrix", "what": "the permission matrix"}, status=403)
    context = {**matrix_context(request, actions=False), "nav": "matrix"}
    return render(request, "portal/matrix.html", context)
