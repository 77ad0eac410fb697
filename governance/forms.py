"""Forms shared by the admin workbench and the portal. They validate shape; the services decide."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.db.models import Q

from . import durations, policy
from .errors import DomainError
from .models import AccessLevel, AccessRequest, Column, Dataset, Role, RowFilter
from .selectors.requests import treatment_options_for
from .services import requests as request_services


class HoursOrDaysWidget(forms.MultiWidget):
    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        super().__init__([forms.NumberInput(attrs={"min": 1}), forms.Select(choices=durations.UNIT_CHOICES)], attrs)

    def decompress(self, value: Any) -> list[Any]:
        if isinstance(value, dt.timedelta):
            return list(durations.split(value))
        return [None, "days"]


class HoursOrDaysField(forms.MultiValueField):
    """A duration as a number and a unit (hours or days): "6 hours", "14 days"."""

    widget = HoursOrDaysWidget

    def __init__(self, **kwargs: Any) -> None:
        fields = (
            forms.IntegerField(min_value=1, max_value=durations.MAX_HOURS),
            forms.ChoiceField(choices=durations.UNIT_CHOICES),
        )
        super().__init__(fields=fields, require_all_fields=True, **kwargs)

    def compress(self, data_list: list[Any]) -> dt.timedelta | None:
        if not data_list or data_list[0] in (None, ""):
            return None
        return durations.of(data_list[0], data_list[1] or "days")


class AccessRequestSubmitForm(forms.Form):
    dataset = forms.ModelChoiceField(queryset=Dataset.objects.present().select_related("source", "classification"))
    level = forms.ChoiceField(choices=AccessLevel.choices, initial=AccessLevel.READ)
    columns = forms.ModelMultipleChoiceField(
        queryset=Column.objects.filter(is_present=True).select_related("dataset"),
        required=False,
        help_text="Leave empty for the whole table. PII columns of Restricted data are only granted when named here.",
    )
    duration = forms.IntegerField(
        min_value=1,
        max_value=durations.MAX_HOURS,
        required=False,
        label="Duration",
        help_text="How long you need access for, in hours or days, within the policy's limits.",
    )
    duration_unit = forms.ChoiceField(choices=durations.UNIT_CHOICES, initial="days", label="Unit")
    longest_allowed = forms.BooleanField(required=False, help_text="Ask for the longest duration the policy allows.")
    justification = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    grantee_role = forms.ModelChoiceField(
        queryset=Role.objects.all(), required=False, help_text="Request for a role instead of yourself."
    )
    jit_credentials = forms.BooleanField(
        label="Temporary database login",
        required=False,
        help_text="Also get a personal login on the database, valid until the access ends (not for roles).",
    )
    treatments = forms.CharField(
        required=False,
        label="Column treatments",
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="PII columns: one 'column=treatment' per line (raw, masked, pseudonymised, nulled); "
        "unnamed PII columns get the policy's default.",
    )
    row_filter = forms.ModelChoiceField(
        queryset=RowFilter.objects.all(),
        required=False,
        help_text="Only the rows this filter of the dataset's owner selects (docs: privacy, row filters).",
    )

    def __init__(self, data: Any = None, *args: Any, **kwargs: Any) -> None:
        if data is not None and not data.get("duration") and data.get("duration_days"):
            # The form's earlier shape (a number of days), still accepted from scripts and bookmarks.
            data = data.copy()
            data["duration"], data["duration_unit"] = data["duration_days"], "days"
        if data is not None and not data.get("duration_unit"):
            data = data.copy()
            data["duration_unit"] = "days"
        super().__init__(data, *args, **kwargs)

    def requested_duration(self) -> dt.timedelta | None:
        """The duration asked for (a valid form), or None when none was given."""
        amount = self.cleaned_data.get("duration")
        return durations.of(amount, self.cleaned_data["duration_unit"]) if amount else None

    def for_dataset(self, dataset: Dataset) -> AccessRequestSubmitForm:
        """The portal's form: the dataset is fixed, only its columns are offered."""
        self.fields["dataset"].queryset = Dataset.objects.filter(pk=dataset.pk)  # type: ignore[attr-defined]
        self.fields["dataset"].widget = forms.HiddenInput()
        columns = self.fields["columns"]
        columns.widget = forms.CheckboxSelectMultiple()  # before the queryset, which fills its choices
        columns.label_from_instance = lambda c: c.name  # type: ignore[attr-defined]
        columns.queryset = Column.objects.filter(dataset=dataset, is_present=True).order_by("ordinal")  # type: ignore[attr-defined]
        self.fields["row_filter"].queryset = RowFilter.objects.filter(dataset=dataset)  # type: ignore[attr-defined]
        self.initial.setdefault("dataset", dataset.pk)
        # One choice per PII column, limited to what the policy allows, its default preselected.
        self.fields["treatments"].widget = forms.HiddenInput()
        self.treatment_columns: dict[str, str] = {}
        names = list(columns.queryset.values_list("name", flat=True))  # type: ignore[attr-defined]
        for n, option in enumerate(treatment_options_for(dataset, names)):
            field = f"treatment_{n}"
            self.treatment_columns[field] = option.column
            self.fields[field] = forms.ChoiceField(
                label=f"Treatment of {option.column} ({', '.join(option.tags)})",
                choices=[(t, t + (" (needs another approval)" if option.stage_for(t) else "")) for t in option.allowed],
                initial=option.default,
                required=False,
            )
        return self

    def chosen_treatments(self) -> dict[str, str]:
        """Column -> treatment, from the per-column choices and the 'column=treatment' lines."""
        out: dict[str, str] = {}
        for line in (self.cleaned_data.get("treatments") or "").replace(",", "\n").splitlines():
            if line.strip():
                column, _, treatment = line.partition("=")
                out[column.strip()] = treatment.strip()
        offered = getattr(self, "treatment_columns", {})
        if offered:
            # Every PII column is offered a choice; only those the request covers are sent.
            covered = self._covered_columns()
            for field, column in offered.items():
                if self.cleaned_data.get(field) and column in covered:
                    out[column] = self.cleaned_data[field]
        return out

    def _covered_columns(self) -> set[str]:
        data = self.cleaned_data
        dataset = data["dataset"]
        try:
            scope = policy.resolve_columns(
                dataset=dataset, requested=data["columns"], level=data["level"], policy_source=dataset.classification
            )
        except DomainError:
            return set()  # the service refuses the request on its own field
        return set(scope.pii_included)

    def for_requester(self, user: Any) -> AccessRequestSubmitForm:
        """Offer only the roles the requester may ask for (owner or member); none: no choice."""
        from .models import RoleMembership

        member_of = RoleMembership.objects.active().filter(user=user).values("role_id")
        self.fields["grantee_role"].queryset = Role.objects.filter(  # type: ignore[attr-defined]
            Q(owner=user) | Q(pk__in=member_of)
        ).order_by("name")
        self.fields["grantee_role"].empty_label = "Myself"  # type: ignore[attr-defined]
        self.fields["grantee_role"].label = "For"
        return self


def access_request_submit_from_form(form: AccessRequestSubmitForm, *, requester: Any) -> AccessRequest | None:
    """Submit a valid form through the service; a refusal becomes errors on the form's fields
    (the service's field names mapped to the form's) and None is returned."""
    data = form.cleaned_data
    try:
        return request_services.access_request_submit(
            requester=requester,
            dataset=data["dataset"],
            level=data["level"],
            justification=data["justification"],
            duration=form.requested_duration(),
            longest_allowed=data["longest_allowed"],
            columns=data["columns"],
            grantee_role=data["grantee_role"],
            jit_credentials=data["jit_credentials"],
            treatments=form.chosen_treatments(),
            row_filter=data.get("row_filter"),
        )
    except DomainError as exc:
        per_field = exc.details.get("errors") or {exc.field or "": exc.message}
        for name, message in per_field.items():
            form.add_error(name if name in form.fields else None, message)
        return None


class GrantEndForm(forms.Form):
    """A new end for a grant in force, in the portal's time zone (a browser's datetime-local input)."""

    ends_at = forms.DateTimeField(
        label="New end",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"],
    )
    reason = forms.CharField(label="Why", max_length=5000, widget=forms.Textarea(attrs={"rows": 2}))
