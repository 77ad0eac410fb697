"""The portal's forms: an aggregate query, and the owner's privacy policy of a dataset (bounds
and categories as one line per column, so the whole declaration is one form)."""

from __future__ import annotations

from typing import Any

from django import forms

from .models import PrivacyPolicy, QueryKind
from .numbers import plain
from .services.policy import Bound, Categories


class AggregateQueryForm(forms.Form):
    kind = forms.ChoiceField(choices=QueryKind.choices)
    column = forms.CharField(
        max_length=255, required=False, help_text="Sum and mean: a bounded column; histogram: a categorical one."
    )
    epsilon = forms.DecimalField(max_digits=12, decimal_places=6, min_value=0, help_text="At most what remains.")
    filter_column = forms.CharField(max_length=255, required=False, label="Only rows where column")
    filter_value = forms.CharField(max_length=255, required=False, label="equals")


class DeclarationLines(forms.Form):
    """Bounds and categories as one line per column; shared by the portal's form and the admin's."""

    bounds = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}), required=False, help_text="One per line: column lower upper"
    )
    categoricals = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}),
        required=False,
        help_text="One per line: column: category, category, ...",
    )

    @staticmethod
    def lines_of(policy: PrivacyPolicy | None) -> dict[str, str]:
        if policy is None:
            return {}
        return {
            "bounds": "\n".join(f"{b.column} {plain(b.lower)} {plain(b.upper)}" for b in policy.bounds.all()),
            "categoricals": "\n".join(f"{c.column}: {', '.join(c.categories)}" for c in policy.categoricals.all()),
        }

    def clean_bounds(self) -> list[Bound]:
        bounds = []
        for line in self.cleaned_data["bounds"].splitlines():
            if not line.strip():
                continue
            parts = line.rsplit(None, 2)
            if len(parts) != 3:
                raise forms.ValidationError(f"{line.strip()!r}: write column lower upper.")
            bounds.append(Bound(column=parts[0].strip(), lower=parts[1], upper=parts[2]))
        return bounds

    def clean_categoricals(self) -> list[Categories]:
        declared = []
        for line in self.cleaned_data["categoricals"].splitlines():
            if not line.strip():
                continue
            column, sep, rest = line.rpartition(":")
            if not sep or not column.strip():
                raise forms.ValidationError(f"{line.strip()!r}: write column: category, category.")
            declared.append(
                Categories(column=column.strip(), categories=[c.strip() for c in rest.split(",") if c.strip()])
            )
        return declared


class PrivacyPolicyForm(DeclarationLines):
    aggregates_only = forms.BooleanField(
        required=False, label="Only differentially private aggregates may be requested"
    )
    unit_column = forms.CharField(
        max_length=255, required=False, help_text="The column identifying a person; empty: each row."
    )
    contribution_limit = forms.IntegerField(
        min_value=1, max_value=1000, initial=1, help_text="The most rows one unit contributes."
    )
    field_order = ["aggregates_only", "unit_column", "contribution_limit", "bounds", "categoricals"]

    @staticmethod
    def initial_of(policy: PrivacyPolicy | None, aggregates_only: bool) -> dict[str, Any]:
        if policy is None:
            return {"aggregates_only": aggregates_only, "contribution_limit": 1}
        return {
            "aggregates_only": aggregates_only,
            "unit_column": policy.unit_column,
            "contribution_limit": policy.contribution_limit,
            **DeclarationLines.lines_of(policy),
        }
