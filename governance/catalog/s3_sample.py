"""Read a bounded sample of what an S3 prefix holds, for PII discovery: fields, their types, values.

No Django models here: the caller passes a boto3 S3 client and the limits, and gets back one field
per column of the data (CSV header cells, JSON keys as dotted paths, Parquet columns) with up to
`max_rows` values each, plus the objects that could not be read and why. Every read is bounded:

- the listing stops after `max_listed` keys (one page); the newest `max_objects` of them are read;
- CSV and JSON lines are read with one ranged GET of the first `max_bytes` bytes, and no more is
  read from the response even when the endpoint ignores the range (a cut last line is dropped);
  gzip variants (`.gz`, or gzip's magic bytes) are decompressed up to `max_decompressed`; a `.json`
  array is decoded item by item, up to `max_rows` items; at most `max_fields` columns;
- Parquet is read through ranged GETs: the footer, then one batch of `max_rows` rows of the first
  row group, and only when its column chunks fit in `max_bytes` and it is at most
  `max_decompressed` bytes uncompressed (else the object is reported as too big, not read).

A value never becomes a column name (`s3_shapes`): a CSV's first row names the columns only when it
reads as a header (else they are `column_1..N` and the row is data), and a JSON key that reads as a
value is written `{key}` in its field's path.

An object that cannot be parsed (not UTF-8, not JSON, not Parquet, too big, nested too deeply) is
reported in `PrefixSample.skipped` and never fails the sample; S3 errors on one object likewise. Listing errors
(no such bucket, access denied) raise `S3SampleError`; an unreachable endpoint raises
`S3Unreachable`, so that the caller can fail the whole sync instead of every dataset one by one.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import itertools
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import s3_shapes

MAX_FIELD_NAME = 255  # Column.name
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"


class S3SampleError(Exception):
    """The prefix could not be listed (no such bucket, access denied): one line, no secret."""


class S3Unreachable(S3SampleError):
    """The S3 endpoint did not answer."""


@dataclass(frozen=True)
class Limits:
    max_objects: int = 5
    max_bytes: int = 1_048_576
    max_rows: int = 200
    max_listed: int = 1000
    max_decompressed: int = 8_388_608
    max_depth: int = 3
    max_fields: int = 500


@dataclass
class FieldSample:
    """One field of the prefix's data, as a catalog column: name, type, and sampled values as text."""

    name: str
    data_type: str  # "text", "number", "boolean", "date", "timestamp", "json", "array", or a Parquet type
    type_category: str  # PostgreSQL's typcategory letters, which pii.value_kind understands ("" = other)
    ordinal: int
    values: list[str | None] = field(default_factory=list)


@dataclass
class PrefixSample:
    fields: list[FieldSample] = field(default_factory=list)
    objects_read: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # key -> why it was not read


class _Skip(Exception):
    """This object cannot be sampled; the message says why (one line)."""


# --- types --------------------------------------------------------------------------------------

_CATEGORY = {"text": "S", "number": "N", "boolean": "B", "date": "D", "timestamp": "D", "array": "A", "json": ""}
_text_kind = s3_shapes.text_kind
_json_kind = s3_shapes.json_kind


def _merge_kinds(kinds: Iterable[str]) -> str:
    """One type for a field: the common kind of its non-empty values, "text" when they disagree
    (dates and timestamps together are timestamps)."""
    found = set(kinds)
    if not found:
        return "text"
    if found == {"date", "timestamp"}:
        return "timestamp"
    return found.pop() if len(found) == 1 else "text"


