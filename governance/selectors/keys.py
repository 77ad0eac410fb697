"""Where stored secrets live, and which key each is under (governance.crypto): read by the posture
page and by the re-wrap service (governance/services/keys.py), which writes them."""

from __future__ import annotations

from collections.abc import Iterator

from django.db import models

from notifications.models import SlackWebhook

from .. import crypto
from ..models import CredentialRotation, DataSource, GovernedSchema, Grant

# Every stored secret: (model, column, counter of the re-wrap's result, how an error names the row).
STORED_SECRETS: tuple[tuple[type[models.Model], str, str, str], ...] = (
    (DataSource, "password_encrypted", "sources", "the password of data source {row.name}"),
    (Grant, "jit_password_encrypted", "grants", "the temporary login password of grant #{row.pk}"),
    (SlackWebhook, "url_encrypted", "webhooks", "the Slack webhook URL of {row.channel}"),
    # A rotation's new password, kept until it is stored where the source's secret lives (normally
    # seconds; for good when a failed rotation could not put the old password back).
    (CredentialRotation, "pending_secret", "rotations", "the pending new password of credential rotation #{row.pk}"),
    # The key of a source's pseudonyms (governance/provisioners/pg_views.py); re-wrapping keeps it.
    (GovernedSchema, "pseudonym_key_encrypted", "pseudonym_keys", "the pseudonym key of source #{row.source_id}"),
)


# Secrets of the apps that build on governance (which never imports them: import-linter), each
# registered by its app's AppConfig.ready() with `stored_secret_register` (e.g. subjects: a request's
# encrypted identifiers, an access export). Their counters are counted in RotationResult.others.
_REGISTERED: list[tuple[type[models.Model], str, str, str]] = []


def stored_secret_register(model: type[models.Model], column: str, counter: str, label: str) -> None:
    """Have `rewrap_secrets` (and the posture's key check) cover `model.column` too (idempotent)."""
    entry = (model, column, counter, label)
    if entry not in _REGISTERED:
        _REGISTERED.append(entry)


def all_stored_secrets() -> tuple[tuple[type[models.Model], str, str, str], ...]:
    return STORED_SECRETS + tuple(_REGISTERED)


def stored_secrets() -> Iterator[tuple[str, str, str]]:
    """(what, column, key) of every stored secret: key is the KMS key ARN of its envelope, or ""
    for a MultiFernet token. One query per kind of secret."""
    for model, column, _counter, label in all_stored_secrets():
        for row in model._default_manager.exclude(**{column: ""}).order_by("pk"):
            yield label.format(row=row), column, crypto.key_of(getattr(row, column))
