"""Integrity snapshots on the real source: an UPDATE on an immutable table is found by the next run;
an append-only table may grow but not change its old rows."""

from __future__ import annotations

import re
from typing import Any

import pytest

from audit.models import AuditEvent
from governance.errors import InvalidInput, NotPermitted
from governance.models import Dataset
from notifications.models import Notification
from quality.models import IntegrityFinding, IntegritySnapshot
from quality.services.integrity import integrity_finding_resolve, integrity_watch_set
from quality.services.runs import quality_run, quality_runs_due
from tests.provisioning.conftest import dba

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_update_on_an_immutable_table_is_found_by_the_next_snapshot(
    customers: Any, owner: Any, gov_admin: Any
) -> None:
    integrity_watch_set(actor=owner, dataset=customers, mode="immutable")
    assert quality_runs_due() == [customers.pk]  # watched with no check: still scheduled
    quality_run(dataset=customers)
    assert IntegritySnapshot.objects.get(dataset=customers).rows == 100
    quality_run(dataset=customers)  # nothing changed
    assert not IntegrityFinding.objects.exists()

    dba(customers.source.database, "UPDATE shop.customers SET score = 987654 WHERE id = 42")
    run = quality_run(dataset=customers)
    finding = IntegrityFinding.objects.get()
    assert finding.snapshot.run == run and finding.resolved_at is None
    assert "checksum changed (a value was modified)" in finding.detail
    # Neither the new value nor the row's key is named (the detail carries a wall-clock time, so the
    # key is looked for outside it: "18:42 UTC" once made this flaky).
    without_time = re.sub(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", "", finding.detail)
    assert "987654" not in finding.detail and "42" not in without_time
    event = AuditEvent.objects.get(action="integrity.changed")
    assert event.outcome == "failed" and event.metadata["finding"] == finding.pk
    assert Notification.objects.filter(kind="integrity_changed", context__finding=finding.pk).exists()
    # The changed table is the new baseline: the next run finds nothing new.
    quality_run(dataset=customers)
    assert IntegrityFinding.objects.count() == 1

    dba(customers.source.database, "DELETE FROM shop.customers WHERE id = 7")
    quality_run(dataset=customers)
    assert "row count changed from 100 to 99" in IntegrityFinding.objects.order_by("-pk")[0].detail
    with pytest.raises(InvalidInput):
        integrity_finding_resolve(actor=owner, finding=finding, resolution=" ")
    integrity_finding_resolve(actor=gov_admin, finding=finding, resolution="planned correction of a score")
    assert IntegrityFinding.objects.filter(resolved_at__isnull=True).count() == 1


def test_an_append_only_table_may_grow_but_not_change(quality_source: Any, owner: Any, analyst: Any) -> None:
    orders = Dataset.objects.get(source=quality_source, schema="shop", name="orders")
    with pytest.raises(NotPermitted):
        integrity_watch_set(actor=analyst, dataset=orders, mode="append_only", key_column="id")
    with pytest.raises(InvalidInput) as refused:
        integrity_watch_set(actor=owner, dataset=orders, mode="append_only", key_column="nope")
    assert refused.value.field == "key_column"
    integrity_watch_set(actor=owner, dataset=orders, mode="append_only", key_column="id")
    quality_run(dataset=orders)
    assert IntegritySnapshot.objects.get().watermark == "52"

    dba(quality_source.database, "INSERT INTO shop.orders SELECT i, 1, 1 FROM generate_series(53, 60) i")
    quality_run(dataset=orders)
    assert not IntegrityFinding.objects.exists()  # new rows above the watermark: fine
    assert IntegritySnapshot.objects.order_by("-pk")[0].watermark == "60"

    dba(quality_source.database, "UPDATE shop.orders SET amount = 0 WHERE id = 3")
    quality_run(dataset=orders)
    assert "were modified" in IntegrityFinding.objects.get().detail

    dba(quality_source.database, "INSERT INTO shop.orders VALUES (0, 1, 1)")  # back-dated: below the watermark
    quality_run(dataset=orders)
    assert "went from 60 to 61" in IntegrityFinding.objects.order_by("-pk")[0].detail


def test_an_open_finding_shows_as_failing_until_accepted(client: Any, customers: Any, owner: Any) -> None:
    integrity_watch_set(actor=owner, dataset=customers, mode="immutable")
    quality_run(dataset=customers)
    dba(customers.source.database, "UPDATE shop.customers SET country = 'XX' WHERE id = 5")
    quality_run(dataset=customers)
    client.force_login(owner)
    failing = client.get("/portal/?quality=failing").content.decode()
    assert "shop.customers" in failing and "shop.orders" not in failing
    assert "changed where it must not (integrity)" in failing
    page = client.get(f"/portal/datasets/{customers.pk}/").content.decode()
    assert 'id="integrity"' in page and "a value was modified" in page
    integrity_finding_resolve(actor=owner, finding=IntegrityFinding.objects.get(), resolution="planned")
    assert "shop.customers" not in client.get("/portal/?quality=failing").content.decode()
