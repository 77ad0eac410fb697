"""Reconcile in chunks of principals: drift on either side of a chunk boundary is found, and a
principal whose grants come in several rows of the stream is never split across two chunks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from psycopg2 import sql

from accounts.roles import REQUESTERS
from governance.models import AccessLevel, Dataset, DataSource, DriftKind, Grant, GrantStatus
from governance.provisioning import grant_principal, package_of
from governance.services import reconcile
from governance.services.reconcile import reconcile_source
from governance.services.requests import access_request_approve, access_request_submit
from tests.provisioning.conftest import drop_test_roles, target_can, wait_for
from tests.provisioning.test_reconcile import DAYS, LEDGER, run_sql

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]


@pytest.fixture(autouse=True)
def clean_target(target_source: DataSource) -> Iterator[None]:
    drop_test_roles(target_source.database)
    yield


def approve(requester: Any, approver: Any, ds: Dataset, level: str = AccessLevel.READ) -> Grant:
    req = access_request_submit(
        requester=requester, dataset=ds, level=level, justification="month-end close", duration=7 * DAYS
    )
    access_request_approve(access_request=req, approver=approver)
    grant = Grant.objects.get(source_request=req)
    wait_for(lambda: Grant.objects.get(pk=grant.pk).status == GrantStatus.ACTIVE)
    return grant


def test_reconcile_in_chunks_finds_drift_on_both_sides_of_a_chunk_boundary(
    target_source: DataSource, owner: Any, make_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    people = [make_user(f"chunked{i}", REQUESTERS) for i in range(5)]  # streamed in this order (by id)
    grants = [approve(person, owner, ledger) for person in people]
    # The last of the first chunk also holds write on another table: two rows of the stream, which
    # must stay in one chunk (split, each half would miss the other's package).
    lines = Dataset.objects.filter(source=target_source, schema="finance").exclude(name="ledger").get()
    approve(people[1], owner, lines, AccessLevel.WRITE)
    roles = [grant_principal(grant).db_role for grant in grants]
    package = package_of(ledger, "read", []).name

    monkeypatch.setattr(reconcile, "CHUNK", 2)
    observed: list[list[str]] = []
    real_observe = reconcile._observe

    def spy(source: DataSource, names: Any, *, packages: bool = False, **kwargs: Any) -> Any:
        if not packages:  # the first pass reads the ACLs of the whole source; then one per chunk
            observed.append(sorted(names))
        return real_observe(source, names, packages=packages, **kwargs)

    monkeypatch.setattr(reconcile, "_observe", spy)
    result = reconcile_source(source=target_source)
    assert result.clean, result.lines()
    assert observed == [sorted(roles[0:2]), sorted(roles[2:4]), [roles[4]]]  # three chunks, none split
    # The same chunks when closed by the memberships they call for (one each, two for the second).
    monkeypatch.setattr(reconcile, "CHUNK", 500)
    monkeypatch.setattr(reconcile, "CHUNK_MEMBERSHIPS", 2)
    observed.clear()
    assert reconcile_source(source=target_source).clean
    assert observed == [sorted(roles[0:2]), sorted(roles[2:4]), [roles[4]]]

    # Out of band: the last of the first chunk and the first of the second leave the read package.
    for role in (roles[1], roles[2]):
        run_sql(target_source, sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(package), sql.Identifier(role)))
    result = reconcile_source(source=target_source)
    expected = [(DriftKind.MISSING, role, "finance.ledger", "SELECT") for role in sorted(roles[1:3])]
    assert [(d.kind, d.principal, str(d.obj), d.privilege) for d in result.drift] == expected, result.lines()

    fixed = reconcile_source(source=target_source, fix=True)
    assert fixed.fixed == 2 and fixed.clean and not fixed.errors, fixed.summary()
    assert all(target_can(target_source.database, role, LEDGER) for role in roles)
    assert reconcile_source(source=target_source).clean
