"""A real target database with a demo table of known exact aggregates, registered and synced as
an aggregates-only dataset (tests/tls_target.py: verify-full TLS, the least-privileged portal role).

shop.purchases: customers 1..100 buy once for 50 (regions alternate EU, US); customer 999 buys
1000 times for 1,000,000 (region EU). So, exactly:
* each row a unit: 1100 rows;
* customer_id the unit, at most 2 rows each: 102 rows; amount clamped to [0, 100]: 100*50 + 2*100 = 5200.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from guardian.shortcuts import assign_perm

from tests.api.conftest import api, token_for
from tests.provisioning.conftest import RUN, register_target
from tests.tls_target import TlsCluster

DEMO_DDL = [
    "CREATE SCHEMA shop",
    "CREATE TABLE shop.purchases (id serial PRIMARY KEY, customer_id int, amount numeric, region text)",
    "INSERT INTO shop.purchases (customer_id, amount, region)"
    " SELECT c, 50, CASE WHEN c % 2 = 0 THEN 'EU' ELSE 'US' END FROM generate_series(1, 100) AS c",
    "INSERT INTO shop.purchases (customer_id, amount, region) SELECT 999, 1000000, 'EU' FROM generate_series(1, 1000)",
]
ROWS = 1100
__all__ = ["api", "token_for"]  # the API client fixtures of tests/api
_CREATED: set[str] = set()


@pytest.fixture(scope="session")
def dp_dbname(target_server: TlsCluster, django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
    name = f"gov_dp_{RUN}"
    if name not in _CREATED:
        target_server.create_database(name, DEMO_DDL)
        _CREATED.add(name)
    yield name


@pytest.fixture
def purchases(dp_dbname: str, classifications: Any, owner: Any) -> Any:
    """shop.purchases, synced, marked aggregates only by its owner: unit = each row (k = 1), amount
    in [0, 100], region in EU/US."""
    from django.db import connection

    from governance.models import Dataset
    from governance.services.sync import datasource_sync
    from privacy.services.policy import Bound, Categories, privacy_policy_save

    source = register_target(
        f"dp_{RUN}", dp_dbname, owner=owner, default_classification=classifications["confidential"]
    )
    assert not connection.in_atomic_block, "these tests need django_db(transaction=True)"
    datasource_sync(source=source)
    dataset = Dataset.objects.get(source=source, schema="shop", name="purchases")
    assign_perm("approve_access", owner, dataset)
    assign_perm("steward_dataset", owner, dataset)
    privacy_policy_save(
        dataset=dataset,
        actor=owner,
        aggregates_only=True,
        bounds=[Bound("amount", Decimal(0), Decimal(100))],
        categoricals=[Categories("region", ["EU", "US"])],
    )
    dataset.refresh_from_db()
    return dataset


@pytest.fixture
def aggregate_grant(purchases: Any, analyst: Any, owner: Any) -> Any:
    """The analyst's aggregate grant on shop.purchases with a budget of 10."""
    return grant_aggregate(purchases, analyst, owner, Decimal(10))


def grant_aggregate(dataset: Any, grantee: Any, approver: Any, epsilon: Decimal | None) -> Any:
    from governance.models import Grant
    from governance.services.requests import access_request_approve, access_request_submit

    req = access_request_submit(
        requester=grantee,
        dataset=dataset,
        level="aggregate",
        justification="market sizing",
        duration=None,
        longest_allowed=True,
    )
    access_request_approve(access_request=req, approver=approver, epsilon=epsilon)
    return Grant.objects.get(source_request=req)
