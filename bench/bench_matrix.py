"""The permission matrix at 50 roles x 1,000 datasets, 10,000 grants and 500 pending requests.

Measured, in-process through Django's test client (middleware, view, queries, template: the server
time of a request, without the network): the portal's matrix and the admin's (with its forms) for
a security officer, on the first page (40 datasets) and on the largest page (100 datasets, 5,000
cells), filtered by classification, and with people as rows (50 people holding 2,000 direct
grants). 15 timed runs each after 2 warm-ups:
median and p95, and the query count. Floor, in the same run: the same SQL statements the page ran,
executed and fetched by bare psycopg2 (what the database costs); the ratio is page / floor.

Target (issue 5): at most 10 queries and 300 ms. Run with `make bench`; writes
bench/results/matrix.json.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from bench.sizes import size
from governance.models import (
    AccessRequest,
    Classification,
    Dataset,
    DataSource,
    DriftFinding,
    Grant,
    GrantStatus,
    Role,
    SourcePrincipal,
)

ROLES = size(50, 10)
DATASETS = size(1_000, 200)
GRANTS = size(10_000, 1_000)
PENDING = size(500, 50)
DRIFT = size(200, 20)
PEOPLE = size(50, 10)
RUNS = size(15, 2)
WARMUP = size(2, 1)
TARGET_MS = 300.0
TARGET_QUERIES = 10
RESULTS = Path(__file__).resolve().parent / "results"

pytestmark = pytest.mark.django_db


def arrange(officer: User, analyst: User, classifications: dict[str, Classification]) -> None:
    """The catalog and its access, written with bulk_create (the setup is not what is measured)."""
    sources = [
        DataSource.objects.create(
            name=f"bench_src_{i}", host="127.0.0.1", database=f"db{i}", provisioning_enabled=False
        )
        for i in range(4)
    ]
    ranked = sorted(classifications.values(), key=lambda c: c.rank)
    datasets = Dataset.objects.bulk_create(
        Dataset(
            source=sources[i % 4],
            schema=f"schema_{(i // 4) % 10}",
            name=f"table_{i:04d}",
            classification=ranked[i % len(ranked)],
            declared_classification=ranked[i % len(ranked)],
        )
        for i in range(DATASETS)
    )
    roles = Role.objects.bulk_create(Role(name=f"Role {i:02d}", slug=f"role-{i:02d}") for i in range(ROLES))
    now = timezone.now()
    levels = ["read", "read", "read", "write", "admin"]
    # 10,000 distinct (role, dataset) cells: 20% of the 50,000.
    Grant.objects.bulk_create(
        Grant(
            grantee_role=roles[n % ROLES],
            dataset=datasets[(n // ROLES) * 5 % DATASETS + (n % 5)],
            level=levels[n % 5],
            status=GrantStatus.ACTIVE,
            starts_at=now - dt.timedelta(days=1),
            ends_at=now + dt.timedelta(days=1 + n % 60),
            reason="bench",
        )
        for n in range(GRANTS)
    )
    # People with direct grants, for the people rows: 50 users x 40 datasets.
    people = User.objects.bulk_create(User(username=f"bench_user_{i:02d}") for i in range(PEOPLE))
    Grant.objects.bulk_create(
        Grant(
            grantee_user=people[n % PEOPLE],
            dataset=datasets[(n * 3) % DATASETS],
            level="read",
            status=GrantStatus.ACTIVE,
            starts_at=now - dt.timedelta(days=1),
            ends_at=now + dt.timedelta(days=1 + n % 30),
            reason="bench",
        )
        for n in range(PEOPLE * 40)
    )
    AccessRequest.objects.bulk_create(
        AccessRequest(
            requester=analyst,
            grantee_role=roles[n % ROLES],
            dataset=datasets[(n * 7) % DATASETS],
            level="read",
            justification="bench",
            duration=dt.timedelta(days=3),
            current_stage="owner",
            policy={"stages": ["owner"]},
        )
        for n in range(PENDING)
    )
    SourcePrincipal.objects.bulk_create(
        SourcePrincipal(source=s, role=r, db_role=f"gov_r_{r.slug}_{s.pk}") for s in sources for r in roles
    )
    DriftFinding.objects.bulk_create(
        DriftFinding(
            source=datasets[n * 5].source,
            dataset=datasets[n * 5],
            principal=f"gov_r_{roles[n % ROLES].slug}_{datasets[n * 5].source_id}",
            object_schema=datasets[n * 5].schema,
            object_name=datasets[n * 5].name,
            privilege="UPDATE",
            kind="unexpected",
            detail="bench",
            found_at=now,
            run_id=uuid.uuid4(),
        )
        for n in range(DRIFT)
    )


def measure(client: Client, url: str) -> dict[str, Any]:
    for _ in range(WARMUP):
        assert client.get(url).status_code == 200
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200
    with CaptureQueriesContext(connection) as ctx:
        body = client.get(url).content.decode()
    statements = [q["sql"] for q in ctx.captured_queries]
    floor = []
    with connection.cursor() as cur:
        for _ in range(RUNS):
            start = time.perf_counter()
            for statement in statements:
                cur.execute(statement)
                if cur.description:
                    cur.fetchall()
            floor.append((time.perf_counter() - start) * 1000)
    cells = body.count('class="mx-cell')
    times.sort()
    return {
        "url": url,
        "queries": len(statements),
        "cells": cells,
        "median_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[int(len(times) * 0.95) - 1], 1),
        "floor_ms": round(statistics.median(floor), 1),
        "ratio": round(statistics.median(times) / statistics.median(floor), 1),
    }


def test_matrix_at_scale(officer: User, analyst: User, classifications: dict[str, Classification]) -> None:
    arrange(officer, analyst, classifications)
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    client = Client()
    client.force_login(officer)
    urls = [
        "/portal/matrix/",
        "/portal/matrix/?per_page=100",
        "/portal/matrix/?classification=restricted&page=3",
        "/portal/matrix/?rows=people",
        "/admin/governance/grant/matrix/",
        "/admin/governance/grant/matrix/?per_page=100",
    ]
    report: dict[str, Any] = {
        "scale": {
            "roles": ROLES,
            "datasets": DATASETS,
            "grants": GRANTS,
            "pending": PENDING,
            "drift": DRIFT,
            "people": PEOPLE,
            "direct_grants": PEOPLE * 40,
        },
        "pages": [measure(client, url) for url in urls],
    }
    print()
    print(
        f"matrix: {ROLES} roles x {DATASETS} datasets, {GRANTS} grants, {PENDING} pending, {DRIFT} drift findings; "
        f"{PEOPLE} people with {PEOPLE * 40} direct grants"
    )
    for page in report["pages"]:
        met = page["queries"] <= TARGET_QUERIES and page["median_ms"] <= TARGET_MS
        print(
            f"  {page['url']:<52} {page['cells']:>5} cells  {page['queries']:>2} queries  "
            f"median {page['median_ms']:>6.1f} ms  p95 {page['p95_ms']:>6.1f} ms  "
            f"floor {page['floor_ms']:>5.1f} ms  x{page['ratio']:<5}  {'met' if met else 'NOT MET'}"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "matrix.json").write_text(json.dumps(report, indent=2))
    assert all(page["queries"] <= TARGET_QUERIES for page in report["pages"]), report
    assert report["pages"][0]["cells"] == ROLES * 40
