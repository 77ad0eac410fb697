"""Integrity of an S3 prefix (no Django here): the bucket's protections, and a manifest of the
prefix's objects to compare with the last one.

- **Protections** (read with the source's keys): versioning (`GetBucketVersioning`), Object Lock and
  its default retention (`GetObjectLockConfiguration`), default encryption (`GetBucketEncryption`:
  SSE-KMS with which key, or SSE-S3). Each missing one is reported in words.
- **Manifest**: every object under the prefix with its ETag (an MD5 of the content for single-part
  uploads, a digest of the parts' MD5s otherwise; either changes when the content does) and size.
  ``diff`` says which objects were added, deleted or changed. Only keys, sizes and ETags are read:
  no object's content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Manifest = dict[str, list[Any]]  # key -> [etag, size]


class S3IntegrityError(Exception):
    """S3 refused or could not be reached; the message names the call and S3's code, never a secret."""


@dataclass
class Protections:
    versioning: str = "Disabled"  # Enabled / Suspended / Disabled
    object_lock: bool = False
    lock_mode: str = ""  # GOVERNANCE / COMPLIANCE
    lock_days: int | None = None
    encryption: str = ""  # aws:kms / AES256 / "" (none)
    kms_key: str = ""
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "versioning": self.versioning,
            "object_lock": self.object_lock,
            "lock_mode": self.lock_mode,
            "lock_days": self.lock_days,
            "encryption": self.encryption,
            "kms_key": self.kms_key,
            "problems": list(self.problems),
        }


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", type(exc).__name__))


def protections(s3: Any, bucket: str) -> Protections:
    from botocore.exceptions import BotoCoreError, ClientError

    out = Protections()
    try:
        out.versioning = s3.get_bucket_versioning(Bucket=bucket).get("Status", "Disabled")
    except (ClientError, BotoCoreError) as exc:
        raise S3IntegrityError(f"S3 refused GetBucketVersioning on {bucket}: {_code(exc)}.") from None
    try:
        lock = s3.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"]
        out.object_lock = lock.get("ObjectLockEnabled") == "Enabled"
        retention = lock.get("Rule", {}).get("DefaultRetention", {})
        out.lock_mode = retention.get("Mode", "")
        out.lock_days = retention.get("Days") or (retention["Years"] * 365 if retention.get("Years") else None)
    except ClientError as exc:
        if _code(exc) != "ObjectLockConfigurationNotFoundError":
            raise S3IntegrityError(f"S3 refused GetObjectLockConfiguration on {bucket}: {_code(exc)}.") from None
    except BotoCoreError as exc:
        raise S3IntegrityError(f"S3 could not be reached for {bucket}: {type(exc).__name__}.") from None
    try:
        rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        default = rules[0]["ApplyServerSideEncryptionByDefault"] if rules else {}
        out.encryption = default.get("SSEAlgorithm", "")
        out.kms_key = default.get("KMSMasterKeyID", "")
    except ClientError as exc:
        if _code(exc) != "ServerSideEncryptionConfigurationNotFoundError":
            raise S3IntegrityError(f"S3 refused GetBucketEncryption on {bucket}: {_code(exc)}.") from None
    except BotoCoreError as exc:
        raise S3IntegrityError(f"S3 could not be reached for {bucket}: {type(exc).__name__}.") from None
    if out.versioning != "Enabled":
        out.problems.append(f"versioning is {out.versioning.lower()}: an overwritten or deleted object is gone")
    if not out.object_lock:
        out.problems.append("Object Lock is off: objects can be deleted or overwritten before any retention")
    elif not out.lock_mode:
        out.problems.append("Object Lock has no default retention: new objects are not locked")
    if out.encryption != "aws:kms":
        out.problems.append("default encryption is " + ("SSE-S3, not SSE-KMS" if out.encryption == "AES256" else "off"))
    return out


def manifest(s3: Any, bucket: str, prefix: str, *, limit: int) -> Manifest:
    """Every object under `prefix` (at most `limit`; more raises S3IntegrityError)."""
    from botocore.exceptions import BotoCoreError, ClientError

    out: Manifest = {}
    base = prefix.strip("/")
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{base}/" if base else ""):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = [str(obj.get("ETag", "")).strip('"'), int(obj.get("Size", 0))]
                if len(out) > limit:
                    raise S3IntegrityError(f"More than {limit} objects under s3://{bucket}/{base}: no manifest taken.")
    except ClientError as exc:
        raise S3IntegrityError(f"S3 refused ListObjectsV2 on {bucket}: {_code(exc)}.") from None
    except BotoCoreError as exc:
        raise S3IntegrityError(f"S3 could not be reached for {bucket}: {type(exc).__name__}.") from None
    return out


def digest(entries: Mapping[str, list[Any]]) -> str:
    return hashlib.sha256(json.dumps(sorted(entries.items()), separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Diff:
    added: list[str]
    deleted: list[str]
    changed: list[str]

    def __bool__(self) -> bool:
        return bool(self.added or self.deleted or self.changed)


def diff(before: Mapping[str, list[Any]], now: Mapping[str, list[Any]]) -> Diff:
    return Diff(
        added=sorted(set(now) - set(before)),
        deleted=sorted(set(before) - set(now)),
        changed=sorted(k for k in set(now) & set(before) if list(now[k]) != list(before[k])),
    )
