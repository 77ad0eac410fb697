"""Notifications from the engine's events, with the real worker, the real target and the session's
real SMTP server (tests/mail.py): the worker applies, records, and sends what the outcome caused."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from psycopg2 import sql

from governance import crypto
from governance.models import Dataset, DataSource, Grant, GrantStatus, JobStatus, ProvisioningJob
from governance.provisioning import grant_principal
from governance.services.reconcile import reconcile_source
from governance.services.requests import access_request_approve, access_request_submit
from tests import tls_target
from tests.provisioning.conftest import admin_connection, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]


def submit_and_approve(analyst: Any, owner: Any, source: DataSource, comment: str = "") -> Grant:
    ds = Dataset.objects.get(source=source, schema="finance", name="ledger")
    req = access_request_submit(requester=analyst, dataset=ds, justification="close", duration=dt.timedelta(days=2))
    access_request_approve(access_request=req, approver=owner, comment=comment)
    return Grant.objects.get(source_request=req)


def failures_told_to(mailbox: Any, address: str) -> Callable[[], list[Any]]:
    return lambda: [m for m in mailbox.to(address) if m.subject.startswith("Provisioning failed")]


def subjects(mailbox: Any, address: str) -> list[str]:
    return sorted(m.subject for m in mailbox.to(address))


def test_the_requester_hears_that_the_request_was_approved_then_that_the_access_is_active(
    target_source, mailbox, analyst, owner
):
    grant = submit_and_approve(analyst, owner, target_source, comment="For the close.")
    wait_for(lambda: Grant.objects.get(pk=grant.pk).status == GrantStatus.ACTIVE, timeout=20)
    mailbox.wait_for(2, address=analyst.email)
    approved, active = sorted(mailbox.to(analyst.email), key=lambda m: "active" in m.subject)
    assert "was approved" in approved.subject and "For the close." in approved.body()
    assert active.subject == "Your access to finance.ledger is active"
    assert "read access to finance.ledger" in active.body() and "http://portal.test/portal/grants/" in active.body()
    # The owner approved it: told that it waited for them, not of their own decision nor its outcome.
    assert [s for s in subjects(mailbox, owner.email) if "waits for your decision" not in s] == []


def test_a_failed_apply_is_told_to_the_requester_and_the_governance_admins(
    target_source, mailbox, analyst, owner, gov_admin
):
    good = DataSource.objects.get(pk=target_source.pk).password_encrypted
    DataSource.objects.filter(pk=target_source.pk).update(password_encrypted=crypto.encrypt("not-the-password"))
    try:
        grant = submit_and_approve(analyst, owner, target_source)
        wait_for(lambda: ProvisioningJob.objects.filter(grant=grant, status=JobStatus.FAILED).exists(), timeout=20)
        for person in (analyst, gov_admin):
            failed = wait_for(failures_told_to(mailbox, person.email))
            assert f"apply of grant #{grant.pk} on finance.ledger" in failed[0].subject
            assert "password authentication failed" in failed[0].body()
        assert not [s for s in subjects(mailbox, owner.email) if "Provisioning failed" in s]
    finally:
        DataSource.objects.filter(pk=target_source.pk).update(password_encrypted=good)


def test_drift_is_told_to_the_sources_owner_not_to_who_ran_the_reconcile(
    target_source, mailbox, analyst, owner, gov_admin
):
    grant = submit_and_approve(analyst, owner, target_source)
    wait_for(lambda: Grant.objects.get(pk=grant.pk).status == GrantStatus.ACTIVE, timeout=20)
    role = grant_principal(grant).db_role
    conn = admin_connection(target_source.database)
    with conn.cursor() as cur:  # behind the portal's back, through its own login
        cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(tls_target.current().portal_role)))
        cur.execute(sql.SQL("GRANT UPDATE ON finance.ledger TO {}").format(sql.Identifier(role)))
    conn.close()
    result = reconcile_source(source=target_source, actor=gov_admin)
    assert result.counts["unexpected"] == 1
    drift = wait_for(lambda: [m for m in mailbox.to(owner.email) if m.subject.startswith("Drift found")])
    assert drift[0].subject == f"Drift found on {target_source.name}: 1 finding"
    assert "UPDATE" in drift[0].body() and f"?source={target_source.pk}&state=open" in drift[0].body()
    assert not [s for s in subjects(mailbox, gov_admin.email) if "Drift" in s]
