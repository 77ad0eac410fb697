"""Anchor documents and the witnesses that keep them outside the database.

A document is the chain's head (sequence number, chained MAC, time) signed with the audit key; a
witness keeps them where the database's administrators cannot rewrite them: an append-only JSON-lines
file, or an S3 bucket with Object Lock. `read_latest` returns the newest valid anchor of each
configured witness (and what could not be read), which `audit.anchors` checks the database against
and the verification walks the whole trail against. No database access here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hmac
import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.utils import timezone

from . import chain

log = logging.getLogger(__name__)

FORMAT = 2
# S3 object names: the sequence number subtracted from this, zero-padded, so that listing (which
# S3 returns in ascending key order) starts with the highest sequence number.
INVERTED = 10**19 - 1
NAME = re.compile(r"(\d{19})\.json")
S3_PAGE = 25  # objects looked at for the newest valid anchor before failing closed
HEX64 = re.compile(r"[0-9a-f]{64}")


class WitnessError(Exception):
    """A witness could not be read or written."""


@dataclass(frozen=True)
class Anchor:
    seq: int
    chain_mac: str
    at: str
    where: str  # which witness (or checkpoint file) holds it, for messages
    format: int = FORMAT


# --- the document -------------------------------------------------------------------------------


def _signature(body: dict[str, Any]) -> str:
    message = b"audit-anchor|" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(chain.key(), message, "sha256").hexdigest()


def document(seq: int, mac: str, at: dt.datetime | None = None) -> dict[str, Any]:
    """The signed head: what anchors, checkpoints and the SIEM line carry."""
    body: dict[str, Any] = {"v": FORMAT, "seq": int(seq), "chain_mac": mac, "at": chain._at(at or timezone.now())}
    return {**body, "signature": _signature(body)}


def parse(doc: Any, *, where: str) -> Anchor | None:
    """The anchor a document states, or None when it is not one signed with the audit key.
    Checkpoints printed before format 2 ({seq, chain_mac, at, signature}) are still accepted."""
    if not isinstance(doc, dict):
        return None
    seq, mac, at, signature = doc.get("seq"), doc.get("chain_mac"), doc.get("at"), doc.get("signature")
    if not (isinstance(seq, int) and seq >= 0 and isinstance(mac, str) and isinstance(at, str)):
        return None
    if not isinstance(signature, str):
        return None
    if "v" not in doc:
        ok = hmac.compare_digest(signature, chain.legacy_checkpoint_signature(doc))
        return Anchor(seq, mac, at, where, format=1) if ok else None
    body = {"v": doc["v"], "seq": seq, "chain_mac": mac, "at": at}
    if doc["v"] != FORMAT or not HEX64.fullmatch(mac) or not hmac.compare_digest(signature, _signature(body)):
        return None
    return Anchor(seq, mac, at, where)


def _parse_bytes(raw: bytes, *, where: str) -> Anchor | None:
    try:
        return parse(json.loads(raw), where=where)
    except ValueError:
        return None


def _line(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n"


# --- witnesses ----------------------------------------------------------------------------------


class Witness(Protocol):
    name: str

    def latest(self) -> tuple[Anchor | None, list[str]]:
        """The newest valid anchor (None: none yet), and what is wrong with entries that are not
        valid anchors. Raises WitnessError when the witness cannot be read."""

    def write(self, doc: dict[str, Any]) -> None: ...


@dataclass
class FileWitness:
    """An append-only JSON-lines file, one anchor per line. Only as strong as the file's protection:
    keep it where the database's administrators cannot write (another host, a log shipper's spool,
    `chattr +a`); see docs/operations.md.

    **The newest anchor is the highest valid `seq` in the whole file**, not in a window at its end.
    Whoever can append (the threat a file witness is for) can append old, validly signed lines
    without limit; any bounded read — the last N bytes, or reading back until lines are older than
    the newest seen by some margin — lets them push the real newest anchor out of sight by
    appending enough of them, after which a deletion of events anchored since the old line would
    pass. The real newest line may be anywhere before their appends, so the reader must see every
    line. What keeps that cheap (a year of 30-second anchors is about a million lines, 200 MB):

    - lines are not verified unless they could win: a line whose `seq` (read with a byte regex) is at
      or below the best valid anchor found so far is skipped without parsing its JSON or checking its
      signature. Read backwards from the end, the first valid line is normally the newest, and whole
      1 MiB blocks whose every line has a `seq` no higher are skipped with a few C-level scans. This
      is exact for the maximum: every anchor of a new `seq` was written by the anchor task in the
      canonical form the regex reads, and a line someone re-serialised can only restate an anchor
      that is already there. A line with no `seq` is always reported; one with a `seq` that is not a
      signed anchor is reported when it could have been the newest (above the best found so far),
      and below it cannot change the result. Appending lines can make a first read slower (in
      descending order, each is a new best read backwards, and is verified), never wrong;
    - each process remembers how far it has read (`_scans`): the next call reads only what was
      appended since, after checking that the bytes it read last are still there (a file that shrank
      or was replaced is read again from the start, and reported). The anchor task every 30 s reads
      one new line; a full read (a new process, `audit_verify`) takes well under a second per year of
      anchors (measured: 1.05 million lines, 225 MB, in 0.6 s).
    """

    path: Path
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or f"anchor file {self.path}"

    def latest(self) -> tuple[Anchor | None, list[str]]:
        key = str(self.path)
        notes: list[str] = []
        try:
            with self.path.open("rb") as f:
                stat = os.fstat(f.fileno())
                with _scans_lock:
                    scan = _scans.get(key)
                if scan is not None and not scan.continues(f, stat):
                    notes.append(
                        f"{self.name}: the file is shorter than, or not the file, this process read before: "
                        "an anchor file must only grow (read again from its start)"
                    )
                    scan = None
                if scan is None or stat.st_size - scan.offset > REREAD_AFTER:
                    scan = _FileScan.full(f, stat, self.name)
                else:
                    scan = scan.appended(f, stat, self.name)
        except FileNotFoundError:
            with _scans_lock:
                _scans.pop(key, None)
            return None, []
        except OSError as exc:
            raise WitnessError(f"cannot read the {self.name}: {exc.strerror or exc}") from None
        with _scans_lock:
            _scans[key] = scan
        return scan.best, notes + scan.messages(self.name)

    def write(self, doc: dict[str, Any]) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_APPEND: one write() of one line, never interleaved with another process's line.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, _line(doc))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise WitnessError(f"cannot write the {self.name}: {exc.strerror or exc}") from None


FILE_BLOCK = 1 << 20  # bytes read at a time
REREAD_AFTER = 4 * FILE_BLOCK  # more appended than this since the last read: read it all again, backwards
BAD_KEPT = 20  # lines that are not anchors, named one by one (the others counted)
# The first `"seq":N,` of a line; the rest of the line is consumed, so that findall() over a block
# finds at most one per line. A canonical anchor line (`_line`: sorted keys, no spaces) has exactly
# one, after "at" and "chain_mac". (Five times faster than anchoring the pattern at the line's start.)
LINE_SEQ = re.compile(rb'"seq":(\d{1,19}),[^\n]*')
TAIL_KEPT = 256  # bytes before the read offset kept to tell an appended file from a replaced one


@dataclass
class _FileScan:
    """What one process has read of an anchor file: up to `offset` (the end of its last complete
    line), `lines` lines, the best valid anchor among them, and the lines that are not anchors."""

    device: int
    inode: int
    offset: int = 0
    lines: int = 0
    best: Anchor | None = None
    bad: list[int] = field(default_factory=list)  # line numbers, at most BAD_KEPT
    bad_count: int = 0
    tail: bytes = b""

    def continues(self, f: Any, stat: os.stat_result) -> bool:
        """Is the file still the one read, grown only at its end?"""
        if (stat.st_dev, stat.st_ino) != (self.device, self.inode) or stat.st_size < self.offset:
            return False
        f.seek(self.offset - len(self.tail))
        return bool(f.read(len(self.tail)) == self.tail)

    def _consider(self, line: bytes, where: str) -> bool:
        """Take `line` into account; True when it is not an anchor (counted, for the caller to name)."""
        if not line.strip():
            return False
        found = LINE_SEQ.search(line)
        if found is not None and self.best is not None and int(found.group(1)) <= self.best.seq:
            return False  # cannot be the newest: not parsed, not verified
        anchor = _parse_bytes(line, where=where) if found is not None else None
        if anchor is None or anchor.format != FORMAT:
            self.bad_count += 1
            return True
        if self.best is None or anchor.seq > self.best.seq:
            self.best = anchor
        return False

    @classmethod
    def full(cls, f: Any, stat: os.stat_result, where: str) -> _FileScan:
        """Read the whole file, from its end backwards, a block at a time."""
        scan = cls(stat.st_dev, stat.st_ino)
        # Up to the size taken at the start (a line appended meanwhile is for the next read), and
        # to the last newline in it (after it: a write still under way).
        end = _after_last_newline(f, stat.st_size)
        from_end: list[int] = []  # bad lines, counted from the end until the total is known
        pos, carry, seen = end, b"", 0
        while pos > 0:
            start = max(0, pos - FILE_BLOCK)
            f.seek(start)
            chunk = f.read(pos - start) + carry
            pos = start
            if start > 0:
                cut = chunk.find(b"\n") + 1
                if cut == 0:  # one line longer than a block: gather it
                    carry = chunk
                    continue
                carry, chunk = chunk[:cut], chunk[cut:]
            else:
                carry = b""
            best = scan.best
            if best is not None:
                count = chunk.count(b"\n")
                seqs = LINE_SEQ.findall(chunk)
                if len(seqs) == count and max(map(int, seqs), default=-1) <= best.seq:
                    seen += count  # every line has a seq, none above the best: nothing to check
                    continue
            for line in reversed(chunk.split(b"\n")[:-1]):
                seen += 1
                if scan._consider(line, where) and len(from_end) < BAD_KEPT:
                    from_end.append(seen)
        scan.bad = sorted(seen - n + 1 for n in from_end)
        scan.offset, scan.lines = end, seen
        f.seek(max(0, end - TAIL_KEPT))
        scan.tail = f.read(end - max(0, end - TAIL_KEPT))
        return scan

    def appended(self, f: Any, stat: os.stat_result, where: str) -> _FileScan:
        """The same scan, carried on over what was appended since (a copy: the cache is shared)."""
        scan = dataclasses.replace(self, bad=list(self.bad))
        f.seek(scan.offset)
        new = f.read(stat.st_size - scan.offset)
        complete = new[: new.rfind(b"\n") + 1]
        for line in complete.split(b"\n")[:-1]:
            scan.lines += 1
            if scan._consider(line, where) and len(scan.bad) < BAD_KEPT:
                scan.bad.append(scan.lines)
        if complete:
            scan.offset += len(complete)
            scan.tail = (scan.tail + complete)[-TAIL_KEPT:]
        return scan

    def messages(self, name: str) -> list[str]:
        out = [f"{name}: line {n} is not a signed anchor" for n in self.bad]
        if self.bad_count > len(self.bad):
            out.append(f"{name}: and {self.bad_count - len(self.bad)} more lines that are not signed anchors")
        return out


def _after_last_newline(f: Any, size: int) -> int:
    """The offset just after the last newline before `size` (0 when there is none)."""
    pos = size
    while pos > 0:
        start = max(0, pos - FILE_BLOCK)
        f.seek(start)
        found = f.read(pos - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        pos = start
    return 0


_scans: dict[str, _FileScan] = {}  # per process: how far each anchor file was read
_scans_lock = threading.Lock()


@dataclass
class S3Witness:
    """One object per anchored head in an S3 bucket with Object Lock. With `retention_days` each
    object is locked in COMPLIANCE mode until then (needs s3:PutObjectRetention); with 0 the bucket's
    default retention applies (docs/operations.md)."""

    bucket: str
    prefix: str
    retention_days: int = 0
    endpoint_url: str = ""
    region: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or f"s3://{self.bucket}/{self.prefix}"

    def _client(self) -> Any:
        return _s3_client(self.endpoint_url, self.region)

    def key(self, seq: int) -> str:
        return f"{self.prefix}{INVERTED - seq:019d}.json"

    def latest(self) -> tuple[Anchor | None, list[str]]:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self._client()
        bad: list[str] = []
        try:
            listed = client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=S3_PAGE)
            for obj in listed.get("Contents", []):
                match = NAME.fullmatch(obj["Key"][len(self.prefix) :])
                if match is None:
                    continue  # not one of ours
                seq = INVERTED - int(match.group(1))
                body = client.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read(64 * 1024)
                anchor = _parse_bytes(body, where=self.name)
                if anchor is None or anchor.format != FORMAT or anchor.seq != seq:
                    bad.append(
                        f"{self.name}: object {obj['Key']} is not an anchor of seal {seq} signed with the audit key"
                    )
                    continue
                return anchor, bad
        except (BotoCoreError, ClientError) as exc:
            raise WitnessError(f"cannot read {self.name}: {_aws_error(exc)}") from None
        if listed.get("IsTruncated"):
            raise WitnessError(f"{self.name}: none of its first {S3_PAGE} anchors is signed with the audit key")
        return None, bad

    def write(self, doc: dict[str, Any]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        put: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.key(doc["seq"]),
            "Body": _line(doc),
            "ContentType": "application/json",
            # Object Lock needs an integrity checksum on every write that it locks.
            "ChecksumAlgorithm": "SHA256",
        }
        if self.retention_days > 0:
            put["ObjectLockMode"] = "COMPLIANCE"
            put["ObjectLockRetainUntilDate"] = timezone.now() + dt.timedelta(days=self.retention_days)
        try:
            self._client().put_object(**put)
        except (BotoCoreError, ClientError) as exc:
            raise WitnessError(f"cannot write {self.name}: {_aws_error(exc)}") from None


@functools.lru_cache(maxsize=4)
def _s3_client(endpoint_url: str, region: str) -> Any:
    import boto3
    from botocore.config import Config

    # Short timeouts and one retry: a witness that does not answer fails the run, it does not hang it.
    config = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"})
    return boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region or None, config=config)


def _aws_error(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".strip()
    return str(exc)


def configured() -> list[Witness]:
    witnesses: list[Witness] = []
    if getattr(settings, "AUDIT_ANCHOR_FILE", ""):
        witnesses.append(FileWitness(Path(settings.AUDIT_ANCHOR_FILE)))
    if getattr(settings, "AUDIT_ANCHOR_S3_BUCKET", ""):
        witnesses.append(
            S3Witness(
                bucket=settings.AUDIT_ANCHOR_S3_BUCKET,
                prefix=settings.AUDIT_ANCHOR_S3_PREFIX,
                retention_days=settings.AUDIT_ANCHOR_S3_RETENTION_DAYS,
                endpoint_url=settings.AUDIT_ANCHOR_S3_ENDPOINT_URL,
                region=getattr(settings, "AWS_REGION", ""),
            )
        )
    return witnesses


def read_latest(witnesses: list[Witness] | None = None) -> tuple[list[Anchor], list[str]]:
    """The newest valid anchor of every witness, and one line per witness that cannot be read or
    holds something that is not a signed anchor (either fails a verification: fail closed)."""
    anchors: list[Anchor] = []
    errors: list[str] = []
    for witness in configured() if witnesses is None else witnesses:
        try:
            anchor, bad = witness.latest()
        except WitnessError as exc:
            errors.append(str(exc))
            continue
        errors.extend(bad)
        if anchor is not None:
            anchors.append(anchor)
    return anchors, errors
