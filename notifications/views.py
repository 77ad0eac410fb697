"""The portal's page of a person's notification preferences (`/portal/notifications/`): the channel,
a daily digest instead of a message each, the kinds they never want, and what was sent to them last."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from governance.errors import DomainError

from .models import Channel, Delivery, Kind
from .selectors import preferences_of
from .services.preferences import MUTABLE, preference_set


class PreferenceForm(forms.Form):
    channel = forms.ChoiceField(choices=Channel.choices)
    digest = forms.BooleanField(
        required=False,
        label="Daily digest",
        help_text="One email a day with what can wait, instead of one email each. Failures, an access "
        "ending tomorrow and overdue revocations are always sent at once.",
    )
    muted = forms.MultipleChoiceField(
        required=False,
        label="Never tell me",
        choices=[(k, Kind(k).label) for k in MUTABLE],
        widget=forms.CheckboxSelectMultiple,
    )


@login_required
def preferences(request: HttpRequest) -> HttpResponse:
    user: Any = request.user  # signed in (login_required)
    current = preferences_of([user.pk])[user.pk]
    initial = {"channel": current.channel, "digest": current.digest, "muted": current.muted}
    form = PreferenceForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            preference_set(user=user, actor=user, **form.cleaned_data)
        except DomainError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, "Your notification preferences are saved.")
            return redirect("notifications:preferences")
    recent = Delivery.objects.filter(recipient=user).order_by("-id")[:20]
    return render(request, "portal/notifications.html", {"form": form, "recent": recent, "nav": "notifications"})
