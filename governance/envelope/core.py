"""What both key backends share: the envelope's format, the AES-GCM sealing of a secret under its
own data key, and the bounded cache of unwrapped data keys. A backend (aws_kms, vault_transit) only
generates, unwraps and re-wraps data keys and names the key that encrypts now (`Backend`)."""

from __future__ import annotations

import base64
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class KeyUnavailable(ImproperlyConfigured):
    """The key service cannot be reached, or refuses the key: the message names the key, never a secret."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Envelope:
    """`<format>.<key id>.<wrapped data key>.<nonce>.<ciphertext>`, each part base64url, no padding."""

    format: str  # which backend wrapped the data key: "kms1" (AWS KMS) or "vt1" (Vault Transit)
    key_id: str  # the key that wrapped it: a KMS key ARN, or a Transit "mount/name"
    wrapped: bytes
    nonce: bytes
    ciphertext: bytes

    def dumps(self) -> str:
        parts = (self.key_id.encode(), self.wrapped, self.nonce, self.ciphertext)
        return self.format + "." + ".".join(_b64(p) for p in parts)

    @classmethod
    def loads(cls, token: str) -> Envelope:
        try:
            tag, key_id, wrapped, nonce, ciphertext = token.split(".")
            if tag not in FORMATS:
                raise ValueError(tag)
            return cls(tag, _unb64(key_id).decode(), _unb64(wrapped), _unb64(nonce), _unb64(ciphertext))
        except (ValueError, UnicodeDecodeError):
            raise ImproperlyConfigured("A stored secret is not a well-formed key envelope.") from None

    def aad(self) -> bytes:
        # The format only: the key id is checked by the key service itself (it refuses a blob
        # wrapped by another key), and a re-wrap must leave the ciphertext as it is.
        return self.format.encode()


FORMATS = ("kms1", "vt1")


def is_envelope(token: str) -> bool:
    return token.split(".", 1)[0] in FORMATS and "." in token


class Backend(Protocol):
    format: str
    kind: str  # how messages name its keys: "KMS key", "Vault Transit key"

    def configured(self) -> str:
        """The key setting secrets are sealed under ("" when this backend is off)."""

    def generate(self) -> tuple[str, bytes, bytes]:
        """A new data key: (key id, plaintext, wrapped)."""

    def unwrap(self, envelope: Envelope) -> bytes:
        """The envelope's plaintext data key, from the key service."""

    def current(self) -> str:
        """The name of the key (and version) new secrets are sealed under now, asked of the service."""

    def label(self, envelope: Envelope) -> str:
        """The name of the key (and version) `envelope` is under, comparable with `current()`."""

    def rewrap(self, envelope: Envelope, current: str) -> Envelope | None:
        """The envelope with its data key wrapped under `current` inside the service (ciphertext
        unchanged); None when the service cannot move it there (the caller seals it anew)."""

    def unusable(self) -> str:
        """Why the configured key cannot be used ("" when it can); raises KeyUnavailable when the
        service cannot be asked."""


# --- the data key cache -----------------------------------------------------------------------------


class DataKeyCache:
    """Unwrapped data keys by wrapped blob, each for `ttl` seconds, at most `size` (oldest out)."""

    def __init__(self) -> None:
        self._keys: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, wrapped: bytes) -> bytes | None:
        now = time.monotonic()
        with self._lock:
            hit = self._keys.get(wrapped)
            if hit is None:
                return None
            if hit[0] <= now:
                del self._keys[wrapped]
                return None
            self._keys.move_to_end(wrapped)
            return hit[1]

    def put(self, wrapped: bytes, key: bytes) -> None:
        ttl = float(settings.FIELD_ENCRYPTION_DATA_KEY_CACHE_SECONDS)
        size = int(settings.FIELD_ENCRYPTION_DATA_KEY_CACHE_SIZE)
        if ttl <= 0 or size <= 0:
            return
        with self._lock:
            self._keys[wrapped] = (time.monotonic() + ttl, key)
            self._keys.move_to_end(wrapped)
            while len(self._keys) > size:
                self._keys.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()


data_keys = DataKeyCache()


# --- sealing and opening ------------------------------------------------------------------------------


def seal(backend: Backend, plaintext: str) -> str:
    key_id, data_key, wrapped = backend.generate()
    envelope = Envelope(backend.format, key_id, wrapped, os.urandom(12), b"")
    ciphertext = AESGCM(data_key).encrypt(envelope.nonce, plaintext.encode(), envelope.aad())
    data_keys.put(wrapped, data_key)
    return replace(envelope, ciphertext=ciphertext).dumps()


def open_with(backend: Backend, envelope: Envelope) -> str:
    data_key = data_keys.get(envelope.wrapped)
    if data_key is None:
        data_key = backend.unwrap(envelope)
        data_keys.put(envelope.wrapped, data_key)
    try:
        return AESGCM(data_key).decrypt(envelope.nonce, envelope.ciphertext, envelope.aad()).decode()
    except InvalidTag:
        raise ImproperlyConfigured(
            f"A stored secret under {backend.kind} {envelope.key_id} fails its integrity check."
        ) from None
