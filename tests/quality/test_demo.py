"""The demo's quality checks (`seed_demo_quality`, after `seed_demo`: what `make run` shows)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from quality.models import DatasetQuality, QualityCheck
from tests.catalog.test_seed_demo import warehouse_name  # noqa: F401 - the demo's own warehouse

pytestmark = pytest.mark.django_db(transaction=True)


def test_seed_demo_quality_adds_checks_runs_them_once_and_one_fails(warehouse_name: str, classifications: Any) -> None:  # noqa: F811
    with pytest.raises(CommandError, match="Run seed_demo first"):
        call_command("seed_demo_quality", stdout=io.StringIO())
    call_command("seed_demo", "--warehouse-db", warehouse_name, "--no-provisioning", stdout=io.StringIO())
    out = io.StringIO()
    call_command("seed_demo_quality", stdout=out)
    assert "4 added on sales.customers; first run failing" in out.getvalue()
    failing = QualityCheck.objects.get(name="countries we ship to")
    assert failing.last_status == "fail" and 0 < (failing.last_value or 0) < 1
    assert QualityCheck.objects.exclude(name="countries we ship to").filter(last_status="pass").count() == 3
    again = io.StringIO()
    call_command("seed_demo_quality", stdout=again)
    assert "already there; none added" in again.getvalue()
    assert DatasetQuality.objects.get().status == "failing"
