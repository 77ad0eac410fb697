"""The worker's half of the outbox: prepare a notification (who, how, what it says), then send each
delivery once.

Preparing locks the notification row (SKIP LOCKED: two workers never prepare one notification) and
writes its deliveries and `prepared_at` in one transaction: prepared once, whatever happens after.

Sending is at least once, made recognisable:
1. **claim** one due delivery in one UPDATE (`pending` and due, or `sending` with a lease that
   passed): `sending`, `attempts + 1`, `lease_expires_at` = the database's clock + the lease;
2. **send** it through its channel, outside any transaction, under the Message-ID the row has
   carried since it was made;
3. **mark** it `sent` — only if it is still the same claim (`sending` with the same attempt): a
   worker that outlived its lease does not mark another worker's attempt.
A worker killed between 1 and 3 stops nothing: once the lease passes (the sweeper runs every
NOTIFICATIONS_SWEEP_INTERVAL_SECONDS) the delivery is claimed and sent again, under the same
Message-ID. If the first attempt had reached the mail server, the second is the same message for any
mail system that de-duplicates by Message-ID (and for a person, visibly the same). The lease must
outlast one send (EMAIL_TIMEOUT; `manage.py check` refuses otherwise), so a live worker's delivery is
never claimed from under it.

A transient failure (server down, a 4xx answer) puts the delivery back as `pending` with backoff;
after NOTIFICATIONS_MAX_ATTEMPTS, or at once for a permanent one (5xx: the address is refused), it
is `failed`, audited, and listed in Admin → Notifications → Deliveries.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.template.loader import render_to_string
from django.utils import timezone

from audit import services as audit
from audit.models import Outcome

from ..channels import ChannelBackend, Outgoing, SendError, channel_backends
from ..messages import PLANS, Message, digestible
from ..models import LOUD, Channel, Delivery, DeliveryStatus, Kind, Notification
from ..selectors import immediate_today, preferences_of, slack_addresses
from .slack_messages import slack_payload

log = logging.getLogger(__name__)


@dataclass
class SendResult:
    sent: list[int] = field(default_factory=list)
    retrying: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {"sent": len(self.sent), "retrying": len(self.retrying), "failed": len(self.failed)}


def render(kind: str, message: Message) -> tuple[str, str]:
    """The text and HTML bodies of a message (templates/notifications/<kind>.txt and .html)."""
    context = {**message.context, "recipient": message.recipient, "subject": message.subject, "link": message.link}
    return (
        render_to_string(f"notifications/{kind}.txt", context).strip() + "\n",
        render_to_string(f"notifications/{kind}.html", context),
    )


def notification_prepare(*, notification_id: int, now: dt.datetime | None = None) -> list[Delivery] | None:
    """Make the deliveries of a notification not prepared yet (None when it was, or another worker
    holds it). Its actor is never among them; a person's preferences decide channel, digest, mute."""
    now = now or timezone.now()
    with transaction.atomic():
        n = (
            Notification.objects.select_for_update(skip_locked=True)
            .filter(pk=notification_id, prepared_at__isnull=True)
            .first()
        )
        if n is None:
            return None
        messages, note = PLANS[n.kind](n)
        messages = [m for m in messages if m.recipient.pk != n.actor_id]
        ids = [m.recipient.pk for m in messages]
        prefs = preferences_of(ids)
        loud = n.kind in LOUD
        many = immediate_today(n.kind, ids, now) if n.kind == Kind.REQUEST_WAITING else {}
        wants_slack = loud or any(Channel.SLACK in prefs[i].channels_for(n.kind) for i in ids)
        slack = slack_addresses(ids) if wants_slack else {}
        deliveries = []
        for m in messages:
            pref = prefs[m.recipient.pk]
            if n.kind in pref.muted and not loud:
                continue
            text, html = render(n.kind, m)
            # Digest: chosen by the person, or forced for approvers with many requests in a day.
            held = digestible(n.kind, n.context) and (
                pref.digest or many.get(m.recipient.pk, 0) >= settings.NOTIFICATIONS_DIGEST_AFTER
            )
            subject = " ".join(m.subject.split())[:300]  # one line: a name may hold a newline
            # A loud kind goes out on every channel the person can be reached on, whatever they chose.
            channels = [Channel.EMAIL.value, Channel.SLACK.value] if loud else pref.channels_for(n.kind)
            if Channel.SLACK in channels and m.recipient.pk not in slack:
                # Slack chosen but not reachable (not linked, no team webhook): email instead.
                channels = [c for c in channels if c != Channel.SLACK] or [Channel.EMAIL.value]
            for channel in channels:
                address = slack[m.recipient.pk] if channel == Channel.SLACK else m.recipient.email
                deliveries.append(
                    Delivery(
                        notification=n,
                        kind=n.kind,
                        recipient=m.recipient,
                        channel=channel,
                        address=address,
                        status=DeliveryStatus.HELD if held else DeliveryStatus.PENDING,
                        subject=subject,
                        body_text=text,
                        body_html=html if channel == Channel.EMAIL else "",
                        payload=slack_payload(n, m, subject, text, address) if channel == Channel.SLACK else {},
                        link=m.link,
                        next_attempt_at=None,  # due at once (a retry sets when it falls due)
                    )
                )
        Delivery.objects.bulk_create(deliveries)
        n.prepared_at = now
        n.note = "" if deliveries else (note or "Nobody to tell (the actor, or muted).")
        n.save(update_fields=["prepared_at", "note"])
    return deliveries


