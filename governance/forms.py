"""Forms shared by the admin workbench and the portal. They validate shape; the services decide."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.db.models import Q

from . import durations
from .errors import DomainError
from .models import AccessLevel, AccessRequest, Column, Dataset, Role, RowFilter
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
        return self

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
