"""Catalog sync of an AWS source against moto's server (real S3 calls over HTTP): CSV, JSON lines,
Parquet and gzip objects become columns with PII suggestions; empty prefixes, huge and malformed
objects, hostile key and field names, missing buckets and an unreachable endpoint are reported,
never crash the sync (governance/catalog/sync_s3.py, governance/catalog/s3_sample.py). Hostile or
unlabelled data: a value never becomes a column name (headerless CSV, JSON keyed by data), one
hostile object never fails a prefix, every read and decode stays bounded, identifiers written as
bare digits reach the detectors, and a type inferred from the sample never reopens a rejection."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import random
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import call_command

from audit.models import AuditEvent
from governance.catalog import s3_sample
from governance.models import Column, ColumnTag, Dataset, DataSource, TagStatus
from governance.services import catalog as catalog_svc
from governance.services.catalog import dataset_register_s3, datasource_create
from governance.services.sync import SyncFailed, datasource_sync
from tests.aws import ACCOUNT, REGION, MotoServer, free_port, moto_server
from tests.catalog import s3_labelled

pytestmark = pytest.mark.django_db(transaction=True)

EMAILS = [f"client{i}@example.org" for i in range(20)]
IBANS = ["DE89370400440532013000", "GB82WEST12345698765432", "FR1420041010050500013M02606", "NL91ABNA0417164300"] * 5
HOSTILE_KEY = 'crm/Order "Lines"; DROP TABLE x; -- naïve %20.csv'
HOSTILE_FIELD = 'Contact "Info"; --'
BUCKETS = itertools.count(1)


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    name = f"lake-{next(BUCKETS)}"
    moto.client("s3").create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return name


@pytest.fixture
def aws_source(moto: MotoServer, gov_admin: Any, owner: Any, classifications: Any) -> DataSource:
    # Keys come from the source, as for IAM: moto accepts any while it does not enforce auth.
    return datasource_create(
        actor=gov_admin,
        name=f"lake_{next(BUCKETS)}",
        kind="aws",
        aws_account_id=ACCOUNT,
        aws_region=REGION,
        aws_endpoint_url=moto.url,
        username="testing",
        password="testing",
        owner=owner,
    )


def put(moto: MotoServer, bucket: str, key: str, body: bytes) -> None:
    moto.client("s3").put_object(Bucket=bucket, Key=key, Body=body)


def csv_bytes(header: list[str], rows: list[list[Any]], delimiter: str = ",") -> bytes:
    lines = [delimiter.join(header), *(delimiter.join(str(c) for c in row) for row in rows)]
    return ("\n".join(lines) + "\n").encode()


def parquet_bytes(table: pa.Table, **kwargs: Any) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out, **kwargs)
    return out.getvalue()


def register(source: DataSource, gov_admin: Any, bucket: str, prefix: str) -> Dataset:
    return dataset_register_s3(source=source, actor=gov_admin, bucket=bucket, prefix=prefix)


def columns(dataset: Dataset) -> dict[str, str]:
    return dict(Column.objects.filter(dataset=dataset, is_present=True).values_list("name", "data_type"))


def tags(dataset: Dataset) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for column, tag in ColumnTag.objects.filter(column__dataset=dataset).values_list("column__name", "tag"):
        out.setdefault(column, set()).add(tag)
    return out


def test_csv_json_lines_parquet_and_gzip_become_columns_with_suggestions(moto, bucket, aws_source, gov_admin):
    put(
        moto,
        bucket,
        "crm/customers.csv",
        csv_bytes(["id", "email", "signup"], [[i, e, "2024-05-01"] for i, e in enumerate(EMAILS)], ";"),
    )
    events = "\n".join(
        json.dumps({"user": {"contact": e, "visits": i}, "ok": True, "source_ip": f"192.0.2.{i + 1}"})
        for i, e in enumerate(EMAILS)
    )
    put(moto, bucket, "crm/events.jsonl.gz", gzip.compress(events.encode()))
    put(moto, bucket, "crm/payments.parquet", parquet_bytes(pa.table({"account": IBANS, "amount": range(20)})))
    dataset = register(aws_source, gov_admin, bucket, "crm")

    result = datasource_sync(source=aws_source, actor=gov_admin)

    assert columns(dataset) == {
        "id": "number",
        "email": "text",
        "signup": "date",
        "user.contact": "text",
        "user.visits": "number",
        "ok": "boolean",
        "source_ip": "text",
        "account": "string",
        "amount": "int64",
    }
    assert tags(dataset) == {
        "email": {"email"},
        "user.contact": {"email"},
        "source_ip": {"ip_address"},
        "account": {"iban"},
    }
    iban = ColumnTag.objects.get(column__dataset=dataset, column__name="account")
    assert iban.evidence.startswith("100% of 20 sampled values look like IBAN")
    assert iban.findings and all("DE89" not in json.dumps(f) for f in iban.findings), "never a value"
    assert result.relations_sampled == 1 and result.columns_created == 9 and result.sampling_failures == {}
    event = AuditEvent.objects.get(action="datasource.synced", target_id=str(aws_source.pk))
    assert event.actor == gov_admin and event.metadata["tags_suggested"] == 4

    again = datasource_sync(source=aws_source, actor=gov_admin)
    assert not again.changed and AuditEvent.objects.filter(action="datasource.synced").count() == 1


def test_an_empty_prefix_is_reported_and_keeps_its_columns(moto, bucket, aws_source, gov_admin):
    dataset = register(aws_source, gov_admin, bucket, "empty")

    result = datasource_sync(source=aws_source, actor=gov_admin)

    assert result.sampling_failures == {f"s3://{bucket}/empty": "no objects to sample"}
    assert columns(dataset) == {} and not result.changed


def test_a_huge_object_is_read_only_up_to_the_limit(moto, bucket, aws_source, gov_admin, settings):
    settings.S3_SAMPLE_BYTES = 64 * 1024
    rows = [[i, EMAILS[i % 20], "x" * 200] for i in range(40_000)]  # about 9 MB
    put(moto, bucket, "big/dump.csv", csv_bytes(["id", "contact", "padding"], rows))
    big_parquet = pa.table({"note": [f"row {i} " + "y" * 100 for i in range(50_000)]})
    put(moto, bucket, "big/dump.parquet", parquet_bytes(big_parquet, compression="none"))
    dataset = register(aws_source, gov_admin, bucket, "big")

    # What is read, counted on the real responses (a pass-through, not a mock).
    client = s3_sample.client(s3_sample_target(moto))
    fetched: list[int] = []
    get_object = client.get_object

    def counting(**kwargs: Any) -> Any:
        response = get_object(**kwargs)
        fetched.append(int(response["ContentLength"]))
        return response

    client.get_object = counting
    sample = s3_sample.sample_prefix(client, bucket, "big", s3_sample.Limits(max_bytes=64 * 1024, max_rows=200))
    assert sum(fetched) <= 3 * 64 * 1024, "each object is read within the byte limit"
    assert sample.objects_read == ["big/dump.csv"]
    assert "more than the 65536-byte read limit" in sample.skipped["big/dump.parquet"]
    assert len(next(f for f in sample.fields if f.name == "contact").values) == 200

    result = datasource_sync(source=aws_source, actor=gov_admin)
    assert columns(dataset) == {"id": "number", "contact": "text", "padding": "text"}
    assert tags(dataset) == {"contact": {"email"}}
    assert "read limit" in result.sampling_failures[f"s3://{bucket}/big/dump.parquet"]


def s3_sample_target(moto: MotoServer) -> Any:
    from governance.provisioners.aws_iam import AwsTarget

    return AwsTarget(region=REGION, endpoint_url=moto.url, access_key_id="testing", secret_access_key="testing")


def test_malformed_objects_are_reported_and_the_rest_is_read(moto, bucket, aws_source, gov_admin, settings):
    settings.S3_SAMPLE_OBJECTS = 10
    put(moto, bucket, "mixed/good.jsonl", "\n".join(json.dumps({"mail": e}) for e in EMAILS).encode())
    put(moto, bucket, "mixed/broken.jsonl", b'{"mail": "a@example.org"}\n{"mail": oops}\n')
    put(moto, bucket, "mixed/fake.parquet", b"PAR1 this is not parquet")
    put(moto, bucket, "mixed/binary.csv", bytes(range(256)) * 4)
    put(moto, bucket, "mixed/cut.jsonl.gz", b"\x1f\x8b\x08\x00 not really gzip")
    put(moto, bucket, "mixed/photo.png", b"\x89PNG\r\n\x1a\n")
    dataset = register(aws_source, gov_admin, bucket, "mixed")

    result = datasource_sync(source=aws_source, actor=gov_admin)

    failures = {key.rsplit("/", 1)[1]: why for key, why in result.sampling_failures.items()}
    assert failures["broken.jsonl"] == "line 2 is not valid JSON"
    assert failures["fake.parquet"].startswith("not valid Parquet")
    assert failures["binary.csv"] in {"binary content, not text", "not UTF-8 text"}
    assert failures["cut.jsonl.gz"] == "not valid gzip"
    assert failures["photo.png"] == "not a CSV, JSON lines or Parquet object"
    assert all("\n" not in why for why in failures.values())
    assert columns(dataset) == {"mail": "text"} and tags(dataset) == {"mail": {"email"}}


def test_hostile_key_and_field_names_round_trip(moto, bucket, aws_source, gov_admin):
    put(moto, bucket, HOSTILE_KEY, csv_bytes(["id", HOSTILE_FIELD], [[i, e] for i, e in enumerate(EMAILS)]))
    put(moto, bucket, 'crm/bad "name".jsonl', b"not json\n")
    dataset = register(aws_source, gov_admin, bucket, "crm")

    result = datasource_sync(source=aws_source, actor=gov_admin)

    assert columns(dataset) == {"id": "number", HOSTILE_FIELD: "text"}
    assert tags(dataset) == {HOSTILE_FIELD: {"email"}}
    assert result.sampling_failures == {f's3://{bucket}/crm/bad "name".jsonl': "line 1 is not valid JSON"}
    assert moto.client("s3").get_object(Bucket=bucket, Key=HOSTILE_KEY)["ContentLength"] > 0, "nothing changed"


def test_a_missing_bucket_is_reported_and_other_prefixes_still_sync(moto, bucket, aws_source, gov_admin):
    put(moto, bucket, "ok/a.csv", csv_bytes(["contact"], [[e] for e in EMAILS]))
    good = register(aws_source, gov_admin, bucket, "ok")
    register(aws_source, gov_admin, "no-such-bucket-here", "x")

    result = datasource_sync(source=aws_source, actor=gov_admin)

    assert "NoSuchBucket" in result.sampling_failures["s3://no-such-bucket-here/x"]
    assert tags(good) == {"contact": {"email"}}


def test_suggestions_on_s3_follow_the_newest_objects(moto, bucket, aws_source, gov_admin):
    put(moto, bucket, "feed/1.csv", csv_bytes(["contact"], [[e] for e in EMAILS]))
    dataset = register(aws_source, gov_admin, bucket, "feed")
    datasource_sync(source=aws_source, actor=gov_admin)
    assert tags(dataset) == {"contact": {"email"}}

    moto.client("s3").delete_object(Bucket=bucket, Key="feed/1.csv")
    put(moto, bucket, "feed/2.csv", csv_bytes(["contact", "ip"], [["call back", "10.1.1.1"]] * 20))
    result = datasource_sync(source=aws_source, actor=gov_admin)

    assert result.tags_withdrawn == 1 and tags(dataset) == {"ip": {"ip_address"}}


def test_an_unreachable_endpoint_fails_the_sync_in_one_line(gov_admin, owner, classifications, bucket):
    source = datasource_create(
        actor=gov_admin,
        name="lake_down",
        kind="aws",
        aws_account_id=ACCOUNT,
        aws_region=REGION,
        aws_endpoint_url=f"http://127.0.0.1:{free_port()}",
        username="testing",
        password="testing",
    )
    register(source, gov_admin, bucket, "crm")

    with pytest.raises(SyncFailed, match="the S3 endpoint could not be reached"):
        datasource_sync(source=source, actor=gov_admin)

    source.refresh_from_db()
    assert source.last_sync_error == "Could not sync lake_down: the S3 endpoint could not be reached"
    assert AuditEvent.objects.get(action="datasource.sync", target_id=str(source.pk)).outcome == "failed"


def test_catalog_sync_command_syncs_an_aws_source(moto, bucket, aws_source, gov_admin):
    put(moto, bucket, "cmd/a.jsonl", "\n".join(json.dumps({"email": e}) for e in EMAILS).encode())
    register(aws_source, gov_admin, bucket, "cmd")
    out = io.StringIO()

    call_command("catalog_sync", aws_source.name, "--actor", gov_admin.username, stdout=out)

    assert out.getvalue().startswith(f"{aws_source.name}: 0 datasets created")
    assert "1 PII tags suggested" in out.getvalue()


# --- hostile or unlabelled data: values never become names, every read and decode bounded ---

SSNS = [f"{123 + i:03d}-45-{6789 + i:04d}" for i in range(20)]
NAMES = ["Anna Schmidt", "Chloé Dubois", "Kenji Nakamura", "Olga Kowalski", "Priya Singh"] * 4


def sampler(moto: Any) -> Any:
    return s3_sample.client(s3_sample_target(moto))


def test_values_never_become_column_names(moto, bucket, aws_source, gov_admin):
    # A headerless export (Glue, Firehose, UNLOAD): the first row is data like the rest.
    rows = "".join(f"{e},{s},{n}\n" for e, s, n in zip(EMAILS, SSNS, NAMES, strict=True))
    put(moto, bucket, "export/part-0000.csv", rows.encode())
    # JSON keyed by data: the emails are keys, not names of fields.
    keyed = "\n".join(json.dumps({e: {"age": 30 + i, "plan": "pro"}}) for i, e in enumerate(EMAILS))
    put(moto, bucket, "export/profiles.jsonl", keyed.encode())
    dataset = register(aws_source, gov_admin, bucket, "export")

    result = datasource_sync(source=aws_source, actor=gov_admin)

    assert columns(dataset) == {
        "column_1": "text",
        "column_2": "text",
        "column_3": "text",
        "{key}.age": "number",
        "{key}.plan": "text",
    }
    assert tags(dataset) == {"column_1": {"email"}, "column_2": {"ssn"}, "column_3": {"person_name"}}
    visible = json.dumps(
        [
            list(Column.objects.values_list("name", flat=True)),
            list(ColumnTag.objects.values_list("evidence", "findings")),
            list(AuditEvent.objects.values_list("reason", "metadata", "changes")),
            result.summary(),
            result.as_metadata(),
        ],
        default=str,
        ensure_ascii=False,
    )
    for value in [*EMAILS, *SSNS, *set(NAMES)]:
        assert value not in visible, f"a sampled value is visible: {value}"


def test_a_real_header_still_names_the_columns(moto, bucket):
    put(
        moto,
        bucket,
        "crm/a.csv",
        csv_bytes(["Full Name", "E-mail", "city"], [[n, e, "Berlin"] for n, e in zip(NAMES, EMAILS, strict=True)]),
    )
    put(
        moto,
        bucket,
        "geo/b.csv",
        csv_bytes(["Berlin", "Acme Ltd"], [["Berlin", "Acme Ltd"], ["Madrid", "Globex GmbH"]]),
    )

    named = s3_sample.sample_prefix(sampler(moto), bucket, "crm")
    headerless = s3_sample.sample_prefix(sampler(moto), bucket, "geo")

    assert [f.name for f in named.fields] == ["Full Name", "E-mail", "city"]
    assert [f.name for f in headerless.fields] == ["column_1", "column_2"], "Berlin recurs as a value"


def test_one_hostile_object_never_fails_the_prefix(moto, bucket, aws_source, gov_admin, settings):
    settings.S3_SAMPLE_OBJECTS = 10
    put(moto, bucket, "deep/array.json", b"[" * 200_000)
    put(moto, bucket, "deep/line.jsonl", b'{"a": ' * 100_000 + b"\n")
    put(moto, bucket, "deep/good.jsonl", "\n".join(json.dumps({"mail": e}) for e in EMAILS).encode())
    dataset = register(aws_source, gov_admin, bucket, "deep")

    result = datasource_sync(source=aws_source, actor=gov_admin)

    failures = {key.rsplit("/", 1)[1]: why for key, why in result.sampling_failures.items()}
    assert failures["array.json"] == "nested too deeply to read"
    assert failures["line.jsonl"] in {"nested too deeply to read", "line 1 is not valid JSON"}
    assert tags(dataset) == {"mail": {"email"}}


def test_a_wide_repeated_header_is_cut_at_the_field_limit(moto, bucket):
    put(moto, bucket, "wide/a.csv", b",".join([b"name"] * 100_000) + b"\n" + b",".join([b"x"] * 100_000) + b"\n")

    sample = s3_sample.sample_prefix(sampler(moto), bucket, "wide", s3_sample.Limits(max_fields=50))

    assert sample.objects_read == ["wide/a.csv"] and len(sample.fields) == 50
    assert [f.name for f in sample.fields[:3]] == ["name", "name_2", "name_3"]


def test_a_parquet_row_group_of_millions_of_encoded_rows_is_read_one_batch(moto, bucket):
    rows = 10_000_000  # run-length encoded: 40 kB on S3, 200 MB and more once decoded whole
    indices = pa.repeat(pa.scalar(0, pa.int32()), rows)
    bomb = pa.table({"contact": pa.DictionaryArray.from_arrays(indices, pa.array(["hello@example.org"]))})
    put(moto, bucket, "rle/bomb.parquet", parquet_bytes(bomb, row_group_size=rows, store_schema=False))
    del bomb, indices
    pool = pa.default_memory_pool()
    peak = pool.max_memory()

    sample = s3_sample.sample_prefix(sampler(moto), bucket, "rle")

    assert sample.objects_read == ["rle/bomb.parquet"]
    assert [len(f.values) for f in sample.fields] == [200]
    assert pool.max_memory() - peak < 64 * 1024 * 1024, "only the rows wanted were decoded"


def test_a_parquet_row_group_too_big_uncompressed_is_reported(moto, bucket):
    text = pa.table({"note": ["y" * 1000] * 10_000})  # 10 MB uncompressed, a few kB with zstd
    put(moto, bucket, "zs/a.parquet", parquet_bytes(text, compression="zstd", use_dictionary=False))

    sample = s3_sample.sample_prefix(sampler(moto), bucket, "zs")

    assert sample.objects_read == []
    assert "uncompressed, more than the 8388608-byte limit" in sample.skipped["zs/a.parquet"]


class _IgnoresRange:
    """An S3-compatible endpoint that ignores the Range header (a pass-through to moto that drops
    it), counting the bytes the reader takes from each response body."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.taken: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def get_object(self, **kwargs: Any) -> Any:
        kwargs.pop("Range", None)
        response = self.client.get_object(**kwargs)
        body, taken = response["Body"], self.taken

        class Counting:
            def read(self, amt: int | None = None) -> bytes:
                data = body.read(amt)
                taken.append(len(data))
                return data

            def close(self) -> None:
                body.close()

        response["Body"] = Counting()
        return response


