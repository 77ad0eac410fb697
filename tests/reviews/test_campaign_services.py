"""The campaign services: snapshot, assignment (with separation of duties), decisions, deadline
actions, reminders, the close and its checkpoint."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.utils import timezone

from audit import chain
from audit.models import AuditEvent, AuditSeal, Outcome
from governance.errors import ConflictError, InvalidInput, NotPermitted
from governance.models import Grant, GrantStatus, RoleMembership
from notifications.models import Kind, Notification
from reviews.models import AssignedVia, CampaignStatus, Decision, ReviewCampaign, ReviewItem
from reviews.selectors import evidence_rows
from reviews.services import campaigns
from reviews.services.campaigns import (
    review_campaign_apply_deadline,
    review_campaign_close,
    review_campaign_start,
    review_campaigns_apply_deadlines,
    review_campaigns_start_due,
)
from reviews.services.decisions import review_item_decide, review_item_delegate, review_items_decide
from reviews.services.reminders import review_reminders_send
from tests.audit.trail import SuperuserSession
from tests.reviews.conftest import DAY, World, campaign_of, make_grant

pytestmark = pytest.mark.django_db


def items(campaign) -> dict[int, ReviewItem]:
    """By grant id; a membership by minus its id."""
    return {i.grant_id or -(i.membership_id or 0): i for i in ReviewItem.objects.filter(campaign=campaign)}


def test_start_snapshots_the_grants_in_force_in_scope_and_later_grants_are_not_added(review_world: World, officer):
    campaign = campaign_of(officer, classification=review_world.restricted.classification)
    review_campaign_start(campaign=campaign, actor=officer)
    assert set(items(campaign)) == {review_world.analyst_grant.pk, review_world.owner_grant.pk}
    make_grant(review_world.restricted, user=officer)  # granted after the start
    assert ReviewItem.objects.filter(campaign=campaign).count() == 2
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.OPEN and campaign.deadline_at > timezone.now()


def test_scope_by_role_older_than_and_memberships(review_world: World, officer):
    by_role = campaign_of(officer, role=review_world.role, include_memberships=True)
    review_campaign_start(campaign=by_role, actor=officer)
    assert set(items(by_role)) == {review_world.role_grant.pk, -review_world.membership.pk}
    older = campaign_of(officer, name="old", source=review_world.internal.source, older_than_days=30)
    review_campaign_start(campaign=older, actor=officer)
    assert review_world.young_grant.pk not in items(older)


def test_reviewer_is_the_owner_and_never_the_holder_of_the_access(review_world: World, officer):
    campaign = campaign_of(officer, role=None, include_memberships=True)
    review_campaign_start(campaign=campaign, actor=officer)
    found = items(campaign)
    assert found[review_world.analyst_grant.pk].reviewer == review_world.owner
    # The owner's own grant goes to the next in order: the steward.
    own = found[review_world.owner_grant.pk]
    assert own.reviewer == review_world.steward and own.assigned_via == AssignedVia.STEWARD
    membership = found[-review_world.membership.pk]
    assert membership.reviewer == review_world.role.owner and membership.assigned_via == AssignedVia.ROLE_OWNER


def test_without_owner_or_steward_a_security_officer_reviews_but_not_their_own(review_world: World, officer, make_user):
    from accounts.roles import SECURITY_OFFICERS

    second = make_user("officer2", SECURITY_OFFICERS)
    review_world.restricted.owner = None
    review_world.restricted.save()
    from guardian.shortcuts import remove_perm

    for person in (review_world.owner, review_world.steward):
        remove_perm("steward_dataset", person, review_world.restricted)
    make_grant(review_world.restricted, user=officer)
    campaign = campaign_of(officer, classification=review_world.restricted.classification)
    review_campaign_start(campaign=campaign, actor=officer)
    by_subject = {i.subject_user_id: i for i in ReviewItem.objects.filter(campaign=campaign)}
    assert by_subject[review_world.analyst.pk].reviewer == officer
    assert by_subject[officer.pk].reviewer == second  # the officer's own grant


def test_the_reviewer_cannot_decide_own_access_even_when_it_came_to_reach_them(review_world: World, officer):
    campaign = campaign_of(officer, role=review_world.role)
    review_campaign_start(campaign=campaign, actor=officer)
    item = items(campaign)[review_world.role_grant.pk]
    assert item.reviewer == review_world.owner
    # The reviewer joins the role after the assignment: confirming it would now confirm their own access.
    RoleMembership.objects.create(role=review_world.role, user=review_world.owner)
    with pytest.raises(NotPermitted, match="separation of duties"):
        review_item_decide(item=item, actor=review_world.owner, decision="keep", comment="fine")
    assert AuditEvent.objects.filter(action="review_item.decide", outcome=Outcome.DENIED).exists()


def test_decisions_keep_revoke_shorten_are_recorded_audited_and_carried_out(review_world: World, officer):
    campaign = campaign_of(officer, source=review_world.internal.source)
    review_campaign_start(campaign=campaign, actor=officer)
    found = items(campaign)
    owner = review_world.owner
    with pytest.raises(InvalidInput, match="Restricted"):
        review_item_decide(item=found[review_world.analyst_grant.pk], actor=owner, decision="keep")
    review_item_decide(item=found[review_world.analyst_grant.pk], actor=owner, decision="keep", comment="payroll")
    review_item_decide(item=found[review_world.young_grant.pk], actor=owner, decision="revoke", comment="left team")
    new_end = timezone.now() + 7 * DAY
    review_item_decide(
        item=found[review_world.role_grant.pk], actor=owner, decision="shorten", comment="project ends",
        new_ends_at=new_end,
    )  # fmt: skip
    young = Grant.objects.get(pk=review_world.young_grant.pk)
    assert young.status == GrantStatus.REVOKED and young.revoked_by == owner
    assert Grant.objects.get(pk=review_world.role_grant.pk).ends_at == new_end
    decided = AuditEvent.objects.filter(action="review_item.decided").order_by("pk")
    assert [e.changes["decision"][1] for e in decided] == ["keep", "revoke", "shorten"]
    with pytest.raises(ConflictError):
        review_item_decide(item=found[review_world.young_grant.pk], actor=owner, decision="keep", comment="x")
    with pytest.raises(NotPermitted, match="not assigned to you"):
        review_item_decide(item=found[review_world.owner_grant.pk], actor=owner, decision="keep", comment="mine")


def test_bulk_decides_all_or_none(review_world: World, officer):
    campaign = campaign_of(officer, source=review_world.internal.source)
    review_campaign_start(campaign=campaign, actor=officer)
    found = items(campaign)
    ids = [
        found[review_world.analyst_grant.pk].pk,
        found[review_world.owner_grant.pk].pk,
    ]  # the second is the steward's
    with pytest.raises(NotPermitted):
        review_items_decide(ids=ids, actor=review_world.owner, decision="keep", comment="ok")
    assert not ReviewItem.objects.exclude(decision=Decision.PENDING).exists()
    mine = [found[review_world.analyst_grant.pk].pk, found[review_world.young_grant.pk].pk]
    review_items_decide(ids=mine, actor=review_world.owner, decision="keep", comment="ok")
    assert ReviewItem.objects.filter(pk__in=mine, decision=Decision.KEEP).count() == 2


def test_delegation_to_an_eligible_reviewer_only(review_world: World, officer):
    campaign = campaign_of(officer, source=review_world.internal.source)
    review_campaign_start(campaign=campaign, actor=officer)
    item = items(campaign)[review_world.analyst_grant.pk]
    with pytest.raises(InvalidInput, match="separation of duties"):
        review_item_delegate(item=item, actor=review_world.owner, to=review_world.analyst)
    review_item_delegate(item=item, actor=review_world.owner, to=review_world.steward, comment="you know them")
    item.refresh_from_db()
    assert item.reviewer == review_world.steward and item.assigned_via == AssignedVia.DELEGATED
    assert (
        Notification.objects.filter(kind=Kind.REVIEW_ASSIGNED, context__reviewer=review_world.steward.pk).count() == 2
    )


@pytest.mark.parametrize("action", ["revoke", "keep", "escalate"])
def test_deadline_action_applies_to_undecided_items(review_world: World, officer, action):
    campaign = campaign_of(officer, source=review_world.internal.source, deadline_action=action)
    review_campaign_start(campaign=campaign, actor=officer)
    found = items(campaign)
    review_item_decide(
        item=found[review_world.analyst_grant.pk], actor=review_world.owner, decision="keep", comment="ok"
    )
    assert review_campaign_apply_deadline(campaign=campaign) == 0  # not yet
    later = timezone.now() + 15 * DAY
    assert review_campaign_apply_deadline(campaign=campaign, now=later) == 3
    campaign.refresh_from_db()
    rest = ReviewItem.objects.filter(campaign=campaign).exclude(grant=review_world.analyst_grant)
    if action == "escalate":
        assert {i.reviewer for i in rest} == {officer} and all(i.decision == Decision.PENDING for i in rest)
        assert campaign.status == CampaignStatus.OPEN
    else:
        assert {i.decision for i in rest} == {action} and all(i.decided_at_deadline for i in rest)
        assert campaign.status == CampaignStatus.CLOSED and campaign.close_checkpoint["seq"] > 0
        revoked = Grant.objects.get(pk=review_world.young_grant.pk).revoked_at is not None
        assert revoked == (action == "revoke")
    assert review_campaign_apply_deadline(campaign=campaign, now=later) == 0  # once


def test_reminders_are_sent_once_before_the_deadline_and_daily_when_overdue(review_world: World, officer):
    campaign = campaign_of(officer, source=review_world.internal.source, duration_days=10, remind_days_before=3)
    review_campaign_start(campaign=campaign, actor=officer)
    start = timezone.now()
    assert review_reminders_send(now=start) == 0
    assert review_reminders_send(now=start + 8 * DAY) == 2  # the owner and the steward
    assert review_reminders_send(now=start + 8 * DAY + dt.timedelta(hours=1)) == 0
    assert review_reminders_send(now=start + 11 * DAY) == 2
    # Later the same (UTC) day: nothing more. "Daily" is per calendar day, so "two hours later" would
    # be the next day for a run started after 22:00 (it was, and it failed).
    overdue_at = start + 11 * DAY
    end_of_day = overdue_at.replace(hour=23, minute=59, second=59, microsecond=0)
    assert review_reminders_send(now=overdue_at + (end_of_day - overdue_at) / 2) == 0
    assert review_reminders_send(now=start + 12 * DAY + dt.timedelta(hours=2)) == 2
    assert Notification.objects.filter(kind=Kind.REVIEW_OVERDUE).count() == 4


def test_close_needs_every_item_decided_and_keeps_the_signed_checkpoint(review_world: World, officer):
    campaign = campaign_of(officer, role=review_world.role)
    review_campaign_start(campaign=campaign, actor=officer)
    with pytest.raises(ConflictError, match="not decided"):
        review_campaign_close(campaign=campaign, actor=officer)
    item = ReviewItem.objects.get(campaign=campaign)
    review_item_decide(item=item, actor=review_world.owner, decision="keep", comment="ok")
    closed = review_campaign_close(campaign=campaign, actor=officer)
    assert closed.status == CampaignStatus.CLOSED
    from audit import witnesses

    assert witnesses.parse(closed.close_checkpoint, where="test") is not None
    rows = evidence_rows(closed)
    assert rows[0]["decision"] == "keep" and rows[0]["checkpoint_seq"] == closed.close_checkpoint["seq"]


def test_recurring_campaign_opens_one_occurrence_per_period(review_world: World, officer):
    series = campaign_of(officer, recurrence="monthly", classification=review_world.restricted.classification)
    assert series.starts_at.day == 1
    with pytest.raises(ConflictError):
        review_campaign_start(campaign=series, actor=officer)
    at = series.starts_at
    assert review_campaigns_start_due(now=at) == 1
    assert review_campaigns_start_due(now=at) == 0
    series.refresh_from_db()
    occurrence = series.occurrences.get()
    assert occurrence.status == CampaignStatus.OPEN and occurrence.items.count() == 2
    assert series.starts_at > at


def test_a_bad_cron_expression_is_a_field_error(officer):
    with pytest.raises(InvalidInput) as exc:
        campaign_of(officer, recurrence="cron", cron="61 * * * *")
    assert exc.value.field == "cron"


def test_only_officers_and_admins_create_campaigns(analyst):
    with pytest.raises(NotPermitted):
        campaign_of(analyst)


def _sealer_holding_its_lock() -> SuperuserSession:
    """Another session holding the chain's lock, as the periodic sealer does mid-run."""
    sealer = SuperuserSession()
    assert sealer.rows("SELECT pg_try_advisory_lock(%s)", [chain.SEAL_LOCK]) == [(True,)]
    return sealer