class _Collector:
    """Fields in order of first appearance, their kinds and values (capped), across objects."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.order: list[str] = []
        self.kinds: dict[str, list[str]] = {}
        self.values: dict[str, list[str | None]] = {}
        self.fixed_types: dict[str, tuple[str, str]] = {}  # Parquet's own (type, category)
        self.rows = 0

    def full(self) -> bool:
        return self.rows >= self.limits.max_rows

    def _field(self, name: str) -> bool:
        if name in self.values:
            return True
        if len(self.order) >= self.limits.max_fields or not name or len(name) > MAX_FIELD_NAME:
            return False
        self.order.append(name)
        self.kinds[name] = []
        self.values[name] = [None] * self.rows  # earlier rows did not have it
        return True

    def add_row(self, row: dict[str, tuple[str | None, str | None]]) -> None:
        """`row`: field -> (value as text or None, its kind or None)."""
        if self.full():
            return
        for name, (value, kind) in row.items():
            if self._field(name):
                self.values[name].append(value)
                if kind is not None and value not in (None, ""):
                    self.kinds[name].append(kind)
        self.rows += 1
        for name in self.order:
            if len(self.values[name]) < self.rows:
                self.values[name].append(None)

    def result(self) -> list[FieldSample]:
        out = []
        for ordinal, name in enumerate(self.order, start=1):
            if name in self.fixed_types:
                data_type, category = self.fixed_types[name]
            else:
                data_type = _merge_kinds(self.kinds[name])
                category = _CATEGORY[data_type]
            out.append(FieldSample(name, data_type, category, ordinal, self.values[name]))
        return out


# --- formats ------------------------------------------------------------------------------------


def _format_of(key: str, head: bytes) -> tuple[str, bool]:
    """(format, gzipped) from the key's suffixes, else from the first bytes."""
    lower = key.lower()
    gz = lower.endswith(".gz") or head.startswith(_GZIP_MAGIC)
    if lower.endswith(".gz"):
        lower = lower[:-3]
    if lower.endswith(".parquet") or head.startswith(_PARQUET_MAGIC):
        return "parquet", False
    if lower.endswith((".csv", ".tsv", ".txt")):
        return "csv", gz
    if lower.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl", gz
    return "", gz


def _gunzip(data: bytes, limit: int, complete: bool) -> tuple[bytes, bool]:
    """Decompress up to `limit` bytes; (data, whether all of it was decompressed)."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit)
    except zlib.error:
        raise _Skip("not valid gzip") from None
    whole = complete and inflater.eof and not inflater.unconsumed_tail
    return out, whole


def _text_lines(data: bytes, complete: bool, *, whole_lines: bool = True) -> str:
    """UTF-8 text of `data`; a cut last line (the object was longer than what was read) is dropped,
    or with `whole_lines=False` (a JSON array, whose items the reader cuts itself) only a cut character."""
    if not complete and whole_lines:
        cut = data.rfind(b"\n")
        data = data[: cut + 1] if cut >= 0 else b""
    if b"\x00" in data[:4096]:
        raise _Skip("binary content, not text")
    try:
        if complete or whole_lines:
            return data.decode("utf-8-sig")
        return codecs.getincrementaldecoder("utf-8-sig")().decode(data, final=False)
    except UnicodeDecodeError:
        raise _Skip("not UTF-8 text") from None


_HEADER_LOOKAHEAD = 20  # rows after the first that decide whether it is a header


def _unique_names(cells: list[str], max_fields: int) -> list[str]:
    """Column names from header cells: blanks named by position, repeats suffixed, at most `max_fields`."""
    names: list[str] = []
    seen: set[str] = set()
    for i, cell in enumerate(cells[:max_fields], start=1):
        name = cell.strip() or f"column_{i}"
        while name in seen:
            name = f"{name}_{i}"
        seen.add(name)
        names.append(name)
    return names


def _read_csv(text: str, out: _Collector) -> None:
    """Rows of a CSV. Its first row names the columns only when it reads as a header
    (`s3_shapes.is_header`); otherwise the columns are `column_1..N` and the first row is data."""
    head = text[:65536]
    if not head.strip():
        raise _Skip("empty")
    sniffer = csv.Sniffer()
    try:
        dialect: Any = sniffer.sniff(head.split("\n", 1)[0], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    max_fields = out.limits.max_fields
    try:
        first = next(reader)
        following = [row[:max_fields] for row in itertools.islice(reader, _HEADER_LOOKAHEAD)]
    except StopIteration:
        raise _Skip("empty") from None
    except csv.Error as exc:
        raise _Skip(f"not valid CSV ({exc})") from None
    try:
        sniffed: bool | None = sniffer.has_header(head)
    except csv.Error:
        sniffed = None
    width = max([len(first), *(len(row) for row in following)])
    if s3_shapes.is_header(first[:max_fields], following, sniffed):
        names = _unique_names(first, max_fields)
        data: Iterable[list[str]] = itertools.chain(following, reader)
    else:
        names = [f"column_{i}" for i in range(1, min(width, max_fields) + 1)]
        data = itertools.chain([first], following, reader)
    try:
        for row in data:
            if out.full():
                break
            if not any(cell.strip() for cell in row):
                continue
            cells = [*row[: len(names)], *[None] * (len(names) - len(row))]
            out.add_row({n: (c, _text_kind(c.strip()) if c else None) for n, c in zip(names, cells, strict=True)})
    except csv.Error as exc:
        raise _Skip(f"not valid CSV ({exc})") from None


KEY_PLACEHOLDER = "{key}"


def _flatten(obj: dict[str, Any], depth: int, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted paths to the values of `obj`. A key that reads as a value (`s3_shapes.looks_like_value`:
    an email, an id, a date) never becomes part of a name: it is written `{key}`, so that an object
    keyed by data (`{"alice@example.org": {"age": 40}}`) gives the field `{key}.age`."""
    for key, value in obj.items():
        part = KEY_PLACEHOLDER if s3_shapes.looks_like_value(str(key)) else str(key)
        name = f"{prefix}{part}"
        if isinstance(value, dict) and value and depth > 1:
            yield from _flatten(value, depth - 1, f"{name}.")
        else:
            yield name, value


