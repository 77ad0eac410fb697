"""Where a data source's password comes from: stored encrypted (MultiFernet, governance.crypto), or
referenced and resolved at use time, so that the secret itself never enters the portal's database:

- `env:NAME` — an environment variable of the web and worker processes;
- `aws-sm:SECRET_ID#KEY` — AWS Secrets Manager (boto3; the ambient AWS credentials, region
  `AWS_REGION`, endpoint `AWS_SECRETS_MANAGER_ENDPOINT_URL` for a local one); `#KEY` picks a field of a
  JSON secret, without it the whole secret string is the password.

Resolved values are cached for `SECRET_CACHE_SECONDS` (60) per process, so a job does not call
Secrets Manager per connection and a rotated secret is picked up within a minute. Errors name the
reference, never a value. (Vault references are not implemented: no Vault server to test against.)
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from . import crypto

REFERENCE = re.compile(
    r"^(env):([A-Za-z_][A-Za-z0-9_]{0,127})$|^(aws-sm):([A-Za-z0-9/_+=.@!-]{1,512})(?:#([\w.-]{1,128}))?$"
)

_cache: dict[str, tuple[float, str]] = {}
_lock = threading.Lock()


class SecretUnavailable(ImproperlyConfigured):
    """A referenced secret cannot be read; the message names the reference, not a value."""


def check_reference(ref: str) -> str:
    """The reference, stripped, if it is well formed; raises ValueError saying what is expected."""
    ref = ref.strip()
    if not REFERENCE.match(ref):
        raise ValueError("Use env:NAME or aws-sm:SECRET_ID#KEY (or leave empty and store a password).")
    return ref


def _resolve(ref: str) -> str:
    match = REFERENCE.match(ref)
    if match is None:
        raise SecretUnavailable(f"{ref!r} is not a secret reference (env:NAME or aws-sm:SECRET_ID#KEY).")
    if match.group(1) == "env":
        name = match.group(2)
        if name not in os.environ:
            raise SecretUnavailable(f"The environment variable {name} (from {ref}) is not set.")
        return os.environ[name]
    return _aws_secret(match.group(4), match.group(5), ref)


def _aws_secret(secret_id: str, field: str | None, ref: str) -> str:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "secretsmanager",
        region_name=getattr(settings, "AWS_REGION", "") or None,
        endpoint_url=getattr(settings, "AWS_SECRETS_MANAGER_ENDPOINT_URL", "") or None,
    )
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
