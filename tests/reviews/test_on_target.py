"""Reviews against the real target, a real Celery worker and (for the journey) Debian's Chromium:
a review's revoke removes the privilege from the target and the item shows when it was gone; the
owner keeps one grant and revokes one in the browser, the deadline revokes the rest, the campaign
closes and its evidence downloads."""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
from collections.abc import Callable
from typing import Any

import pytest
from guardian.shortcuts import assign_perm
from playwright.sync_api import Browser, expect
from pypdf import PdfReader

from accounts.models import User
from accounts.roles import REQUESTERS
from governance.models import AccessRequest, ApprovalStage, Classification, Dataset, Grant, GrantStatus, RequestState
from governance.provisioning import grant_principal
from governance.services.requests import access_request_approve, access_request_submit
from reviews.models import CampaignStatus, ReviewItem
from reviews.selectors import items_of, revocation_verified_at
from reviews.services.campaigns import review_campaign_apply_deadline, review_campaign_create, review_campaign_start
from reviews.services.decisions import review_item_decide
from tests.mail import MailServer
from tests.provisioning.conftest import target_can, wait_for
from tests.provisioning.test_portal_journey import portal_sign_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]

SELECT = "SELECT * FROM finance.ledger"


def granted(ledger: Dataset, user: User, owner: User, officer: User) -> Grant:
    """A grant on the ledger, approved through the real request flow and active on the target."""
    req = access_request_submit(
        requester=user, dataset=ledger, justification="month-end close", duration=dt.timedelta(days=30)
    )
    deciders: dict[str, User] = {ApprovalStage.OWNER: owner, ApprovalStage.SECURITY_OFFICER: officer}
    while req.state == RequestState.PENDING:
        req = access_request_approve(access_request=req, approver=deciders[req.current_stage], comment="ok")
    grant = Grant.objects.get(source_request=req)
    wait_for(lambda: Grant.objects.get(pk=grant.pk).status == GrantStatus.ACTIVE, timeout=30)
    assert target_can(ledger.source.database, grant_principal(grant).db_role, SELECT)
    return grant


@pytest.fixture
def ledger(target_source: Any, owner: User, classifications: dict[str, Classification]) -> Dataset:
    dataset = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    Dataset.objects.filter(pk=dataset.pk).update(owner=owner, classification=classifications["restricted"])
    assign_perm("approve_access", owner, dataset)
    assign_perm("steward_dataset", owner, dataset)
    dataset.refresh_from_db()
    return dataset


def verified(item_pk: int) -> dt.datetime | None:
    return revocation_verified_at(items_of(ReviewItem.objects.filter(pk=item_pk)).get())


def test_a_review_revoke_removes_the_privilege_from_the_target_and_shows_when(
    ledger: Dataset, analyst: User, owner: User, officer: User
) -> None:
    grant = granted(ledger, analyst, owner, officer)
    campaign = review_campaign_create(actor=officer, name="Ledger review", source=ledger.source)
    review_campaign_start(campaign=campaign, actor=officer)
    item = ReviewItem.objects.get(campaign=campaign, grant=grant)
    review_item_decide(item=item, actor=owner, decision="revoke", comment="the close is done")
    role = grant_principal(grant).db_role
    wait_for(lambda: not target_can(ledger.source.database, role, SELECT), timeout=30)
    at = wait_for(lambda: verified(item.pk), timeout=30)
    item.refresh_from_db()
    assert item.revoked_at is not None and at >= item.revoked_at


