"""A target database of its own for the quality tests (tables the tests change freely), registered
and synced as the least-privileged portal role over verify-full TLS, like every source."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.provisioning.conftest import RUN, dba, register_target
from tests.tls_target import TlsCluster

CANARY = "canary-7f3a9@pii.example"
QUALITY_DDL = [
    "CREATE SCHEMA shop",
    "CREATE TABLE shop.customers (id int PRIMARY KEY, email text, country text, score int, seen_at timestamptz)",
    "CREATE TABLE shop.orders (id int PRIMARY KEY, customer_id int, amount numeric)",
    "CREATE SEQUENCE shop.ids",
    "GRANT USAGE ON SEQUENCE shop.ids TO PUBLIC",
]


def reset_tables(dbname: str) -> None:
    """100 customers (ids 1-100; email NULL for ids 1-10; countries UK/FR/DE; scores 0-99, seen an
    hour ago), 50 orders of existing customers and 2 of unknown ones (ids 901, 902)."""
    dba(
        dbname,
        "TRUNCATE shop.customers, shop.orders",
        "INSERT INTO shop.customers SELECT i, CASE WHEN i <= 10 THEN NULL ELSE 'person' || i || '@example.com' END,"
        " (ARRAY['UK','FR','DE'])[1 + i % 3], i - 1, now() - interval '1 hour' FROM generate_series(1, 100) i",
        "INSERT INTO shop.orders SELECT i, 1 + i % 100, i * 1.5 FROM generate_series(1, 50) i",
        "INSERT INTO shop.orders VALUES (51, 901, 1), (52, 902, 2)",
        "ANALYZE shop.customers",
        "ANALYZE shop.orders",
    )


_CREATED: set[str] = set()


@pytest.fixture(scope="session")
def quality_dbname(target_server: TlsCluster, django_db_setup: Any, django_db_blocker: Any) -> str:
    name = f"gov_q_{RUN}"
    if name not in _CREATED:
        target_server.create_database(name, QUALITY_DDL)
        _CREATED.add(name)
    return name


@pytest.fixture
def quality_source(quality_dbname: str, classifications: Any, owner: Any) -> Iterator[Any]:
    from governance.services.sync import datasource_sync

    reset_tables(quality_dbname)
    source = register_target(
        f"quality_{RUN}", quality_dbname, owner=owner, default_classification=classifications["confidential"]
    )
    datasource_sync(source=source)
    yield source


@pytest.fixture
def customers(quality_source: Any) -> Any:
    """The synced dataset; its owner (the source's, `owner`) may define its checks."""
    from governance.models import Dataset

    return Dataset.objects.select_related("owner").get(source=quality_source, schema="shop", name="customers")