def _decided(review_world: World, officer) -> ReviewCampaign:
    campaign = campaign_of(officer, role=review_world.role)
    review_campaign_start(campaign=campaign, actor=officer)
    review_item_decide(
        item=ReviewItem.objects.get(campaign=campaign), actor=review_world.owner, decision="keep", comment="ok"
    )
    return campaign


def _close_sealed_at(campaign) -> int:
    closed = AuditEvent.objects.get(action="review_campaign.closed", target_id=str(campaign.pk))
    return AuditSeal.objects.get(event_id=closed.pk).seq


def test_the_close_checkpoint_covers_the_close_while_the_periodic_sealer_holds_the_lock(review_world: World, officer):
    """Review finding: the close sealed with `seal_pending`, which returns at once when the periodic
    sealer holds the lock, so the checkpoint could stop short of the close event."""
    campaign = _decided(review_world, officer)
    sealer = _sealer_holding_its_lock()
    release = threading.Timer(0.5, sealer, ["SELECT pg_advisory_unlock(%s)", [chain.SEAL_LOCK]])
    release.start()
    try:
        closed = review_campaign_close(campaign=campaign, actor=officer)
    finally:
        release.join()
        sealer.close()
    assert closed.close_checkpoint["seq"] >= _close_sealed_at(campaign)
    assert evidence_rows(closed)[0]["checkpoint_seq"] == closed.close_checkpoint["seq"]


