"""HashiCorp Vault's Transit engine as the key of stored secrets' envelopes (format `vt1`,
governance.envelope.core), through hvac.

FIELD_ENCRYPTION_VAULT_TRANSIT_KEY names the Transit key (mount VAULT_TRANSIT_MOUNT, "transit"), at
VAULT_ADDR with VAULT_TOKEN (governance.vault). A data key per secret comes from
`datakey/plaintext/NAME` (the plaintext for this process's memory only, the `vault:vN:…` wrapping
for the envelope; `datakey/wrapped` would return no plaintext and need a second call); reading calls
`decrypt/NAME` with the envelope's key; re-wrapping calls `rewrap/NAME`, inside Vault, to the key's
latest version. The envelope's key is "mount/name", its version the wrapping's `vN`; the key that
encrypts now is "mount/name:vLATEST" (`keys/NAME`'s latest_version). Errors name the key and
Vault's error, never a value.
"""

from __future__ import annotations

import base64
from typing import Any

from django.conf import settings

from .. import vault
from .core import Envelope, KeyUnavailable


def _mount() -> str:
    return str(getattr(settings, "VAULT_TRANSIT_MOUNT", "") or "transit").strip("/")


def _split(key_id: str) -> tuple[str, str]:
    mount, _, name = key_id.rpartition("/")
    return mount, name


class KeyMissing(KeyUnavailable):
    """Vault answers that the mount has no such key (404)."""


def _call(what: str, key: str, method: str, **kwargs: Any) -> Any:
    import requests
    from hvac import exceptions

    if not vault.configured():
        raise KeyUnavailable(f"Vault Transit key {key} needs VAULT_ADDR and VAULT_TOKEN in the portal's settings.")
    try:
        return getattr(vault.client().secrets.transit, method)(**kwargs)
    except exceptions.InvalidPath:
        raise KeyMissing(f"Vault Transit has no key {key} (or no mount {key.rpartition('/')[0]}).") from None
    except exceptions.VaultError as exc:
        raise KeyUnavailable(f"Vault refused to {what} with Transit key {key}: {vault.errors_of(exc)}.") from None
    except requests.RequestException as exc:
        raise KeyUnavailable(
            f"Vault could not be reached to {what} with Transit key {key}: {type(exc).__name__}."
        ) from None


def _version(wrapped: bytes) -> str:
    """`v3` of `vault:v3:…` ("" for anything else)."""
    parts = wrapped.split(b":", 2)
    return parts[1].decode() if len(parts) == 3 and parts[0] == b"vault" else ""


class VaultTransit:
    format = "vt1"
    kind = "Vault Transit key"

    def configured(self) -> str:
        return str(getattr(settings, "FIELD_ENCRYPTION_VAULT_TRANSIT_KEY", "") or "")

    def key_id(self) -> str:
        return f"{_mount()}/{self.configured()}"

    def read_key(self) -> dict[str, Any]:
        key = self.key_id()
        answer = _call("read the key", key, "read_key", name=self.configured(), mount_point=_mount())
        data: dict[str, Any] = answer["data"]
        return data

    def current(self) -> str:
        return f"{self.key_id()}:v{self.read_key()['latest_version']}"

    def label(self, envelope: Envelope) -> str:
        return f"{envelope.key_id}:{_version(envelope.wrapped)}"

    def generate(self) -> tuple[str, bytes, bytes]:
        key = self.key_id()
        answer = _call(
            "generate a data key",
            key,
            "generate_data_key",
            name=self.configured(),
            key_type="plaintext",
            mount_point=_mount(),
        )["data"]
        return key, base64.b64decode(answer["plaintext"]), str(answer["ciphertext"]).encode()

    def unwrap(self, envelope: Envelope) -> bytes:
        mount, name = _split(envelope.key_id)
        answer = _call(
            "unwrap a data key",
            self.label(envelope),
            "decrypt_data",
            name=name,
            ciphertext=envelope.wrapped.decode(),
            mount_point=mount,
        )
        return base64.b64decode(answer["data"]["plaintext"])

    def rewrap(self, envelope: Envelope, current: str) -> Envelope | None:
        key, _, version = current.rpartition(":")
        if key != envelope.key_id:
            return None  # another Transit key: Vault re-wraps only within one key
        mount, name = _split(envelope.key_id)
        answer = _call(
            "re-wrap a data key",
            f"{self.label(envelope)} (to {version})",
            "rewrap_data",
            name=name,
            ciphertext=envelope.wrapped.decode(),
            key_version=int(version.lstrip("v")),
            mount_point=mount,
        )
        wrapped = str(answer["data"]["ciphertext"]).encode()
        return Envelope(self.format, envelope.key_id, wrapped, envelope.nonce, envelope.ciphertext)

    def unusable(self) -> str:
        try:
            self.read_key()
        except KeyMissing as exc:
            return f"{exc} Stored secrets cannot be sealed or opened."
        return ""
