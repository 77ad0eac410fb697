"""Slack: the second channel, and what Slack's signed requests need (docs/notifications.md#slack).

- `SlackChannel` sends a prepared delivery: a direct message through the Web API (`chat.postMessage`
  to the linked Slack user id, `Authorization: Bearer SLACK_BOT_TOKEN`), or a post to the person's
  team's incoming webhook (`webhook:<id>`; the URL is stored encrypted). The message is Block Kit
  JSON made when the delivery was prepared (`blocks_for`), with `text` as the fallback.
- `verify_signature` checks a request from Slack exactly as Slack documents it: `v0=` +
  HMAC-SHA256 of `v0:{X-Slack-Request-Timestamp}:{raw body}` under the signing secret, compared in
  constant time, and refused when the timestamp is more than five minutes away from now.
- `decision_token` / `decision_nonce`: the value an Approve or Deny button carries, signed
  (django.core.signing) around a stored nonce (`ChatDecisionToken`) that the press consumes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings
from django.core import signing

from governance import crypto

from .channels import Outgoing, SendError
from .models import ChatDecisionToken, SlackWebhook

MAX_AGE_SECONDS = 300  # Slack: refuse requests whose timestamp is more than five minutes old
WEBHOOK_PREFIX = "webhook:"
_SALT = "notifications.slack.decision"


class SignatureRefused(Exception):
    """A request that did not come from Slack, or not now."""


def verify_signature(*, body: bytes, timestamp: str, signature: str, now: float | None = None) -> None:
    """Raise SignatureRefused unless `signature` is Slack's for this body at this timestamp."""
    secret = settings.SLACK_SIGNING_SECRET
    if not secret:
        raise SignatureRefused("Slack is not configured here (no signing secret).")
    if not timestamp or not signature:
        raise SignatureRefused("The request carries no Slack signature.")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise SignatureRefused("The request's timestamp is not a number.") from None
    if abs((time.time() if now is None else now) - sent_at) > MAX_AGE_SECONDS:
        raise SignatureRefused("The request's timestamp is more than five minutes away: refused as a replay.")
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise SignatureRefused("The request's Slack signature does not match.")


def decision_token(nonce: Any, action: str) -> str:
    """What the Approve (or Deny) button of one message carries."""
    return signing.dumps({"n": str(nonce), "a": action}, salt=_SALT, compress=True)


def decision_nonce(token: str, action: str) -> str | None:
    """The nonce of a button's token if it is ours, for this action and not too old; else None."""
    try:
        data = signing.loads(token, salt=_SALT, max_age=settings.SLACK_BUTTON_MAX_AGE_SECONDS)
    except signing.BadSignature:  # SignatureExpired is one
        return None
    if not isinstance(data, dict) or data.get("a") != action or not isinstance(data.get("n"), str):
        return None
    return data["n"]


# --- messages ------------------------------------------------------------------------------------


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}}


def blocks_for(
    *, subject: str, body_text: str, link: str, decision: ChatDecisionToken | None = None, inbox: str = ""
) -> dict[str, Any]:
    """The Block Kit message of a delivery: the subject, the text, and either Approve / Deny buttons
    (a low-risk request, for one approver) or a link to the portal (the inbox for a request that
    must be decided there)."""
    blocks: list[dict[str, Any]] = [_section(f"*{subject}*"), _section(body_text)]
    elements: list[dict[str, Any]] = []
    if decision is not None:
        elements += [
            {
                "type": "button",
                "action_id": "approve",
                "text": {"type": "plain_text", "text": "Approve"},
                "style": "primary",
                "value": decision_token(decision.nonce, "approve"),
            },
            {
                "type": "button",
                "action_id": "deny",
                "text": {"type": "plain_text", "text": "Deny"},
                "style": "danger",
                "value": decision_token(decision.nonce, "deny"),
                "confirm": {
                    "title": {"type": "plain_text", "text": "Deny this request?"},
                    "text": {"type": "mrkdwn", "text": "The requester is told it was denied from Slack."},
                    "confirm": {"type": "plain_text", "text": "Deny"},
                    "deny": {"type": "plain_text", "text": "Cancel"},
                },
            },
        ]
    target = inbox or link
    if target:
        label = "Decide in the portal" if inbox else "Open in the portal"
        elements.append(
            {"type": "button", "action_id": "open", "text": {"type": "plain_text", "text": label}, "url": target}
        )
    if elements:
        blocks.append({"type": "actions", "block_id": "decision" if decision else "links", "elements": elements})
    return {"text": subject, "blocks": blocks}