_DUE = (
    "((d.status = 'pending' AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= statement_timestamp()))"
    " OR (d.status = 'sending' AND d.lease_expires_at < statement_timestamp()))"
)
_CLAIM = """
UPDATE {table} AS d SET status = 'sending', attempts = d.attempts + 1,
    lease_expires_at = statement_timestamp() + make_interval(secs => %(lease)s), next_attempt_at = NULL
WHERE d.id = (
    SELECT d.id FROM {table} AS d WHERE {due} {only} ORDER BY d.next_attempt_at NULLS FIRST, d.id
    LIMIT 1 FOR UPDATE SKIP LOCKED
)
RETURNING d.id, d.attempts, d.kind, d.channel, d.address, d.subject, d.body_text, d.body_html, d.message_id,
    d.payload
"""
_MARK_SENT = (
    "UPDATE {table} SET status = 'sent', sent_at = statement_timestamp(), lease_expires_at = NULL, last_error = ''"
    " WHERE id = %s AND status = 'sending' AND attempts = %s"
)


def _table() -> str:
    return connection.ops.quote_name(Delivery._meta.db_table)


def _claim(notification_ids: list[int] | None) -> Outgoing | None:
    if notification_ids is not None and not notification_ids:
        return None
    only = "AND d.notification_id = ANY(%(ids)s)" if notification_ids is not None else ""
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            _CLAIM.format(table=_table(), due=_DUE, only=only),
            {"lease": float(settings.NOTIFICATIONS_LEASE_SECONDS), "ids": notification_ids},
        )
        row = cur.fetchone()
    if row is None:
        return None
    pk, attempts, kind, channel, address, subject, body_text, body_html, message_id, payload = row
    if isinstance(payload, str):  # psycopg2 returns jsonb decoded; a raw cursor may not
        payload = json.loads(payload)
    return Outgoing(pk, attempts, kind, channel, address, subject, body_text, body_html, str(message_id), payload or {})


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter, capped."""
    ceiling = min(
        settings.NOTIFICATIONS_RETRY_MAX_SECONDS, settings.NOTIFICATIONS_RETRY_BASE_SECONDS * 2 ** (attempt - 1)
    )
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security


def _record_failure(claimed: Outgoing, error: SendError, result: SendResult) -> None:
    final = not error.transient or claimed.attempts >= settings.NOTIFICATIONS_MAX_ATTEMPTS
    with transaction.atomic():
        updated = Delivery.objects.filter(pk=claimed.id, status=DeliveryStatus.SENDING, attempts=claimed.attempts)
        if final:
            if updated.update(status=DeliveryStatus.FAILED, lease_expires_at=None, last_error=str(error)[:2000]):
                audit.record(
                    action="notification.delivery_failed",
                    actor=None,
                    target_type="notifications.delivery",
                    target_id=claimed.id,
                    target_repr=claimed.subject,
                    outcome=Outcome.FAILED,
                    reason=str(error),
                    metadata={"channel": claimed.channel, "attempts": claimed.attempts, "kind": claimed.kind},
                )
                log.error(
                    "Notification delivery %s failed after %s attempt(s): %s", claimed.id, claimed.attempts, error
                )
            result.failed.append(claimed.id)
        else:
            due = timezone.now() + dt.timedelta(seconds=_backoff(claimed.attempts))
            updated.update(
                status=DeliveryStatus.PENDING, lease_expires_at=None, next_attempt_at=due, last_error=str(error)[:2000]
            )
            result.retrying.append(claimed.id)


def deliveries_send(*, notification_ids: list[int] | None = None, limit: int = 200) -> SendResult:
    """Send due deliveries (of these notifications, or any), one claim at a time, each once."""
    result = SendResult()
    channels: dict[str, ChannelBackend] = {}
    backends = channel_backends()
    try:
        for _ in range(limit):
            claimed = _claim(notification_ids)
            if claimed is None:
                break
            channel = channels.get(claimed.channel)
            if channel is None:
                channel = channels[claimed.channel] = backends[claimed.channel]()
            try:
                channel.send(claimed)
            except SendError as exc:
                _record_failure(claimed, exc, result)
                continue
            except Exception as exc:  # a bug: retried within NOTIFICATIONS_MAX_ATTEMPTS, never a loop
                log.exception("Sending notification delivery %s crashed", claimed.id)
                _record_failure(claimed, SendError(f"Unexpected {type(exc).__name__}: {exc}", transient=True), result)
                continue
            with connection.cursor() as cur:
                cur.execute(_MARK_SENT.format(table=_table()), [claimed.id, claimed.attempts])
                if cur.rowcount != 1:  # our lease passed and another worker took it: it is theirs now
                    log.warning("Notification delivery %s was claimed again while it was being sent", claimed.id)
            result.sent.append(claimed.id)
    finally:
        for channel in channels.values():
            channel.close()
    return result


def _prepare_each(notification_ids: list[int]) -> None:
    """Prepare each in its own transaction: one that cannot be prepared (a bug, a template error)
    is logged and noted on its row, and holds back none of the others; the sweeper tries it again."""
    for pk in notification_ids:
        try:
            notification_prepare(notification_id=pk)
        except Exception as exc:
            log.exception("Could not prepare notification %s", pk)
            Notification.objects.filter(pk=pk).update(note=f"Could not prepare: {type(exc).__name__}: {exc}"[:300])


def notifications_deliver(*, notification_ids: list[int]) -> SendResult:
    """The task published when a notification commits: prepare it, send what it made."""
    _prepare_each(notification_ids)
    return deliveries_send(notification_ids=notification_ids)


def outbox_sweep(*, limit: int = 200) -> dict[str, Any]:
    """Beat, every NOTIFICATIONS_SWEEP_INTERVAL_SECONDS: prepare what no task prepared (its message
    was lost, the broker was down at commit), send what is due (retries, deliveries of a worker that
    died: lease passed). Two indexed queries that find nothing when all is well."""
    unprepared = list(
        Notification.objects.filter(prepared_at__isnull=True).order_by("pk").values_list("pk", flat=True)[:limit]
    )
    _prepare_each(unprepared)
    return {"prepared": len(unprepared), **deliveries_send(limit=limit).as_dict()}