@pytest.mark.parametrize("again", ["close", "beat"])
def test_a_close_whose_chain_cannot_be_sealed_says_so_and_the_checkpoint_is_taken_later(
    review_world: World, officer, monkeypatch, again
):
    monkeypatch.setattr(campaigns, "CHECKPOINT_SEAL_WAIT", 0.3)
    campaign = _decided(review_world, officer)
    sealer = _sealer_holding_its_lock()
    try:
        with pytest.raises(ConflictError, match=r"is closed, but its checkpoint was not taken: .*held its lock"):
            review_campaign_close(campaign=campaign, actor=officer)
    finally:
        sealer.close()  # the lock goes with the session
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.CLOSED and campaign.close_checkpoint == {}
    failed = AuditEvent.objects.get(action="review_campaign.checkpoint", target_id=str(campaign.pk))
    assert failed.outcome == Outcome.FAILED and "nothing was sealed" in failed.reason

    if again == "close":  # the officer closes it again
        closed = review_campaign_close(campaign=campaign, actor=officer)
    else:  # beat's next run over the deadlines
        review_campaigns_apply_deadlines()
        closed = ReviewCampaign.objects.get(pk=campaign.pk)
    assert closed.close_checkpoint["seq"] >= _close_sealed_at(campaign)
    assert AuditEvent.objects.filter(action="review_campaign.closed", target_id=str(campaign.pk)).count() == 1
    with pytest.raises(ConflictError, match="is not open"):
        review_campaign_close(campaign=campaign, actor=officer)