def decided_message(*, subject: str, outcome: str) -> dict[str, Any]:
    """What replaces a message once its buttons were used: who decided, and no buttons."""
    return {
        "replace_original": True,
        "text": f"{subject}: {outcome}",
        "blocks": [_section(f"*{subject}*"), _section(outcome)],
    }


# --- sending ---------------------------------------------------------------------------------------


def post_json(url: str, payload: dict[str, Any], *, token: str = "") -> tuple[int, bytes]:
    """POST JSON to Slack; (status, body). Raises SendError(transient) when Slack cannot be reached."""
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers=headers, method="POST")  # noqa: S310 - configured http(s) URLs
    try:
        with urllib.request.urlopen(request, timeout=settings.SLACK_TIMEOUT_SECONDS) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:  # refused, timed out, DNS
        raise SendError(f"Slack cannot be reached: {exc}", transient=True) from exc


def _http_error(status: int, body: bytes) -> SendError:
    text = body[:300].decode(errors="replace")
    # 429 (rate limited) and 5xx: later may work; other 4xx (no_service, invalid_payload): it will not.
    return SendError(f"Slack answered {status}: {text}", transient=status == 429 or status >= 500)


# Web API errors that trying again may cure; any other `ok: false` is permanent.
_TRANSIENT_API_ERRORS = {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}


class SlackChannel:
    """Slack deliveries: a direct message to a linked person, or their team's webhook."""

    name = "slack"

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def send(self, message: Outgoing) -> None:
        payload: dict[str, Any] = dict(message.payload) if message.payload else {"text": message.subject}
        payload.setdefault("text", message.subject)
        if not payload.get("blocks"):  # a digest: its text, as Block Kit too
            payload["blocks"] = [_section(f"*{message.subject}*"), _section(message.body_text)]
        if message.address.startswith(WEBHOOK_PREFIX):
            self._webhook(message, payload)
        elif message.address:
            self._direct(message, payload)
        else:
            raise SendError("The person has no Slack account linked and their team no webhook.", transient=False)

    def _webhook(self, message: Outgoing, payload: dict[str, Any]) -> None:
        hook = SlackWebhook.objects.filter(pk=message.address.removeprefix(WEBHOOK_PREFIX), is_active=True).first()
        if hook is None:
            raise SendError("The team's Slack webhook was removed or switched off.", transient=False)
        status, body = post_json(crypto.decrypt(hook.url_encrypted), payload)
        if status != 200:
            raise _http_error(status, body)

    def _direct(self, message: Outgoing, payload: dict[str, Any]) -> None:
        if not settings.SLACK_BOT_TOKEN:
            raise SendError("SLACK_BOT_TOKEN is not set: no direct messages.", transient=False)
        # The delivery's id rides along as message metadata: a resend after a crash is recognisable.
        payload = {
            **payload,
            "channel": message.address,
            "metadata": {"event_type": "portal_notification", "event_payload": {"delivery": message.message_id}},
        }
        url = settings.SLACK_API_URL.rstrip("/") + "/chat.postMessage"
        status, body = post_json(url, payload, token=settings.SLACK_BOT_TOKEN)
        if status != 200:
            raise _http_error(status, body)
        try:
            answer = json.loads(body)
        except ValueError:
            raise SendError(f"Slack answered with something that is not JSON: {body[:200]!r}", transient=True) from None
        if not answer.get("ok"):
            error = str(answer.get("error", "unknown"))
            raise SendError(f"Slack refused the message: {error}", transient=error in _TRANSIENT_API_ERRORS)


def refuse_unless_signed(request: Any, endpoint: str) -> Any:
    """None for a request Slack signed just now; else a 401 (and an audit event) to return."""
    from django.http import HttpResponse

    from audit.middleware import client_ip

    from .services.slack_links import slack_request_refuse

    try:
        verify_signature(
            body=request.body,
            timestamp=request.headers.get("X-Slack-Request-Timestamp", ""),
            signature=request.headers.get("X-Slack-Signature", ""),
        )
    except SignatureRefused as exc:
        slack_request_refuse(endpoint=endpoint, reason=str(exc), ip=client_ip(request))
        return HttpResponse(str(exc), status=401, content_type="text/plain")
    return None


def interactive_payload(request: Any) -> dict[str, Any] | None:
    """The `payload` JSON of an interactive request (form-encoded, as Slack sends it), or None."""
    try:
        payload = json.loads(request.POST.get("payload", ""))
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None
