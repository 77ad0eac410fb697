"""The portal's review forms: one decision, many decisions, a delegation, a new campaign (admin)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.utils import timezone

from .models import Decision


class DecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=[(d, d) for d in (Decision.KEEP, Decision.REVOKE, Decision.SHORTEN)])
    comment = forms.CharField(required=False, max_length=2000)
    new_end = forms.DateField(required=False, help_text="Shorten: the access ends at the start of this day.")

    def new_ends_at(self) -> dt.datetime | None:
        day = self.cleaned_data.get("new_end")
        if day is None:
            return None
        return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


class DelegateForm(forms.Form):
    to = forms.CharField(max_length=150, label="Delegate to (username)")

    def clean_to(self) -> Any:
        username = self.cleaned_data["to"].strip()
        person = get_user_model().objects.filter(username=username, is_active=True).first()
        if person is None:
            raise forms.ValidationError(f"There is no active user {username!r}.")
        return person