def _json_row(obj: Any, depth: int) -> dict[str, tuple[str | None, str | None]]:
    row: dict[str, tuple[str | None, str | None]] = {}
    for name, value in _flatten(obj, depth):
        if name in row and row[name][0] is not None:
            continue  # several value-keys collapsed into one field: its first value stands for them
        if value is None:
            row[name] = (None, None)
        elif isinstance(value, (dict, list)):
            row[name] = (json.dumps(value, ensure_ascii=False)[:1000], _json_kind(value))
        elif isinstance(value, bool):
            row[name] = ("true" if value else "false", "boolean")
        else:
            row[name] = (str(value), _json_kind(value))
    return row


_WHITESPACE = " \t\n\r"


def _array_items(text: str, complete: bool, limit: int) -> list[Any]:
    """The first `limit` items of a JSON array, decoded one by one (never the whole array); a cut
    last item (the object was longer than what was read) is dropped."""
    decoder = json.JSONDecoder()
    items: list[Any] = []
    pos = text.index("[") + 1
    while len(items) < limit:
        while pos < len(text) and text[pos] in _WHITESPACE:
            pos += 1
        if pos < len(text) and text[pos] == "]":
            break
        try:
            item, pos = decoder.raw_decode(text, pos)
        except ValueError:
            if complete or not items:
                raise _Skip("not valid JSON") from None
            break  # the read stopped inside this item
        items.append(item)
        while pos < len(text) and text[pos] in _WHITESPACE:
            pos += 1
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos < len(text) and text[pos] == "]":
            break
        elif pos < len(text) or complete:
            raise _Skip("not valid JSON")
    return items