def test_an_endpoint_that_ignores_range_is_still_read_within_the_limit(moto, bucket):
    put(moto, bucket, "big/a.csv", csv_bytes(["contact", "pad"], [[EMAILS[i % 20], "x" * 500] for i in range(20_000)]))
    client = _IgnoresRange(sampler(moto))

    sample = s3_sample.sample_prefix(client, bucket, "big", s3_sample.Limits(max_bytes=64 * 1024))

    assert sample.objects_read == ["big/a.csv"] and max(client.taken) <= 64 * 1024


def test_gzip_and_json_arrays_are_read_up_to_their_limits(moto, bucket):
    bomb = gzip.compress(csv_bytes(["contact"], [[e] for e in EMAILS * 500_000]))  # 200 MB of CSV
    put(moto, bucket, "gz/a.csv.gz", bomb)
    array = json.dumps([{"mail": EMAILS[i % 20], "n": i} for i in range(100_000)]).encode()
    put(moto, bucket, "arr/a.json", array)

    gz = s3_sample.sample_prefix(sampler(moto), bucket, "gz")
    arr = s3_sample.sample_prefix(sampler(moto), bucket, "arr", s3_sample.Limits(max_bytes=64 * 1024))

    assert len(bomb) > 64 * 1024 and gz.objects_read == ["gz/a.csv.gz"] and len(gz.fields[0].values) == 200
    assert arr.objects_read == ["arr/a.json"], "the first items of an array cut by the read limit"
    assert [f.name for f in arr.fields] == ["mail", "n"] and len(arr.fields[0].values) == 200


