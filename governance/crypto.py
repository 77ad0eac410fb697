"""Encryption of stored secrets (data source credentials, temporary login passwords, webhook URLs).

Two key providers behind one API (`encrypt`, `decrypt`, `rotate`):

- the default, MultiFernet keyed from FIELD_ENCRYPTION_KEYS: the first key encrypts, every key
  decrypts, so keys rotate by putting a new one first;
- with FIELD_ENCRYPTION_KMS_KEY_ID (AWS KMS) or FIELD_ENCRYPTION_VAULT_TRANSIT_KEY (Vault Transit)
  set, envelope encryption (governance.envelope): a data key per secret, wrapped by the key
  service, so no secret decrypts without it.

Reading accepts every form, so an install that turns a key service on keeps working until
`rewrap_secrets` has moved every stored secret under its key.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from . import envelope


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS is empty: credentials cannot be encrypted.")
    try:
        return MultiFernet([Fernet(k.encode()) for k in keys])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS holds a key that is not a Fernet key.") from exc


def _current() -> MultiFernet:
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    backend = envelope.active()
    if backend:
        return envelope.seal(backend, plaintext)
    return _current().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    if not token:
        return ""
    if envelope.is_envelope(token):
        return envelope.open_(token)
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        # Never include the token or any key material in the message.
        raise ImproperlyConfigured("A stored credential cannot be decrypted with FIELD_ENCRYPTION_KEYS.") from exc


def generate_key() -> str:
    return Fernet.generate_key().decode()


def current_key() -> str:
    """The name of the key new secrets are encrypted under: with a key service, its key as the
    service names it now (KMS: the ARN the alias names; Transit: "mount/name:vN", the latest
    version), else the fingerprint of the first FIELD_ENCRYPTION_KEYS key."""
    backend = envelope.active()
    return backend.current() if backend else key_fingerprint(0)


def key_service() -> str:
    """How the posture names the key service's keys ("KMS key", "Vault Transit key"); "" without one."""
    backend = envelope.active()
    return backend.kind if backend else ""


def key_of(token: str) -> str:
    """The key a stored secret's envelope is under (KMS key ARN; Transit "mount/name:vN"); "" for a
    MultiFernet token (or no secret)."""
    return envelope.key_of(token) if token else ""


def clear_key_cache() -> None:
    """Forget every unwrapped data key held in memory (the next read asks the key service again)."""
    envelope.data_keys.clear()


def rotate(token: str, *, current: str | None = None) -> str:
    """The same secret under the current key (`current`: its name, from `current_key()`). With a key
    service: an envelope under it is unchanged, one under an older key or version has its data key
    re-wrapped inside the service, a MultiFernet token is sealed into an envelope. Without one:
    MultiFernet.rotate (an envelope moves back out)."""
    if not token:
        return ""
    backend = envelope.active()
    if backend:
        if not envelope.is_envelope(token):
            return envelope.seal(backend, decrypt(token))
        return envelope.rewrap(token, backend, current or backend.current())
    if envelope.is_envelope(token):
        return encrypt(envelope.open_(token))
    try:
        return _current().rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise ImproperlyConfigured("A stored credential cannot be decrypted with FIELD_ENCRYPTION_KEYS.") from exc


def key_fingerprint(index: int = 0) -> str:
    """A short, non-secret name of one configured key (for audit events and messages)."""
    import hashlib

    keys = tuple(settings.FIELD_ENCRYPTION_KEYS)
    return hashlib.sha256(keys[index].encode()).hexdigest()[:12] if keys else ""


def ca_bundle_path(pem: str) -> str:
    """A file holding `pem` (libpq takes the CA bundle as a path), written once per content under
    the temporary directory, readable by this user only. Empty `pem`: empty path (libpq's default)."""
    import hashlib
    import os
    import tempfile
    from pathlib import Path

    if not pem.strip():
        return ""
    folder = Path(tempfile.gettempdir()) / f"governance-ca-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{hashlib.sha256(pem.encode()).hexdigest()[:24]}.pem"
    if not path.exists():
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(pem)
        partial.chmod(0o600)
        partial.replace(path)
    return str(path)