def _read_jsonl(text: str, complete: bool, out: _Collector) -> None:
    wanted = out.limits.max_rows - out.rows
    if text.lstrip().startswith("["):  # one JSON array of objects (a `.json` file)
        lines: Iterable[Any] = _array_items(text, complete, wanted)
    else:
        parsed: list[Any] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if len(parsed) >= wanted:
                break
            if not line.strip():
                continue
            try:
                parsed.append(json.loads(line))
            except ValueError:
                raise _Skip(f"line {number} is not valid JSON") from None
        lines = parsed
    rows = 0
    for item in lines:
        if out.full():
            break
        if not isinstance(item, dict):
            raise _Skip("JSON lines that are not objects")
        out.add_row(_json_row(item, out.limits.max_depth))
        rows += 1
    if rows == 0:
        raise _Skip("empty")


# --- Parquet through ranged reads ---------------------------------------------------------------


class _RangedFile(io.RawIOBase):
    """A read-only file over one S3 object: each read is a ranged GET, and the bytes fetched are
    counted against a budget (the footer plus the first row group must fit in it)."""

    def __init__(self, s3: Any, bucket: str, key: str, size: int, budget: int) -> None:
        self.s3, self.bucket, self.key, self.size, self.budget = s3, bucket, key, size, budget
        self.pos = 0
        self.fetched = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def read(self, size: int | None = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self.pos + size)
        if end <= self.pos:
            return b""
        if self.fetched + (end - self.pos) > self.budget:
            raise _Skip(f"Parquet data beyond the {self.budget}-byte read limit")
        data = _get_range(self.s3, self.bucket, self.key, self.pos, end - self.pos)
        self.fetched += len(data)
        self.pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _parquet_type(arrow_type: Any) -> tuple[str, str]:
    import pyarrow as pa

    text = str(arrow_type)
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return text, "S"
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return text, "N"
    if pa.types.is_boolean(arrow_type):
        return text, "B"
    if pa.types.is_temporal(arrow_type):
        return text, "D"
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return text, "A"
    return text, ""


def _read_parquet(s3: Any, bucket: str, key: str, size: int, out: _Collector) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = _RangedFile(s3, bucket, key, size, out.limits.max_bytes)
    try:
        parquet = pq.ParquetFile(source)
        meta = parquet.metadata
        if meta.num_row_groups == 0:
            raise _Skip("empty")
        group = meta.row_group(0)
        needed = sum(group.column(i).total_compressed_size for i in range(group.num_columns))
        if source.fetched + needed > out.limits.max_bytes:
            raise _Skip(f"first row group is {needed} bytes, more than the {out.limits.max_bytes}-byte read limit")
        if group.total_byte_size > out.limits.max_decompressed:
            raise _Skip(
                f"first row group is {group.total_byte_size} bytes uncompressed, "
                f"more than the {out.limits.max_decompressed}-byte limit"
            )
        # One batch of the rows wanted, decoded page by page: never the whole row group, whose
        # run-length or dictionary encoded columns can hold 10^8 rows in a few kilobytes.
        batches = parquet.iter_batches(batch_size=max(1, out.limits.max_rows - out.rows), row_groups=[0])
        batch = next(batches, None)
        if batch is None:
            raise _Skip("empty")
        table = pa.Table.from_batches([batch])
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _Skip("not valid Parquet (" + " ".join(str(exc).split())[:120] + ")") from None
    flat = table.flatten() if any(pa.types.is_struct(f.type) for f in table.schema) else table
    types = {column.name: _parquet_type(column.type) for column in flat.schema}
    for record in flat.to_pylist():
        if out.full():
            break
        row: dict[str, tuple[str | None, str | None]] = {}
        for name, value in record.items():
            if value is None:
                row[name] = (None, None)
            elif isinstance(value, (dt.date, dt.datetime)):
                row[name] = (value.isoformat(), None)
            elif isinstance(value, (list, dict)):
                row[name] = (json.dumps(value, default=str)[:1000], None)
            elif isinstance(value, bytes):
                row[name] = (None, None)  # binary: not text a detector can read
            else:
                row[name] = (str(value).lower() if isinstance(value, bool) else str(value), None)
        out.add_row(row)
    for name, typed in types.items():
        if name in out.values:
            out.fixed_types.setdefault(name, typed)


