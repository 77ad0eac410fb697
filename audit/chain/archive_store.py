"""Where `audit_archive` keeps its archives, and reading them back to continue the chain.

Two stores behind one seam (`stage` a file to write, `put` it with its signed checkpoint, `get` it
back by the location `put` returned):

- `LocalDirStore`: a folder (`audit_archive --to DIR`), as before; the checkpoint is written beside
  the archive as `<name>.checkpoint.json`. The location recorded is empty: the files may be moved
  where the retention policy says, so verification does not read them back (it starts from the
  signed checkpoint row, as it always did).
- `S3ObjectLockStore`: a bucket with Object Lock (`AUDIT_ARCHIVE_S3_BUCKET`). Each archive and its
  checkpoint are put locked in COMPLIANCE mode until `AUDIT_ARCHIVE_S3_RETENTION_DAYS` from now
  (0: the bucket's default retention), encrypted with SSE-KMS under `AUDIT_ARCHIVE_S3_KMS_KEY_ID`
  (empty: the bucket's default encryption). The location recorded names the exact object version,
  `s3://BUCKET/KEY?versionId=V`: a later version under the same key (an overwrite attempt) or a
  delete marker (a plain DeleteObject) changes nothing that verification reads, and the locked
  version itself cannot be deleted before its date, not even by the account's root.

`read_back` is what verification calls: every archive with a location is fetched, its SHA-256
compared with the signed checkpoint row, and its lines walked as the database's seals are (each
event against its MAC, each chained MAC following the one before, from genesis or the archive
before it, ending on the checkpoint's chained MAC). No Django models here besides the rows handed in.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import hmac
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, quote, unquote, urlsplit

from django.conf import settings
from django.utils import timezone

from .mac import FIELDS, GENESIS, archive_signature, canonical_values

CHUNK = 1 << 20


class ArchiveStoreError(Exception):
    """An archive could not be written or read back."""


@dataclass(frozen=True)
class Fetched:
    """An archive read back: its bytes (a temporary file, removed by `close`), their SHA-256, and
    the Object Lock the store reports on that version (empty for a folder)."""

    path: Path
    sha256: str
    lock_mode: str = ""
    retain_until: dt.datetime | None = None

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


class ArchiveStore(Protocol):
    def stage(self, name: str) -> Path:
        """Where to write the archive `name` before `put`."""

    def put(self, name: str, staged: Path, *, sha256: str, checkpoint: dict[str, Any]) -> str:
        """Keep the staged archive and its signed checkpoint; the location to read it back from
        (empty: not to be read back)."""

    def describe(self, name: str, location: str) -> str: ...


def checkpoint_document(
    *, name: str, since: int, upto: int, events: int, chain_mac: str, sha256: str
) -> dict[str, Any]:
    """The signed checkpoint kept beside each archive: what the AuditArchive row records (its
    signature binds the file's SHA-256 to the chain), and the head as an anchor document, so that
    the archives alone (without the database) say where the chain stood."""
    from .. import anchors

    return {
        "archive": name,
        "from_seq": since,
        "upto_seq": upto,
        "events": events,
        "chain_mac": chain_mac,
        "sha256": sha256,
        "signature": archive_signature(upto, chain_mac, sha256),
        "anchor": anchors.document(upto, chain_mac),
    }


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, indent=1).encode() + b"\n"


# --- a folder -----------------------------------------------------------------------------------


@dataclass
class LocalDirStore:
    folder: Path

    def stage(self, name: str) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder / name

    def put(self, name: str, staged: Path, *, sha256: str, checkpoint: dict[str, Any]) -> str:
        beside = self.folder / f"{name}.checkpoint.json"
        with beside.open("wb") as f:
            f.write(_json(checkpoint))
            f.flush()
            os.fsync(f.fileno())
        return ""

    def describe(self, name: str, location: str) -> str:
        return str(self.folder / name)


# --- S3 with Object Lock ------------------------------------------------------------------------


@dataclass
class S3ObjectLockStore:
    bucket: str
    prefix: str
    retention_days: int
    kms_key_id: str = ""
    endpoint_url: str = ""
    region: str = ""

    def _client(self) -> Any:
        from ..witnesses import _s3_client

        return _s3_client(self.endpoint_url, self.region)

    def stage(self, name: str) -> Path:
        handle, path = tempfile.mkstemp(prefix="audit-archive-", suffix=".jsonl.gz")
        os.close(handle)
        return Path(path)

    def _put(self, key: str, body: Any, sha256: bytes, content_type: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        from ..witnesses import _aws_error

        put: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": body,
            "ContentType": content_type,
            # Object Lock takes only writes with an integrity checksum; S3 checks this one on arrival.
            "ChecksumAlgorithm": "SHA256",
            "ChecksumSHA256": base64.b64encode(sha256).decode(),
        }
        if self.retention_days > 0:
            put["ObjectLockMode"] = "COMPLIANCE"
            put["ObjectLockRetainUntilDate"] = timezone.now() + dt.timedelta(days=self.retention_days)
        if self.kms_key_id:
            put["ServerSideEncryption"] = "aws:kms"
            put["SSEKMSKeyId"] = self.kms_key_id
        try:
            made = self._client().put_object(**put)
        except (BotoCoreError, ClientError) as exc:
            raise ArchiveStoreError(f"cannot write s3://{self.bucket}/{key}: {_aws_error(exc)}") from None
        version = made.get("VersionId") or ""
        if not version or version == "null":
            raise ArchiveStoreError(
                f"s3://{self.bucket} did not version s3://{self.bucket}/{key}: the bucket needs Object Lock "
                "(which turns versioning on); the object written is not protected"
            )
        return str(version)

    def put(self, name: str, staged: Path, *, sha256: str, checkpoint: dict[str, Any]) -> str:
        key = self.prefix + name
        try:
            with staged.open("rb") as body:
                version = self._put(key, body, bytes.fromhex(sha256), "application/gzip")
            doc = _json(checkpoint)
            self._put(f"{key}.checkpoint.json", doc, hashlib.sha256(doc).digest(), "application/json")
        finally:
            staged.unlink(missing_ok=True)
        return f"s3://{self.bucket}/{quote(key)}?versionId={quote(version, safe='')}"

    def describe(self, name: str, location: str) -> str:
        bucket, key, version = parse_s3(location)
        return f"s3://{bucket}/{key} (version {version})"

    def get(self, location: str) -> Fetched:
        from botocore.exceptions import BotoCoreError, ClientError

        from ..witnesses import _aws_error

        bucket, key, version = parse_s3(location)
        handle, path = tempfile.mkstemp(prefix="audit-archive-read-", suffix=".jsonl.gz")
        digest = hashlib.sha256()
        try:
            got = self._client().get_object(Bucket=bucket, Key=key, VersionId=version)
            with os.fdopen(handle, "wb") as out:
                for chunk in got["Body"].iter_chunks(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        except (BotoCoreError, ClientError) as exc:
            Path(path).unlink(missing_ok=True)
            raise ArchiveStoreError(f"cannot read s3://{bucket}/{key} version {version}: {_aws_error(exc)}") from None
        return Fetched(
            Path(path), digest.hexdigest(), str(got.get("ObjectLockMode") or ""), got.get("ObjectLockRetainUntilDate")
        )


def parse_s3(location: str) -> tuple[str, str, str]:
    parts = urlsplit(location)
    version = parse_qs(parts.query).get("versionId", [""])[0]
    if parts.scheme != "s3" or not parts.netloc or not version:
        raise ArchiveStoreError(f"not an S3 object version: {location!r}")
    return parts.netloc, unquote(parts.path.lstrip("/")), version


def s3_configured() -> S3ObjectLockStore | None:
    bucket = getattr(settings, "AUDIT_ARCHIVE_S3_BUCKET", "")
    if not bucket:
        return None
    return S3ObjectLockStore(
        bucket=bucket,
        prefix=settings.AUDIT_ARCHIVE_S3_PREFIX,
        retention_days=settings.AUDIT_ARCHIVE_S3_RETENTION_DAYS,
        kms_key_id=settings.AUDIT_ARCHIVE_S3_KMS_KEY_ID,
        endpoint_url=settings.AUDIT_ARCHIVE_S3_ENDPOINT_URL,
        region=getattr(settings, "AWS_REGION", ""),
    )


def store_for(folder: Any = None) -> ArchiveStore:
    """A folder when one is given (`audit_archive --to DIR`), else the configured bucket."""
    if folder is not None:
        return LocalDirStore(Path(folder))
    store = s3_configured()
    if store is None:
        raise ArchiveStoreError("no archive destination: give --to DIR, or set AUDIT_ARCHIVE_S3_BUCKET")
    return store


def reader_for(location: str) -> S3ObjectLockStore:
    """The store an archive's location is read from: the configured endpoint, the location's bucket."""
    bucket = parse_s3(location)[0]
    return S3ObjectLockStore(
        bucket=bucket,
        prefix="",
        retention_days=0,
        endpoint_url=getattr(settings, "AUDIT_ARCHIVE_S3_ENDPOINT_URL", ""),
        region=getattr(settings, "AWS_REGION", ""),
    )


# --- reading back -------------------------------------------------------------------------------


@dataclass
class ReadBack:
    archives: int = 0  # archives fetched and walked
    events: int = 0  # archived events checked
    problems: list[tuple[int, str]] = field(default_factory=list)  # (upto_seq, message)


def read_back(rows: list[Any], secret: bytes) -> ReadBack:
    """Fetch and walk every archive (AuditArchive rows, oldest first) that has a location. One with
    none (a folder's) is not read: the chain goes on from its signed checkpoint, as before."""
    result = ReadBack()
    expected, previous = 1, GENESIS
    for row in rows:
        if not hmac.compare_digest(row.signature, archive_signature(row.upto_seq, row.chain_mac, row.sha256)):
            message = f"the checkpoint of the archive up to seal {row.upto_seq} is not signed with the audit key"
            result.problems.append((row.upto_seq, message))
        elif row.location:
            result.archives += 1
            problem = _walk_archive(row, expected, previous, secret, result)
            if problem:
                result.problems.append((row.upto_seq, f"archive {row.file_name} ({row.location}): {problem}"))
        expected, previous = row.upto_seq + 1, row.chain_mac
    return result


def _walk_archive(row: Any, expected: int, previous: str, secret: bytes, result: ReadBack) -> str:
    try:
        fetched = reader_for(row.location).get(row.location)
    except ArchiveStoreError as exc:
        return str(exc)
    try:
        if not hmac.compare_digest(fetched.sha256, row.sha256):
            return f"its SHA-256 is {fetched.sha256}, not the {row.sha256} its signed checkpoint recorded (changed)"
        if fetched.lock_mode != "COMPLIANCE":
            return f"it is not under Object Lock in COMPLIANCE mode ({fetched.lock_mode or 'no lock'})"
        count = 0
        with gzip.open(fetched.path, "rb") as lines:
            for raw in lines:
                line = json.loads(raw)
                seq, event_id, sealed = line["seq"], line["event_id"], line["event_mac"]
                if seq != expected:
                    return f"seal {expected} is missing (found {seq})"
                values = [line["event"].get(f) for f in FIELDS]
                values[0] = dt.datetime.fromisoformat(values[0].replace("Z", "+00:00"))
                mac = hmac.digest(secret, canonical_values(values, event_id), "sha256").hex()
                if not hmac.compare_digest(mac, sealed):
                    return f"seal {seq}: event #{event_id} does not match its MAC"
                link = hmac.digest(secret, f"{previous}|{seq}|{event_id}|{sealed}".encode(), "sha256").hex()
                if not hmac.compare_digest(link, line["chain_mac"]):
                    return f"seal {seq}: chained MAC does not follow seal {seq - 1}"
                previous, expected, count = link, seq + 1, count + 1
        if expected - 1 != row.upto_seq or not hmac.compare_digest(previous, row.chain_mac):
            return f"it ends at seal {expected - 1}, not on its checkpoint (seal {row.upto_seq})"
        result.events += count
        return ""
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"it is not a readable archive ({exc.__class__.__name__})"
    finally:
        fetched.close()
