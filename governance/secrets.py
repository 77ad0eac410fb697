"""Where a data source's password comes from: stored encrypted (MultiFernet, governance.crypto), or
referenced and resolved at use time, so that the secret itself never enters the portal's database:

- `env:NAME` — an environment variable of the web and worker processes;
- `aws-sm:SECRET_ID#KEY` — AWS Secrets Manager (boto3; the ambient AWS credentials, region
  `AWS_REGION`, endpoint `AWS_SECRETS_MANAGER_ENDPOINT_URL` for a local one); `#KEY` picks a field of a
  JSON secret, without it the whole secret string is the password;
- `vault:PATH#KEY` — HashiCorp Vault's KV version 2 engine (hvac): field KEY of the secret at PATH
  under the mount `VAULT_KV_MOUNT` ("secret"), at `VAULT_ADDR` with the token `VAULT_TOKEN`
  (`VAULT_CACERT`: a CA bundle for Vault's TLS);
- `vault-db:MOUNT/ROLE` — not a password but a whole login: Vault's database secrets engine makes a
  new short-lived one per lease (username and password), see `governance.dynamic_credentials`.

The portal writes (rotates) aws-sm: and vault: references (`writable`, `write`): a new version of
the secret with its other fields kept; a Vault write is a check-and-set on the version read.

Resolved values are cached for `SECRET_CACHE_SECONDS` (60) per process, so a job does not call
Secrets Manager per connection and a rotated secret is picked up within a minute. Errors name the
reference, never a value.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from . import crypto, vault

REFERENCE = re.compile(
    r"^(env):([A-Za-z_][A-Za-z0-9_]{0,127})$"
    r"|^(aws-sm):([A-Za-z0-9/_+=.@!-]{1,512})(?:#([\w.-]{1,128}))?$"
    r"|^(vault):([A-Za-z0-9_.-]{1,128}(?:/[A-Za-z0-9_.-]{1,128}){0,15})#([\w.-]{1,128})$"
    r"|^(vault-db):([A-Za-z0-9_.-]{1,128}(?:/[A-Za-z0-9_.-]{1,128}){0,7})/([A-Za-z0-9_.-]{1,128})$"
)
FORMS = "env:NAME, aws-sm:SECRET_ID#KEY, vault:PATH#KEY or vault-db:MOUNT/ROLE"

_cache: dict[str, tuple[float, str]] = {}
_lock = threading.Lock()


class SecretUnavailable(ImproperlyConfigured):
    """A referenced secret cannot be read; the message names the reference, not a value."""


def _match(ref: str) -> re.Match[str] | None:
    match = REFERENCE.fullmatch(ref)
    if match and match.group(6) == "vault" and any(part in (".", "..") for part in match.group(7).split("/")):
        return None  # no walking out of the KV mount
    if match and match.group(9) == "vault-db" and any(p in (".", "..") for p in f"{match[10]}/{match[11]}".split("/")):
        return None
    return match


def dynamic_role(ref: str) -> tuple[str, str] | None:
    """(mount, role) of a `vault-db:` reference: the source's whole login comes from Vault's
    database secrets engine (governance.dynamic_credentials); None for any other reference."""
    match = _match(ref)
    return (match.group(10), match.group(11)) if match and match.group(9) == "vault-db" else None


def check_reference(ref: str) -> str:
    """The reference, stripped, if it is well formed; raises ValueError saying what is expected."""
    ref = ref.strip()
    if not _match(ref):
        raise ValueError(f"Use {FORMS} (or leave empty and store a password).")
    return ref


def _resolve(ref: str) -> str:
    match = _match(ref)
    if match is None:
        raise SecretUnavailable(f"{ref!r} is not a secret reference ({FORMS}).")
    if match.group(1) == "env":
        name = match.group(2)
        if name not in os.environ:
            raise SecretUnavailable(f"The environment variable {name} (from {ref}) is not set.")
        return os.environ[name]
    if match.group(6) == "vault":
        return _vault_secret(match.group(7), match.group(8), ref)
    if match.group(9) == "vault-db":
        raise SecretUnavailable(f"{ref} is a whole login from Vault, not a password: it is leased per process.")
    return _aws_secret(match.group(4), match.group(5), ref)


def _vault_kv(ref: str) -> Any:
    """The KV version 2 API of the portal's Vault client."""
    if not vault.configured():
        raise SecretUnavailable(f"{ref} needs VAULT_ADDR and VAULT_TOKEN in the portal's settings.")
    return vault.client().secrets.kv.v2


