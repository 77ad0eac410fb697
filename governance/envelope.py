"""Envelope encryption of stored secrets under a KMS key (AWS KMS), behind governance.crypto.

With FIELD_ENCRYPTION_KMS_KEY_ID set, each secret is encrypted (AES-256-GCM) with its own data key
from KMS `GenerateDataKey`; the column keeps a versioned envelope

    kms1.<key ARN>.<wrapped data key>.<nonce>.<ciphertext>     (each part base64url, no padding)

where only KMS can unwrap the data key (KMS Decrypt is called with the envelope's key ARN, so an
envelope re-labelled with another key is refused). Unwrapped data keys live only in this
process's memory, at most FIELD_ENCRYPTION_DATA_KEY_CACHE_SECONDS each and
FIELD_ENCRYPTION_DATA_KEY_CACHE_SIZE in all; they are never written anywhere.

Re-wrapping (after a new key, an alias moved to another key, or a key rotated on demand) calls KMS
`ReEncrypt` on the wrapped data key only: the plaintext data key never leaves KMS and the secret's
ciphertext is unchanged. Errors name the key and KMS's error code, never a value.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

FORMAT = "kms1"
PREFIX = FORMAT + "."


class KeyUnavailable(ImproperlyConfigured):
    """KMS cannot be reached, or refuses the key: the message names the key, never a secret."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Envelope:
    key_id: str  # the ARN of the KMS key that wrapped the data key
    wrapped: bytes
    nonce: bytes
    ciphertext: bytes

    def dumps(self) -> str:
        parts = (self.key_id.encode(), self.wrapped, self.nonce, self.ciphertext)
        return PREFIX + ".".join(_b64(p) for p in parts)

    @classmethod
    def loads(cls, token: str) -> Envelope:
        try:
            tag, key_id, wrapped, nonce, ciphertext = token.split(".")
            if tag != FORMAT:
                raise ValueError(tag)
            return cls(_unb64(key_id).decode(), _unb64(wrapped), _unb64(nonce), _unb64(ciphertext))
        except (ValueError, UnicodeDecodeError):
            raise ImproperlyConfigured("A stored secret is not a well-formed KMS envelope.") from None

    def aad(self) -> bytes:
        # The format only: the key id is checked by KMS itself (Decrypt with KeyId refuses a blob
        # wrapped by another key), and a re-wrap must leave the ciphertext as it is.
        return FORMAT.encode()


def is_envelope(token: str) -> bool:
    return token.startswith(PREFIX)


def key_id_of(token: str) -> str:
    """The KMS key ARN an envelope names; "" for a MultiFernet token or an empty value."""
    return Envelope.loads(token).key_id if is_envelope(token) else ""


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


# --- AWS KMS ------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _client(region: str, endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    # A session of its own: the default session is shared (and not thread-safe to set up).
    return boto3.session.Session().client(
        "kms",
        region_name=region or None,
        endpoint_url=endpoint or None,
        config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"}),
    )


def client() -> Any:
    return _client(settings.AWS_REGION, settings.AWS_KMS_ENDPOINT_URL)


def configured_key() -> str:
    """The KMS key (id, ARN or alias) secrets are encrypted under; "" for the local MultiFernet."""
    return str(getattr(settings, "FIELD_ENCRYPTION_KMS_KEY_ID", "") or "")


def _call(what: str, key: str, call: Any, **kwargs: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call(**kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise KeyUnavailable(f"AWS KMS refused to {what} with key {key}: {code}.") from None
    except BotoCoreError as exc:
        raise KeyUnavailable(f"AWS KMS could not be reached to {what} with key {key}: {type(exc).__name__}.") from None


def describe_key() -> dict[str, Any]:
    key = configured_key()
    metadata: dict[str, Any] = _call("describe the key", key, client().describe_key, KeyId=key)["KeyMetadata"]
    return metadata


def current_key_arn() -> str:
    """The ARN of the key the configured id or alias names now (an alias may have moved)."""
    return str(describe_key()["Arn"])


def seal(plaintext: str) -> str:
    key = configured_key()
    answer = _call("generate a data key", key, client().generate_data_key, KeyId=key, KeySpec="AES_256")
    data_key: bytes = answer["Plaintext"]
    envelope = Envelope(str(answer["KeyId"]), answer["CiphertextBlob"], os.urandom(12), b"")
    ciphertext = AESGCM(data_key).encrypt(envelope.nonce, plaintext.encode(), envelope.aad())
    data_keys.put(envelope.wrapped, data_key)
    return Envelope(envelope.key_id, envelope.wrapped, envelope.nonce, ciphertext).dumps()


def open_(token: str) -> str:
    envelope = Envelope.loads(token)
    data_key = data_keys.get(envelope.wrapped)
    if data_key is None:
        answer = _call(
            "unwrap a data key",
            envelope.key_id,
            client().decrypt,
            CiphertextBlob=envelope.wrapped,
            KeyId=envelope.key_id,
        )
        data_key = answer["Plaintext"]
        data_keys.put(envelope.wrapped, data_key)
    try:
        return AESGCM(data_key).decrypt(envelope.nonce, envelope.ciphertext, envelope.aad()).decode()
    except InvalidTag:
        raise ImproperlyConfigured(
            f"A stored secret under KMS key {envelope.key_id} fails its integrity check."
        ) from None


def rewrap(token: str, arn: str) -> str:
    """The same ciphertext with its data key wrapped by key `arn` (KMS ReEncrypt: the data key is
    never unwrapped outside KMS)."""
    envelope = Envelope.loads(token)
    answer = _call(
        "re-wrap a data key",
        f"{envelope.key_id} (to {arn})",
        client().re_encrypt,
        CiphertextBlob=envelope.wrapped,
        SourceKeyId=envelope.key_id,
        DestinationKeyId=arn,
    )
    return Envelope(str(answer["KeyId"]), answer["CiphertextBlob"], envelope.nonce, envelope.ciphertext).dumps()
