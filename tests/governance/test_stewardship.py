"""Stewardship services and selectors: the preview of classification changes (views included),
reasons in words, who sees which suggestions, and bulk decisions (all or none, audited)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from accounts.models import User
from audit.models import AuditEvent, Outcome
from governance.errors import InvalidInput, NotFound, NotPermitted
from governance.models import ColumnTag, Dataset, TagStatus
from governance.selectors.stewardship import (
    classification_preview,
    column_tags_visible_to,
    may_decide,
    reasons,
    suggestions_for,
)
from governance.services.catalog import column_tag_confirm
from governance.services.stewardship import column_tags_decide
from tests.governance.stewardship_world import Estate, build

pytestmark = pytest.mark.django_db


@pytest.fixture
def estate(make_dataset: Callable[..., Dataset], owner: User, other_owner: User) -> Estate:
    return build(make_dataset, owner, other_owner)


def classification(dataset: Dataset) -> tuple[str, str]:
    dataset.refresh_from_db()
    return dataset.declared_classification.slug, dataset.classification.slug


def test_the_preview_names_the_dataset_and_every_view_that_rises_and_writes_nothing(estate: Estate) -> None:
    preview = classification_preview([estate.email])
    assert [(c.label, c.before, c.after) for c in preview.raised] == [("sales.customers", "Internal", "Confidential")]
    assert [(c.label, c.before, c.after) for c in preview.views] == [
        ("reporting.customer_emails", "Internal", "Confidential"),
        ("reporting.mailing", "Internal", "Confidential"),
    ]
    assert preview.sentence() == (
        "Confirming Email address on sales.customers.email raises sales.customers from Internal to Confidential; "
        "2 views that read it rise too: reporting.customer_emails (Internal → Confidential), "
        "reporting.mailing (Internal → Confidential)."
    )
    assert classification(estate.customers) == ("internal", "internal")
    assert classification(estate.mailing) == ("internal", "internal")
    assert ColumnTag.objects.get(pk=estate.email.pk).status == TagStatus.SUGGESTED


def test_the_preview_is_what_confirming_then_does(estate: Estate, owner: User) -> None:
    preview = classification_preview([estate.email])
    column_tag_confirm(tag=estate.email, actor=owner)
    for change in [*preview.raised, *preview.views]:
        assert Dataset.objects.get(pk=change.dataset_id).classification.name == change.after
    # The view's column now carries the tag, from its source.
    assert estate.mailing.columns.get(name="email").inherited_tags == ["email"]


def test_the_preview_of_a_selection_takes_the_strictest_and_says_when_nothing_changes(
    estate: Estate, owner: User, classifications: dict[str, Any]
) -> None:
    phi = ColumnTag.objects.create(column=estate.customers.columns.get(name="country"), tag="phi")
    preview = classification_preview([estate.email, phi, estate.iban])
    assert {(c.label, c.after) for c in preview.raised} == {
        ("sales.customers", "Restricted"),
        ("finance.payments", "Confidential"),
    }
    assert preview.sentence().startswith("Confirming 3 suggestions raises ")
    Dataset.objects.filter(pk=estate.payments.pk).update(
        declared_classification=classifications["restricted"], classification=classifications["restricted"]
    )
    quiet = classification_preview([estate.iban])
    assert not quiet.changes_anything
    assert quiet.sentence() == (
        "Confirming IBAN on finance.payments.iban changes no classification "
        "(finance.payments already is at least that strict)."
    )


def test_reasons_say_why_in_words_never_a_value(estate: Estate) -> None:
    assert reasons(estate.email) == [
        "email_pattern: 73% of 40 sampled values match name@domain",
        "name_hint: the column's name matches email",
    ]
    assert reasons(estate.name) == ["person_name_values: 75% of 40 sampled values match Given Family"]
    assert reasons(estate.iban) == ["old"]  # no findings: the evidence of an older sync


def test_stewards_see_their_datasets_officers_everything_strangers_nothing(
    estate: Estate, owner: User, other_owner: User, officer: User, analyst: User, auditor: User
) -> None:
    assert set(suggestions_for(owner)) == {estate.email, estate.name}
    assert set(suggestions_for(other_owner)) == {estate.iban}
    assert set(suggestions_for(officer)) >= {estate.email, estate.name, estate.iban}
    assert set(suggestions_for(auditor)) >= {estate.email, estate.iban}
    assert not column_tags_visible_to(analyst).exists()
    assert may_decide(owner, estate.customers) and not may_decide(owner, estate.payments)
    assert may_decide(officer, estate.payments) and not may_decide(auditor, estate.payments)
    assert not may_decide(analyst, estate.customers)


def test_bulk_confirm_decides_all_audits_each_and_raises_as_the_policy_says(estate: Estate, owner: User) -> None:
    decided = column_tags_decide(ids=[estate.email.pk, estate.name.pk], decision="confirm", actor=owner)
    assert [t.status for t in decided] == [TagStatus.CONFIRMED, TagStatus.CONFIRMED]
    assert classification(estate.customers) == ("confidential", "confidential")
    assert classification(estate.mailing) == ("internal", "confidential")
    events = AuditEvent.objects.filter(action="column_tag.confirmed", outcome=Outcome.SUCCESS)
    assert sorted(int(e.target_id) for e in events) == sorted([estate.email.pk, estate.name.pk])
    assert (
        AuditEvent.objects.filter(action="dataset.classification_raised", target_id=str(estate.customers.pk)).count()
        == 1
    )
    assert AuditEvent.objects.filter(
        action="dataset.effective_classification_changed", target_id=str(estate.mailing.pk)
    ).exists()


def test_bulk_is_all_or_nothing_and_the_refusal_names_the_tag(estate: Estate, owner: User) -> None:
    with pytest.raises(NotPermitted) as refused:
        column_tags_decide(ids=[estate.email.pk, estate.iban.pk], decision="confirm", actor=owner)
    assert refused.value.message.startswith(f"Tag #{estate.iban.pk} (finance.payments.iban, IBAN): Only an owner")
    assert refused.value.details == {"id": estate.iban.pk}
    # The email tag, decided first in the same call, was undone with it.
    assert ColumnTag.objects.get(pk=estate.email.pk).status == TagStatus.SUGGESTED
    assert classification(estate.customers) == ("internal", "internal")
    assert not AuditEvent.objects.filter(action="column_tag.confirmed").exists()
    denied = AuditEvent.objects.get(action="column_tag.bulk_decide", outcome=Outcome.DENIED)
    assert f"Tag #{estate.iban.pk}" in denied.reason


def test_bulk_refuses_bad_input_with_the_field(estate: Estate, owner: User) -> None:
    with pytest.raises(InvalidInput) as bad:
        column_tags_decide(ids=[estate.email.pk], decision="maybe", actor=owner)
    assert bad.value.field == "decision"
    with pytest.raises(InvalidInput) as empty:
        column_tags_decide(ids=[], decision="confirm", actor=owner)
    assert empty.value.field == "ids"
    with pytest.raises(NotFound) as missing:
        column_tags_decide(ids=[estate.email.pk, 987654321], decision="reject", actor=owner)
    assert missing.value.details == {"id": 987654321}
    assert ColumnTag.objects.get(pk=estate.email.pk).status == TagStatus.SUGGESTED


def test_a_rejected_suggestion_stays_rejected_and_a_steward_cannot_undo_a_confirmation(
    estate: Estate, owner: User, officer: User
) -> None:
    column_tags_decide(ids=[estate.name.pk], decision="reject", actor=owner)
    assert classification(estate.customers) == ("internal", "internal")
    column_tags_decide(ids=[estate.email.pk], decision="confirm", actor=owner)
    with pytest.raises(NotPermitted):
        column_tags_decide(ids=[estate.email.pk], decision="reject", actor=owner)
    column_tags_decide(ids=[estate.email.pk], decision="reject", actor=officer)
    assert ColumnTag.objects.get(pk=estate.email.pk).status == TagStatus.REJECTED