def _vault_read(path: str, ref: str) -> dict[str, Any]:
    """The latest version of the secret at `path`: {"data": {...}, "metadata": {"version": N, ...}}."""
    import requests
    from hvac import exceptions

    try:
        response = _vault_kv(ref).read_secret_version(
            path=path, mount_point=getattr(settings, "VAULT_KV_MOUNT", "secret"), raise_on_deleted_version=True
        )
    except exceptions.InvalidPath:
        raise SecretUnavailable(f"Vault has no secret at {ref.split('#')[0]}.") from None
    except (exceptions.Forbidden, exceptions.Unauthorized):
        raise SecretUnavailable(f"Vault refused {ref}: the token may not read it.") from None
    except exceptions.VaultError as exc:
        raise SecretUnavailable(f"Vault could not answer for {ref}: {type(exc).__name__}.") from None
    except requests.RequestException as exc:
        raise SecretUnavailable(f"Vault could not be reached for {ref}: {type(exc).__name__}.") from None
    read: dict[str, Any] = response["data"]
    return read


def _vault_secret(path: str, field: str, ref: str) -> str:
    try:
        return str(_vault_read(path, ref)["data"][field])
    except (KeyError, TypeError):
        raise SecretUnavailable(f"The Vault secret of {ref} has no field {field!r}.") from None


def _secrets_manager() -> Any:
    import boto3

    return boto3.client(
        "secretsmanager",
        region_name=getattr(settings, "AWS_REGION", "") or None,
        endpoint_url=getattr(settings, "AWS_SECRETS_MANAGER_ENDPOINT_URL", "") or None,
    )