# --- the prefix ---------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'Error')}: {str(error.get('Message', ''))[:200]}"
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _unreachable(exc: BaseException) -> bool:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import EndpointConnectionError, HTTPClientError

    return isinstance(exc, (EndpointConnectionError, BotoConnectionError, HTTPClientError))


def list_newest(s3: Any, bucket: str, prefix: str, limits: Limits) -> list[dict[str, Any]]:
    """The newest `max_objects` objects among the first `max_listed` keys under the prefix."""
    from botocore.exceptions import BotoCoreError, ClientError

    under = f"{prefix}/" if prefix else ""
    found: list[dict[str, Any]] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=under, PaginationConfig={"MaxItems": limits.max_listed, "PageSize": 1000}
        ):
            found += [o for o in page.get("Contents", []) if not o["Key"].endswith("/") and o.get("Size", 0) > 0]
    except (ClientError, BotoCoreError) as exc:
        if _unreachable(exc):
            raise S3Unreachable("the S3 endpoint could not be reached") from None
        raise S3SampleError(f"s3:ListObjectsV2 on s3://{bucket}/{under}: {_one_line(exc)}") from None
    found.sort(key=lambda o: (o["LastModified"], o["Key"]), reverse=True)
    return found[: limits.max_objects]


def _get_range(s3: Any, bucket: str, key: str, start: int, length: int) -> bytes:
    """`length` bytes from `start`: a ranged GET, and never more read from the body, since an
    S3-compatible endpoint may ignore the Range header and send the whole object."""
    body = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{start + length - 1}")["Body"]
    try:
        return bytes(body.read(length))
    finally:
        body.close()


def _read_object(s3: Any, bucket: str, obj: dict[str, Any], out: _Collector) -> None:
    key, size = obj["Key"], int(obj["Size"])
    limits = out.limits
    wanted = min(size, limits.max_bytes)
    data = _get_range(s3, bucket, key, 0, wanted)
    complete = len(data) >= size
    kind, gz = _format_of(key, data[:8])
    if kind == "parquet":
        _read_parquet(s3, bucket, key, size, out)
        return
    if not kind:
        raise _Skip("not a CSV, JSON lines or Parquet object")
    if gz:
        data, complete = _gunzip(data, limits.max_decompressed, complete)
    array = kind == "jsonl" and data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"["
    text = _text_lines(data, complete, whole_lines=not array)
    if kind == "csv":
        _read_csv(text, out)
    else:
        _read_jsonl(text, complete, out)


def sample_prefix(s3: Any, bucket: str, prefix: str, limits: Limits | None = None) -> PrefixSample:
    """Fields and values of the newest objects under `s3://bucket/prefix/` (see the module doc)."""
    from botocore.exceptions import BotoCoreError, ClientError

    limits = limits or Limits()
    out = _Collector(limits)
    report = PrefixSample()
    for obj in list_newest(s3, bucket, prefix, limits):
        if out.full():
            break
        key = obj["Key"]
        try:
            _read_object(s3, bucket, obj, out)
            report.objects_read.append(key)
        except _Skip as exc:
            report.skipped[key] = str(exc)
        except RecursionError:  # json: "[" * 200000; one hostile object never fails the prefix
            report.skipped[key] = "nested too deeply to read"
        except MemoryError:
            report.skipped[key] = "too big to read in memory"
        except (ClientError, BotoCoreError) as exc:
            if _unreachable(exc):
                raise S3Unreachable("the S3 endpoint could not be reached") from None
            report.skipped[key] = _one_line(exc)
    report.fields = out.result()
    return report


def client(target: Any, *, timeout: float = 20.0) -> Any:
    """An S3 client for an `aws_iam.AwsTarget` (the source's region, endpoint and keys)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        region_name=target.region or "us-east-1",
        endpoint_url=target.endpoint_url or None,
        aws_access_key_id=target.access_key_id or None,
        aws_secret_access_key=target.secret_access_key or None,
        config=Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=timeout),
    )
