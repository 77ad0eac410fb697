"""Envelope encryption of stored secrets under a key held by a key service, behind governance.crypto.

With a key configured, each secret is encrypted (AES-256-GCM) with its own data key, which only the
key service unwraps; the column keeps a versioned envelope (core.Envelope)

    kms1.<KMS key ARN>.<wrapped data key>.<nonce>.<ciphertext>             AWS KMS (aws_kms)
    vt1.<Transit mount/name>.<vault:vN:… wrapping>.<nonce>.<ciphertext>   Vault Transit (vault_transit)

(each part base64url, no padding). Unwrapped data keys live only in this process's memory, at most
FIELD_ENCRYPTION_DATA_KEY_CACHE_SECONDS each and FIELD_ENCRYPTION_DATA_KEY_CACHE_SIZE in all; they
are never written anywhere. Re-wrapping moves a data key's wrapping to the key that encrypts now
inside the key service; the secret's ciphertext is unchanged.

One backend at a time: FIELD_ENCRYPTION_KMS_KEY_ID or FIELD_ENCRYPTION_VAULT_TRANSIT_KEY (both is a
configuration error, governance.checks). Reading opens any envelope with the backend that made it.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from .aws_kms import AwsKms
from .core import Backend, Envelope, KeyUnavailable, data_keys, is_envelope, open_with, seal
from .vault_transit import VaultTransit

__all__ = [
    "Backend",
    "Envelope",
    "KeyUnavailable",
    "active",
    "data_keys",
    "is_envelope",
    "key_of",
    "open_",
    "rewrap",
    "seal",
]

BACKENDS: dict[str, Backend] = {b.format: b for b in (AwsKms(), VaultTransit())}
BOTH = (
    "FIELD_ENCRYPTION_KMS_KEY_ID and FIELD_ENCRYPTION_VAULT_TRANSIT_KEY are both set: stored secrets can be "
    "sealed under one key service only. Unset one."
)


def configured() -> list[Backend]:
    return [b for b in BACKENDS.values() if b.configured()]


def active() -> Backend | None:
    """The backend new secrets are sealed with (None: the local MultiFernet keys)."""
    chosen = configured()
    if len(chosen) > 1:
        raise ImproperlyConfigured(BOTH)
    return chosen[0] if chosen else None


def _backend_of(envelope: Envelope) -> Backend:
    return BACKENDS[envelope.format]


def open_(token: str) -> str:
    envelope = Envelope.loads(token)
    return open_with(_backend_of(envelope), envelope)


def key_of(token: str) -> str:
    """The key (and version) an envelope is under; "" for a MultiFernet token or an empty value."""
    if not is_envelope(token):
        return ""
    envelope = Envelope.loads(token)
    return _backend_of(envelope).label(envelope)


def rewrap(token: str, backend: Backend, current: str) -> str:
    """The envelope `token` under `current` (backend.current()): unchanged when it already is; its
    data key re-wrapped inside the key service when the backend can; else opened and sealed anew
    (an envelope of the other backend, or of another Transit key)."""
    envelope = Envelope.loads(token)
    if envelope.format == backend.format:
        if backend.label(envelope) == current:
            return token
        moved = backend.rewrap(envelope, current)
        if moved is not None:
            return moved.dumps()
    return seal(backend, open_with(_backend_of(envelope), envelope))
