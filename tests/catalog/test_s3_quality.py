"""Precision and recall of PII discovery on S3 samples, against moto's server (docs/discovery.md,
"S3 samples"). The labelled objects of tests/catalog/s3_labelled.py are uploaded, sampled by the
sync's own reader and fed to the detectors exactly as the sync feeds them; the figures per tag are
printed (run with `-s` to see them) and held above floors, so that a regression fails here.

    .venv/bin/python scripts/devstack.py test tests/catalog/test_s3_quality.py -s
"""

from __future__ import annotations

from collections import Counter

import pytest

from governance.catalog import pii, s3_sample, sync_s3, sync_tags
from governance.provisioners.aws_iam import AwsTarget
from tests.aws import REGION, moto_server
from tests.catalog import s3_labelled

BUCKET = "labelled-lake"
# Floors: what the detectors reach today, less a margin; raise them when the detectors improve.
MIN_PRECISION = 0.9
MIN_RECALL = 0.9


def measure() -> tuple[dict[str, tuple[int, int, int]], list[str]]:
    """{tag: (true positives, false positives, false negatives)} and the misses, one line each."""
    with moto_server() as moto:
        s3 = moto.client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        for key, fields in s3_labelled.OBJECTS.items():
            s3.put_object(Bucket=BUCKET, Key=key, Body=s3_labelled.body(key, fields))
        client = s3_sample.client(
            AwsTarget(region=REGION, endpoint_url=moto.url, access_key_id="testing", secret_access_key="testing")
        )
        predicted: dict[tuple[str, str], set[str]] = {}
        for prefix in sorted({key.split("/")[0] for key in s3_labelled.OBJECTS}):
            sample = s3_sample.sample_prefix(client, BUCKET, prefix, s3_sample.Limits())
            assert sample.objects_read and not sample.skipped
            relation, values = sync_s3.relation_of(BUCKET, prefix, sample)
            for column in relation.columns:
                suggestions = pii.suggest_tags(
                    name=column.name,
                    data_type=column.data_type,
                    type_category=column.type_category,
                    samples=values.get(column.name),
                    threshold=sync_tags.threshold(),
                )
                predicted[(prefix, column.name)] = {s.tag for s in suggestions}
    truth = s3_labelled.labels()
    assert set(predicted) == set(truth), "every labelled field was sampled, and nothing else"
    counts: Counter[tuple[str, str]] = Counter()
    misses = []
    for field, expected in sorted(truth.items()):
        got = predicted[field]
        for tag in expected | got:
            kind = "tp" if tag in expected and tag in got else ("fp" if tag in got else "fn")
            counts[(tag, kind)] += 1
            if kind != "tp":
                misses.append(f"{kind} {tag}: {field[0]}/{field[1]}")
    tags = sorted({tag for tag, _ in counts})
    return {t: (counts[(t, "tp")], counts[(t, "fp")], counts[(t, "fn")]) for t in tags}, misses


def _ratio(a: int, b: int) -> float:
    return a / b if b else 1.0


@pytest.mark.django_db
def test_precision_and_recall_on_s3_samples() -> None:
    per_tag, misses = measure()
    tp = sum(v[0] for v in per_tag.values())
    fp = sum(v[1] for v in per_tag.values())
    fn = sum(v[2] for v in per_tag.values())
    fields = sum(len(f) for f in s3_labelled.OBJECTS.values())
    lines = [f"\nPII discovery on S3 samples: {fields} fields in {len(s3_labelled.OBJECTS)} objects", ""]
    lines += ["| tag | precision | recall | TP | FP | FN |", "| --- | --- | --- | --- | --- | --- |"]
    for tag, (t, p, n) in per_tag.items():
        lines.append(f"| {tag} | {_ratio(t, t + p):.2f} | {_ratio(t, t + n):.2f} | {t} | {p} | {n} |")
    lines.append(f"| **all** | {_ratio(tp, tp + fp):.2f} | {_ratio(tp, tp + fn):.2f} | {tp} | {fp} | {fn} |")
    print("\n".join([*lines, "", *misses]))

    assert _ratio(tp, tp + fp) >= MIN_PRECISION
    assert _ratio(tp, tp + fn) >= MIN_RECALL
