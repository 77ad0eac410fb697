"""AWS KMS as the key of stored secrets' envelopes (format `kms1`, governance.envelope.core).

A data key per secret from KMS `GenerateDataKey` under FIELD_ENCRYPTION_KMS_KEY_ID (an id, ARN or,
best, an alias); the envelope names the ARN of the key that wrapped it, and KMS `Decrypt` is called
with that ARN, so an envelope re-labelled with another key is refused. Re-wrapping (a new key behind
the alias) is KMS `ReEncrypt` of the wrapped data key only: the plaintext data key never leaves KMS.
Errors name the key and KMS's error code, never a value.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from django.conf import settings

from .core import Envelope, KeyUnavailable


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


def _call(what: str, key: str, call: Any, **kwargs: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call(**kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise KeyUnavailable(f"AWS KMS refused to {what} with key {key}: {code}.") from None
    except BotoCoreError as exc:
        raise KeyUnavailable(f"AWS KMS could not be reached to {what} with key {key}: {type(exc).__name__}.") from None


class AwsKms:
    format = "kms1"
    kind = "KMS key"

    def configured(self) -> str:
        return str(getattr(settings, "FIELD_ENCRYPTION_KMS_KEY_ID", "") or "")

    def describe(self) -> dict[str, Any]:
        key = self.configured()
        metadata: dict[str, Any] = _call("describe the key", key, client().describe_key, KeyId=key)["KeyMetadata"]
        return metadata

    def current(self) -> str:
        """The ARN of the key the configured id or alias names now (an alias may have moved)."""
        return str(self.describe()["Arn"])

    def label(self, envelope: Envelope) -> str:
        return envelope.key_id

    def generate(self) -> tuple[str, bytes, bytes]:
        key = self.configured()
        answer = _call("generate a data key", key, client().generate_data_key, KeyId=key, KeySpec="AES_256")
        return str(answer["KeyId"]), answer["Plaintext"], answer["CiphertextBlob"]

    def unwrap(self, envelope: Envelope) -> bytes:
        answer = _call(
            "unwrap a data key",
            envelope.key_id,
            client().decrypt,
            CiphertextBlob=envelope.wrapped,
            KeyId=envelope.key_id,
        )
        plaintext: bytes = answer["Plaintext"]
        return plaintext

    def rewrap(self, envelope: Envelope, current: str) -> Envelope:
        answer = _call(
            "re-wrap a data key",
            f"{envelope.key_id} (to {current})",
            client().re_encrypt,
            CiphertextBlob=envelope.wrapped,
            SourceKeyId=envelope.key_id,
            DestinationKeyId=current,
        )
        return Envelope(
            self.format, str(answer["KeyId"]), answer["CiphertextBlob"], envelope.nonce, envelope.ciphertext
        )

    def unusable(self) -> str:
        metadata = self.describe()
        if metadata.get("KeyState") != "Enabled":
            return (
                f"The KMS key {self.configured()} ({metadata.get('Arn')}) is {metadata.get('KeyState')}: "
                "stored secrets cannot be decrypted."
            )
        return ""
