"""Channels: how a prepared delivery reaches a person. Email (Django's email backend, SMTP in
production, HTML and text) here; Slack in notifications/slack.py, a class with the same three
methods. `channel_backends()` is the registry; each is offered in `models.Channel`.

A channel raises `SendError` with `transient` set when trying again later may work (the server is
down, a 4xx answer), unset when it will not (a 5xx answer: the address is refused)."""

from __future__ import annotations

import contextlib
import smtplib
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any, Protocol

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection

from .models import Channel


@dataclass(frozen=True)
class Outgoing:
    """What the sender claimed: everything a channel needs, nothing it must load."""

    id: int
    attempts: int
    kind: str
    channel: str
    address: str
    subject: str
    body_text: str
    body_html: str
    message_id: str
    payload: dict[str, Any] = field(default_factory=dict)


class SendError(Exception):
    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class ChannelBackend(Protocol):
    name: str

    def open(self) -> None: ...

    def send(self, message: Outgoing) -> None: ...

    def close(self) -> None: ...


def message_id_header(message_id: str) -> str:
    """The email's Message-ID, the same on every attempt: <uuid@the sender's domain>."""
    domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2] or "localhost"
    return f"<{message_id}@{domain}>"


class EmailChannel:
    """Django's configured email backend (EMAIL_BACKEND, EMAIL_HOST, ...), one connection for a run of sends."""

    name = "email"

    def __init__(self) -> None:
        self.connection: Any = None

    def open(self) -> None:
        if self.connection is None:
            self.connection = get_connection(fail_silently=False)
            self.connection.open()

    def send(self, message: Outgoing) -> None:
        if not message.address:
            raise SendError("The person has no email address.", transient=False)
        email = EmailMultiAlternatives(
            subject=message.subject,
            body=message.body_text,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[message.address],
            headers={"Message-ID": message_id_header(message.message_id), "X-Portal-Notification": message.kind},
        )
        if message.body_html:
            email.attach_alternative(message.body_html, "text/html")
        try:
            self.open()
            email.connection = self.connection
            email.send(fail_silently=False)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            self._drop()
            raise SendError(f"Refused: {exc.recipients}", transient=all(400 <= c < 500 for c in codes)) from exc
        except smtplib.SMTPResponseException as exc:
            self._drop()
            raise SendError(f"{exc.smtp_code} {exc.smtp_error!r}", transient=400 <= exc.smtp_code < 500) from exc
        except (smtplib.SMTPException, OSError) as exc:  # disconnected, refused, timed out
            self._drop()
            raise SendError(f"{type(exc).__name__}: {exc}", transient=True) from exc

    def _drop(self) -> None:
        """After an error the SMTP session is in an unknown state: the next send opens a new one."""
        connection, self.connection = self.connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # it is being thrown away
                connection.close()

    def close(self) -> None:
        self._drop()


def channel_backends() -> dict[str, type[ChannelBackend]]:
    """Every channel by its `Channel` value (Slack's module imports this one, hence the late import)."""
    from .slack import SlackChannel

    return {Channel.EMAIL.value: EmailChannel, Channel.SLACK.value: SlackChannel}
