"""The demo's subject identifiers (`seed_demo_subjects`, after `seed_demo`): a request for a demo
customer's e-mail finds their customer row, orders and order lines in the demo warehouse."""

from __future__ import annotations

import io
from typing import Any

import psycopg2
import pytest
from django.core.management import CommandError, call_command

from governance.catalog.introspect import connection_params
from governance.models import Dataset
from subjects.services.requests import subject_request_create, subject_request_preview
from tests.catalog.test_seed_demo import warehouse_name  # noqa: F401 - the demo's own warehouse

pytestmark = pytest.mark.django_db(transaction=True)


def test_seed_demo_subjects_makes_the_demo_answer_a_request(
    warehouse_name: str,  # noqa: F811
    classifications: Any,
    privacy: tuple[Any, Any],
) -> None:
    with pytest.raises(CommandError, match="Run seed_demo first"):
        call_command("seed_demo_subjects", stdout=io.StringIO())
    call_command("seed_demo", "--warehouse-db", warehouse_name, "--no-provisioning", stdout=io.StringIO())
    out = io.StringIO()
    call_command("seed_demo_subjects", stdout=out)
    assert "confirmed on sales" in out.getvalue()
    again = io.StringIO()
    call_command("seed_demo_subjects", stdout=again)
    assert again.getvalue() == "subject identifiers: already there; none added\n"

    source = Dataset.objects.get(schema="sales", name="customers").source
    conn = psycopg2.connect(**connection_params(source))  # the demo warehouse, read-only
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT c.email, count(DISTINCT o.order_id), count(i.*) FROM sales.customers c"
                " JOIN sales.orders o ON o.customer_id = c.customer_id"
                " JOIN sales.order_items i ON i.order_id = o.order_id"
                " GROUP BY c.email ORDER BY c.email LIMIT 1"
            )
            email, orders, items = cur.fetchone()
    finally:
        conn.close()
    request = subject_request_create(actor=privacy[0], kind="access", identifiers={"email": email.upper()})
    request = subject_request_preview(actor=privacy[0], request=request)
    found = {
        r.dataset.name: r.matched for r in request.datasets.select_related("dataset") if r.dataset.schema == "sales"
    }
    assert found == {"customers": 1, "orders": orders, "order_items": items}
