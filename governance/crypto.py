"""Encryption of data source credentials with MultiFernet, keyed from FIELD_ENCRYPTION_KEYS.

The first key encrypts; every key decrypts, so keys rotate by putting a new one first.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


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
    return _current().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        # Never include the token or any key material in the message.
        raise ImproperlyConfigured("A stored credential cannot be decrypted with FIELD_ENCRYPTION_KEYS.") from exc


def generate_key() -> str:
    return Fernet.generate_key().decode()


def rotate(token: str) -> str:
    """The same secret, encrypted under the current first key (MultiFernet.rotate)."""
    if not token:
        return ""
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