def test_owner_keeps_one_revokes_one_the_deadline_revokes_the_rest_and_the_evidence_downloads(
    browser: Browser,
    live_server: Any,
    ledger: Dataset,
    analyst: User,
    owner: User,
    officer: User,
    make_user: Callable[..., User],
    smtp_server: MailServer,
) -> None:
    clerk = make_user("clerk", REQUESTERS)
    temp = make_user("temp", REQUESTERS)
    keep, revoke, lapse = (granted(ledger, person, owner, officer) for person in (clerk, analyst, temp))
    campaign = review_campaign_create(
        actor=officer, name="Restricted Q4", classification=ledger.classification, deadline_action="revoke"
    )
    smtp_server.clear()
    review_campaign_start(campaign=campaign, actor=officer)
    # The worker delivers the assignment to the owner through the real SMTP server.
    (mail,) = smtp_server.wait_for(1, timeout=30, address=owner.email)
    assert mail.subject == "3 access items wait for your review: Restricted Q4"
    items = {i.grant_id: i for i in ReviewItem.objects.filter(campaign=campaign)}
    base = live_server.url

    # The owner opens the review from the header, keeps the clerk's access (a comment is required
    # for Restricted data) and revokes the analyst's.
    own = portal_sign_in(browser, base, "owner")
    own.get_by_role("link", name="Reviews").click()
    own.get_by_role("link", name="3 items wait for your review").click()
    row = own.locator(f"#item-{items[keep.pk].pk}")
    row.get_by_role("button", name="Keep").click()
    expect(own.locator(".messages")).to_contain_text("Say why this Restricted access is still needed.")
    row = own.locator(f"#item-{items[keep.pk].pk}")
    row.get_by_label("Comment (required to keep)").fill("runs the month-end close")
    row.get_by_role("button", name="Keep").click()
    expect(own.locator(".messages")).to_contain_text("Keep: read on finance.ledger for clerk.")
    own.locator(f"#item-{items[revoke.pk].pk}").get_by_role("button", name="Revoke").click()
    expect(own.locator(".messages")).to_contain_text("Revoke: read on finance.ledger for analyst.")
    expect(own.locator("tbody tr")).to_have_count(1)  # the temp's item is left undecided

    # The deadline passes (what the beat task does): its action revokes the rest and closes it.
    campaign.refresh_from_db()
    assert campaign.deadline_at is not None
    assert review_campaign_apply_deadline(campaign=campaign, now=campaign.deadline_at + dt.timedelta(seconds=1)) == 1
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.CLOSED
    db = ledger.source.database
    for grant, still in ((keep, True), (revoke, False), (lapse, False)):
        role = grant_principal(grant).db_role

        def settled(role: str = role, still: bool = still) -> bool:
            return target_can(db, role, SELECT) == still

        wait_for(settled, timeout=30)
    for pk in (items[revoke.pk].pk, items[lapse.pk].pk):
        wait_for(functools.partial(verified, pk), timeout=30)

    # The officer sees the campaign closed, every removal verified, and downloads the evidence.
    sec = portal_sign_in(browser, base, "officer")
    sec.goto(f"{base}/portal/reviews/{campaign.pk}/")
    expect(sec.get_by_role("heading", name="Restricted Q4")).to_contain_text("Closed")
    expect(sec.locator(f"#item-{items[revoke.pk].pk}")).to_contain_text("Gone from the target at")
    expect(sec.locator(f"#item-{items[lapse.pk].pk}")).to_contain_text("(deadline)")
    expect(sec.get_by_label("Overall: 3 of 3 decided")).to_be_visible()
    with sec.expect_download() as info:
        sec.get_by_role("link", name="Download the evidence (CSV)").click()
    text = open(info.value.path(), encoding="utf-8").read()  # noqa: SIM115
    rows = {r["subject"]: r for r in csv.DictReader(io.StringIO(text))}
    assert (rows["clerk"]["decision"], rows["clerk"]["comment"]) == ("keep", "runs the month-end close")
    assert rows["analyst"]["decision"] == "revoke" and rows["analyst"]["revocation_verified_at"]
    assert rows["temp"]["decided_by"] == "(deadline)" and rows["temp"]["revocation_verified_at"]
    assert all(r["checkpoint_seq"] == str(campaign.close_checkpoint["seq"]) for r in rows.values())
    # And the evidence pack, as PDF: the decisions and the checkpoint, read back from the document.
    with sec.expect_download() as info:
        sec.get_by_role("link", name="Download the evidence pack (PDF)").click()
    pack = " ".join(" ".join(page.extract_text() for page in PdfReader(info.value.path()).pages).split())
    assert "runs the month-end close" in pack and "(deadline)" in pack
    assert str(campaign.close_checkpoint["chain_mac"])[:16] in pack.replace(" ", "")
    assert AccessRequest.objects.count() == 3