def test_identifiers_written_as_bare_digits_are_read_by_the_detectors(moto, bucket, aws_source, gov_admin):
    rng = random.Random(7)
    put(moto, bucket, "ids/a.csv", csv_bytes(["ref"], [[s3_labelled.bsn(rng)] for _ in range(20)]))
    put(
        moto,
        bucket,
        "ids/b.jsonl",
        "\n".join(json.dumps({"member": int(s3_labelled.nhs(rng))}) for _ in range(20)).encode(),
    )
    put(moto, bucket, "ids/c.parquet", parquet_bytes(pa.table({"payer": [s3_labelled.idnr(rng) for _ in range(20)]})))
    dataset = register(aws_source, gov_admin, bucket, "ids")

    datasource_sync(source=aws_source, actor=gov_admin)

    assert columns(dataset) == {"ref": "text", "member": "text", "payer": "int64"}
    assert tags(dataset) == {"ref": {"national_id"}, "member": {"national_id"}, "payer": {"national_id"}}


def test_a_type_inferred_from_the_sample_never_reopens_a_rejection(moto, bucket, aws_source, gov_admin, owner):
    ips = [[f"10.0.0.{i + 1}"] for i in range(20)]
    put(moto, bucket, "flip/a.csv", csv_bytes(["code"], ips))
    dataset = register(aws_source, gov_admin, bucket, "flip")
    datasource_sync(source=aws_source, actor=gov_admin)
    rejected = catalog_svc.column_tag_reject(
        tag=ColumnTag.objects.get(column__dataset=dataset, column__name="code", tag="ip_address"), actor=owner
    )

    put(moto, bucket, "flip/a.csv", csv_bytes(["code"], [[i] for i in range(20)]))  # only digits sampled
    datasource_sync(source=aws_source, actor=gov_admin)
    assert columns(dataset) == {"code": "number"}
    put(moto, bucket, "flip/a.csv", csv_bytes(["code"], ips))  # text again, the same values
    result = datasource_sync(source=aws_source, actor=gov_admin)

    again = ColumnTag.objects.get(pk=rejected.pk)
    assert columns(dataset) == {"code": "text"} and result.tags_reopened == 0
    assert again.status == TagStatus.REJECTED and again.decided_by == owner
    assert not AuditEvent.objects.filter(action="column_tag.reopened").exists()
