"""Slack's interactivity endpoint (`/slack/interactive`): a press of a message's Approve / Deny
buttons. An edge: it checks Slack's signature (notifications.slack), hands the press to the one
service that decides from chat (governance.services.chat) and, once that committed, replaces the
message through Slack's `response_url` to show who decided (or tells the presser, privately, why
not). The update is posted after the decision committed, outside any transaction; if Slack cannot
be reached the decision stands and the requester still hears of it through the outbox."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from notifications.channels import SendError
from notifications.slack import decided_message, interactive_payload, post_json, refuse_unless_signed

from ..errors import DomainError
from ..services.chat import ACTIONS, access_request_decide_from_chat

log = logging.getLogger(__name__)


def _respond(response_url: str, message: dict[str, Any]) -> None:
    """Post to the message's response_url, only where Slack's response URLs live."""
    if not response_url or not response_url.startswith(settings.SLACK_HOOKS_URL_PREFIX):
        log.warning("Not answering a Slack press at %r: not a Slack response URL", response_url[:100])
        return
    try:
        status, body = post_json(response_url, message)
    except SendError as exc:
        log.warning("Could not update the Slack message: %s", exc)
        return
    if status != 200:
        log.warning("Slack refused the message update: %s %r", status, body[:200])


@csrf_exempt  # Slack signs its requests (checked first); it has no CSRF cookie
def slack_interactive(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    refused = refuse_unless_signed(request, "interactive")
    if refused is not None:
        return refused
    payload = interactive_payload(request)
    actions = payload.get("actions") if payload else None
    if not payload or payload.get("type") != "block_actions" or not isinstance(actions, list) or not actions:
        return JsonResponse(
            {"code": "invalid", "message": "Expected a block_actions payload.", "field": "payload"}, status=400
        )
    pressed = actions[0] if isinstance(actions[0], dict) else {}
    action = str(pressed.get("action_id", ""))
    if action not in ACTIONS:  # the "open in the portal" link button: nothing to do here
        return HttpResponse(status=200)
    user: Any = payload.get("user")
    if not isinstance(user, dict):
        user = {}
    response_url = str(payload.get("response_url", ""))
    try:
        req = access_request_decide_from_chat(
            token=str(pressed.get("value", "")), action=action, slack_user_id=str(user.get("id", ""))
        )
    except DomainError as exc:
        _respond(response_url, {"response_type": "ephemeral", "replace_original": False, "text": exc.message})
        return JsonResponse(exc.as_dict(), status=exc.status)
    approver = req.approvals.order_by("-pk").select_related("approver").first()
    who = approver.approver.get_username() if approver else "someone"
    verb = "approved" if action == "approve" else "denied"
    subject = f"Request #{req.pk}: {req.level} access to {req.dataset.qualified_name}"
    _respond(response_url, decided_message(subject=subject, outcome=f"{verb.capitalize()} by {who} in Slack."))
    return HttpResponse(status=200)
