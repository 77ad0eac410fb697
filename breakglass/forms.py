"""The portal's break-glass forms: the on-call engineer's request and the officer's review."""

from __future__ import annotations

from decimal import Decimal

from django import forms

from .models import Outcome


class ActivateForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="The incident and its ticket: officers read it within the hour and review it within a day.",
    )
    hours = forms.DecimalField(
        min_value=Decimal("0.001"),
        max_digits=8,
        decimal_places=4,
        initial=1,
        help_text="How long you need access (fractions allowed: 0.5 is half an hour).",
    )
    temporary_login = forms.BooleanField(
        label="Temporary database login",
        required=False,
        help_text="For when you have no login of your own on this database: a login valid until the access "
        "ends, its password shown to you once on the grant's page.",
    )
    otp_token = forms.CharField(
        label="Second-factor code",
        max_length=32,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
        help_text="The code of your authenticator app (or a recovery code).",
    )


class ReviewForm(forms.Form):
    outcome = forms.ChoiceField(choices=Outcome.choices, widget=forms.RadioSelect)
    note = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Required when the use was inappropriate; kept on the record.",
    )