def _aws_secret(secret_id: str, field: str | None, ref: str) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    client = _secrets_manager()
    try:
        value: str = client.get_secret_value(SecretId=secret_id)["SecretString"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise SecretUnavailable(f"AWS Secrets Manager refused {ref}: {code}.") from None
    except BotoCoreError as exc:
        raise SecretUnavailable(f"AWS Secrets Manager could not be reached for {ref}: {type(exc).__name__}.") from None
    if field is None:
        return value
    try:
        document: Any = json.loads(value)
        return str(document[field])
    except (ValueError, KeyError, TypeError):
        raise SecretUnavailable(f"The secret of {ref} is not JSON with a field {field!r}.") from None


def resolve(ref: str) -> str:
    ttl = float(getattr(settings, "SECRET_CACHE_SECONDS", 60))
    now = time.monotonic()
    with _lock:
        hit = _cache.get(ref)
        if hit is not None and hit[0] > now:
            return hit[1]
    value = _resolve(ref)
    with _lock:
        _cache[ref] = (now + ttl, value)
    return value


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def source_password(source: Any) -> str:
    """The password to connect to `source` with: its reference resolved, or its stored one."""
    if getattr(source, "password_ref", ""):
        return resolve(source.password_ref)
    return crypto.decrypt(source.password_encrypted)


def changed_at(ref: str) -> datetime | None:
    """When the referenced secret last changed, as its store says (None: the store cannot tell)."""
    match = _match(ref)
    if match is None:
        raise SecretUnavailable(f"{ref!r} is not a secret reference ({FORMS}).")
    if match.group(1) == "env" or match.group(9) == "vault-db":
        return None  # a dynamic login's age is its lease's, observed when it is taken
    if match.group(6) == "vault":
        return _vault_changed_at(match.group(7), ref)
    return _aws_changed_at(match.group(4), ref)


def _aws_changed_at(secret_id: str, ref: str) -> datetime | None:
    from botocore.exceptions import BotoCoreError, ClientError

    client = _secrets_manager()
    try:
        described = client.describe_secret(SecretId=secret_id)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise SecretUnavailable(f"AWS Secrets Manager refused {ref}: {code}.") from None
    except BotoCoreError as exc:
        raise SecretUnavailable(f"AWS Secrets Manager could not be reached for {ref}: {type(exc).__name__}.") from None
    when = described.get("LastChangedDate") or described.get("CreatedDate")
    return when if isinstance(when, datetime) else None


def _vault_changed_at(path: str, ref: str) -> datetime | None:
    import requests
    from hvac import exceptions

    kv = _vault_kv(ref)
    try:
        meta = kv.read_secret_metadata(path=path, mount_point=getattr(settings, "VAULT_KV_MOUNT", "secret"))
    except (exceptions.VaultError, requests.RequestException) as exc:
        raise SecretUnavailable(f"Vault could not tell the age of {ref}: {type(exc).__name__}.") from None
    text = str((meta.get("data") or {}).get("updated_time") or "")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def writable(ref: str) -> bool:
    """Whether the portal knows how to write a value into the referenced secret (aws-sm:, vault:)."""
    match = _match(ref)
    return bool(match and (match.group(3) == "aws-sm" or match.group(6) == "vault"))


def write(ref: str, value: str) -> None:
    """Put `value` into the referenced secret (a new version; the secret's other fields kept), and
    into this process's cache. Only aws-sm: and vault: references (see `writable`)."""
    match = _match(ref)
    if not match or not writable(ref):
        raise SecretUnavailable(f"The portal does not write {ref.split(':', 1)[0]}: references.")
    if match.group(6) == "vault":
        _vault_write(match.group(7), match.group(8), value, ref)
    else:
        _aws_write(match.group(4), match.group(5), value, ref)
    ttl = float(getattr(settings, "SECRET_CACHE_SECONDS", 60))
    with _lock:
        _cache[ref] = (time.monotonic() + ttl, value)


def _vault_write(path: str, field: str, value: str, ref: str) -> None:
    """A new version of the KV secret with `field` set, written check-and-set on the version read:
    if someone else wrote it in between, Vault refuses and nothing is overwritten."""
    import requests
    from hvac import exceptions

    read = _vault_read(path, ref)
    document, version = read.get("data"), (read.get("metadata") or {}).get("version")
    if not isinstance(document, dict) or not isinstance(version, int):
        raise SecretUnavailable(f"The Vault secret of {ref} is not a KV version 2 secret.")
    try:
        _vault_kv(ref).create_or_update_secret(
            path=path,
            secret={**document, field: value},
            cas=version,
            mount_point=getattr(settings, "VAULT_KV_MOUNT", "secret"),
        )
    except exceptions.InvalidRequest as exc:
        said = vault.errors_of(exc)
        if "check-and-set" in said:
            raise SecretUnavailable(
                f"Vault's secret of {ref} changed while the portal wrote it (check-and-set on version {version}"
                " failed); nothing was overwritten."
            ) from None
        raise SecretUnavailable(f"Vault refused to write {ref}: {said}.") from None
    except exceptions.VaultError as exc:
        raise SecretUnavailable(f"Vault refused to write {ref}: {vault.errors_of(exc)}.") from None
    except requests.RequestException as exc:
        raise SecretUnavailable(f"Vault could not be reached to write {ref}: {type(exc).__name__}.") from None


def _aws_write(secret_id: str, field: str | None, value: str, ref: str) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    client = _secrets_manager()
    try:
        if field is None:
            text = value
        else:
            try:
                document = json.loads(client.get_secret_value(SecretId=secret_id)["SecretString"])
            except ValueError:
                raise SecretUnavailable(f"The secret of {ref} is not JSON with a field {field!r}.") from None
            if not isinstance(document, dict):
                raise SecretUnavailable(f"The secret of {ref} is not JSON with a field {field!r}.")
            document[field] = value
            text = json.dumps(document)
        client.put_secret_value(SecretId=secret_id, SecretString=text)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise SecretUnavailable(f"AWS Secrets Manager refused to write {ref}: {code}.") from None
    except BotoCoreError as exc:
        raise SecretUnavailable(f"AWS Secrets Manager could not be reached for {ref}: {type(exc).__name__}.") from None
