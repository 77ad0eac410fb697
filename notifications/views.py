"""The portal's notification pages (`/portal/notifications/`): a person's preferences (the channel
per kind of event, a daily digest instead of a message each, the kinds they never want, what was
sent to them last) and their Slack link; and Slack's link command (`/slack/commands`)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt

from governance.errors import DomainError

from .models import Channel, Delivery, Kind
from .selectors import preferences_of, slack_link_of
from .services.preferences import MUTABLE, preference_set
from .services.slack_links import slack_link_code_issue, slack_link_confirm, slack_link_remove
from .slack import refuse_unless_signed

ROUTE_CHOICES = [("", "As above"), ("email", "Email"), ("slack", "Slack"), ("both", "Email and Slack")]


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for kind in MUTABLE:  # one choice per kind: email, Slack or both
            self.fields[f"route_{kind}"] = forms.ChoiceField(
                choices=ROUTE_CHOICES, required=False, label=Kind(kind).label
            )

    def routes(self) -> dict[str, str]:
        return {k: self.cleaned_data.get(f"route_{k}") or "" for k in MUTABLE}

    def route_fields(self) -> list[Any]:
        return [self[f"route_{k}"] for k in MUTABLE]


@login_required
def preferences(request: HttpRequest) -> HttpResponse:
    user: Any = request.user  # signed in (login_required)
    current = preferences_of([user.pk])[user.pk]
    initial = {"channel": current.channel, "digest": current.digest, "muted": current.muted}
    initial |= {f"route_{k}": v for k, v in (current.routes or {}).items()}
    form = PreferenceForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = {k: form.cleaned_data[k] for k in ("channel", "digest", "muted")}
        try:
            preference_set(user=user, actor=user, routes=form.routes(), **data)
        except DomainError as exc:
            form.add_error(None, exc.message)
        else:
            messages.success(request, "Your notification preferences are saved.")
            return redirect("notifications:preferences")
    recent = Delivery.objects.filter(recipient=user).order_by("-id")[:20]
    link = slack_link_of(user)
    return render(
        request,
        "portal/notifications.html",
        {"form": form, "recent": recent, "nav": "notifications", "slack_linked": bool(link and link.slack_user_id)},
    )


@login_required
def slack(request: HttpRequest) -> HttpResponse:
    """Link a Slack account: a one-time code to send from Slack with the portal's command, or unlink."""
    user: Any = request.user
    code = ""
    if request.method == "POST":
        try:
            if request.POST.get("action") == "unlink":
                slack_link_remove(user=user, actor=user)
                messages.success(request, "Your Slack account is unlinked.")
                return redirect("notifications:slack")
            code = slack_link_code_issue(user=user)
        except DomainError as exc:
            messages.error(request, exc.message)
    return render(
        request,
        "portal/slack_link.html",
        {
            "link": slack_link_of(user),
            "code": code,
            "minutes": settings.SLACK_LINK_CODE_SECONDS // 60,
            "nav": "notifications",
        },
    )


@csrf_exempt  # Slack signs its requests (checked first); it has no CSRF cookie
def slack_command(request: HttpRequest) -> HttpResponse:
    """Slack's slash command (`/portal-link CODE`): links the Slack user Slack names to the portal
    account the code was issued to. Answers privately (ephemeral) in Slack."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    refused = refuse_unless_signed(request, "commands")
    if refused is not None:
        return refused
    try:
        user = slack_link_confirm(
            code=request.POST.get("text", ""),
            slack_user_id=request.POST.get("user_id", ""),
            slack_team_id=request.POST.get("team_id", ""),
        )
    except DomainError as exc:
        return JsonResponse({"response_type": "ephemeral", "text": exc.message})
    text = f"Linked: you are {user.get_username()} in the portal. You will get its messages here."
    return JsonResponse({"response_type": "ephemeral", "text": text})
