"""Deciding a request from a chat message (Slack's Approve / Deny buttons), safely.

The press reaches here only after its edge verified Slack's signature (governance/views/slack.py).
Then, in one transaction:
1. the button's token must be ours (signed, for this action, not too old) and its nonce unused;
2. the Slack user who pressed must be linked to the portal account the buttons were sent to;
3. the request must still be low risk (`policy.chat_decision_refusal`, the rule that chose to offer
   the buttons, asked again against the rows as they are now);
4. the nonce is consumed and the portal's own decision service decides: the same state checks,
   policy re-check, separation of duties and audit as a decision in the portal. If it refuses, the
   nonce is not consumed (the transaction rolls back) and the refusal is recorded.
Every refusal is audited (`access_request.chat_decide`, denied) with `source: slack`; a decision
adds `access_request.decided_in_chat` beside the decision's own events.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from audit import services as audit
from audit.models import Outcome
from notifications.models import ChatDecisionToken, SlackLink
from notifications.slack import decision_nonce

from .. import policy
from ..errors import ConflictError, DomainError, InvalidInput, NotPermitted
from ..models import AccessRequest
from .requests import access_request_approve, access_request_deny

ACTIONS = ("approve", "deny")


def _linked_user(slack_user_id: str) -> Any:
    link = SlackLink.objects.select_related("user").filter(slack_user_id=slack_user_id or None).first()
    return link.user if link is not None and link.user.is_active else None


def access_request_decide_from_chat(*, token: str, action: str, slack_user_id: str) -> AccessRequest:
    """Approve or deny the request behind a pressed button, as the linked approver; raises a
    DomainError (recorded) when the press is refused."""
    approver = _linked_user(slack_user_id)
    metadata: dict[str, Any] = {"source": "slack", "slack_user_id": slack_user_id, "decision": action}
    target: dict[str, Any] = {}
    try:
        with transaction.atomic():
            if action not in ACTIONS:
                raise InvalidInput(f"Unknown action {action!r}.", field="action")
            nonce = decision_nonce(token, action)
            chosen = ChatDecisionToken.objects.select_for_update().filter(pk=nonce).first() if nonce else None
            if chosen is None:
                raise NotPermitted("This button is not one the portal sent, or it has expired.")
            target = {
                "target_type": "governance.accessrequest",
                "target_id": chosen.request_id,
                "target_repr": f"access request #{chosen.request_id}",
            }
            if approver is None:
                raise NotPermitted(
                    "Your Slack account is not linked to a portal account: link it on the portal's "
                    "Notifications page first."
                )
            if approver.pk != chosen.approver_id:
                raise NotPermitted("These buttons were sent to another approver.")
            if chosen.used_at is not None:
                raise ConflictError(f"These buttons were already used ({chosen.used_for}); a decision is made once.")
            req = AccessRequest.objects.select_related("dataset__classification").get(pk=chosen.request_id)
            refusal = policy.chat_decision_refusal(access_request=req)
            if refusal:
                raise NotPermitted(f"{refusal} (not low risk: no decisions from chat)")
            chosen.used_at, chosen.used_for = timezone.now(), action
            chosen.save(update_fields=["used_at", "used_for"])
            if action == "approve":
                req = access_request_approve(
                    access_request=req.pk, approver=approver, stage=chosen.stage, comment="Approved in Slack."
                )
            else:
                req = access_request_deny(
                    access_request=req.pk, approver=approver, stage=chosen.stage, comment="Denied in Slack."
                )
            audit.record(
                action="access_request.decided_in_chat",
                actor=approver,
                target=req,
                metadata=metadata | {"stage": chosen.stage},
            )
    except DomainError as exc:
        # The block rolled back (the nonce stays unused, the decision service's own refusal event
        # with it): this event says what was refused, to whom, from Slack.
        audit.record(
            action="access_request.chat_decide",
            actor=approver,
            **target,
            outcome=Outcome.DENIED,
            reason=exc.message,
            metadata={"code": exc.code, **metadata},
        )
        raise
    return req
