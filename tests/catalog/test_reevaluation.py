"""PII suggestions are re-evaluated on every sync until decided (governance/catalog/sync_tags.py),
against a real PostgreSQL target: updated, withdrawn, a rejection that stays, rejections reopened
when the data changes kind, confirmed tags untouched, and the cost of a sync where nothing changed."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from audit.models import AuditEvent
from governance.models import Column, ColumnTag, DataSource, TagStatus
from governance.services import catalog as catalog_svc
from governance.services.sync import datasource_sync

pytestmark = pytest.mark.django_db(transaction=True)

EMAILS = [f"member{i}@example.org" for i in range(10)]
IPS = [f"10.0.{i}.{i + 1}" for i in range(10)]
# The portal's queries of a sync that finds nothing new, whatever the number of tags (pinned).
UNCHANGED_SYNC_QUERIES = 23


@pytest.fixture
def warehouse(target_db: Any) -> Any:
    target_db.run("CREATE TABLE public.contacts (id integer, contact text, email text, client_ip text, note text)")
    for i in range(10):
        target_db.run(
            "INSERT INTO public.contacts VALUES (%s, %s, 'n/a', %s, 'nothing to see')", (i, EMAILS[i], IPS[i])
        )
    return target_db


@pytest.fixture
def source(warehouse: Any, make_source: Any, owner: Any, classifications: Any) -> DataSource:
    return make_source(warehouse.name, owner=owner)


def tag(column: str, name: str) -> ColumnTag:
    return ColumnTag.objects.get(column__dataset__name="contacts", column__name=column, tag=name)


def set_values(warehouse: Any, column: str, values: list[str]) -> None:
    for i, value in enumerate(values):
        warehouse.run(f"UPDATE public.contacts SET {column} = %s WHERE id = %s", (value, i))


def test_a_suggestion_follows_its_values_and_is_withdrawn_when_they_stop_matching(source, warehouse, gov_admin):
    datasource_sync(source=source, actor=gov_admin)
    first = tag("contact", "email")
    assert (first.status, first.confidence) == (TagStatus.SUGGESTED, 1.0)
    assert first.findings == [
        {"detector": "email", "basis": "values", "shape": "name@domain.tld", "matched": 10, "sampled": 10, "share": 1.0}
    ]

    set_values(warehouse, "contact", [*EMAILS[:7], "call back", "n/a", "unknown"])
    result = datasource_sync(source=source, actor=gov_admin)

    updated = tag("contact", "email")
    assert result.tags_updated == 1 and result.changed
    assert updated.confidence == 0.7 and updated.evidence.startswith("70% of 10 sampled values")
    assert updated.findings[0]["matched"] == 7
    assert updated.evaluated_at and first.evaluated_at and updated.evaluated_at > first.evaluated_at
    synced = AuditEvent.objects.filter(action="datasource.synced").latest("id")
    assert synced.metadata["tags_updated"] == 1

    set_values(warehouse, "contact", ["call back"] * 10)
    result = datasource_sync(source=source, actor=gov_admin)

    assert result.tags_withdrawn == 1
    assert not ColumnTag.objects.filter(column__name="contact").exists()
    synced = AuditEvent.objects.filter(action="datasource.synced").latest("id")
    assert synced.metadata["withdrawn"] == [{"column": "public.contacts.contact", "tag": "email", "confidence": 0.7}]
    assert "1 withdrawn" in synced.reason


def test_an_untagged_column_is_looked_at_again_once_a_day(source, warehouse, gov_admin, django_assert_num_queries):
    datasource_sync(source=source, actor=gov_admin)
    assert not ColumnTag.objects.filter(column__name="note").exists()
    looked = Column.objects.get(dataset__name="contacts", name="note").pii_evaluated_at
    assert looked is not None

    set_values(warehouse, "note", EMAILS)
    result = datasource_sync(source=source, actor=gov_admin)  # the same day: not sampled again

    assert result.tags_suggested == 0 and not ColumnTag.objects.filter(column__name="note").exists()
    assert Column.objects.get(dataset__name="contacts", name="note").pii_evaluated_at == looked

    with time_machine.travel(timezone.now() + dt.timedelta(days=1, seconds=1)):
        result = datasource_sync(source=source, actor=gov_admin)

    assert result.tags_suggested == 1 and tag("note", "email").status == TagStatus.SUGGESTED


def test_untagged_columns_are_looked_at_every_sync_when_the_interval_is_zero(source, warehouse, gov_admin, settings):
    settings.PII_RESAMPLE_UNTAGGED_SECONDS = 0
    datasource_sync(source=source, actor=gov_admin)

    set_values(warehouse, "note", EMAILS)
    result = datasource_sync(source=source, actor=gov_admin)

    assert result.tags_suggested == 1 and tag("note", "email").status == TagStatus.SUGGESTED


def test_a_reopened_tag_keeps_why_it_is_back_until_it_is_decided(source, warehouse, gov_admin, owner):
    datasource_sync(source=source, actor=gov_admin)
    catalog_svc.column_tag_reject(tag=tag("email", "email"), actor=owner)  # made on the name alone
    set_values(warehouse, "email", EMAILS)
    assert datasource_sync(source=source, actor=gov_admin).tags_reopened == 1
    reopened = tag("email", "email")

    set_values(warehouse, "email", [*EMAILS[:8], "n/a", "n/a"])  # still undecided, new figures
    result = datasource_sync(source=source, actor=gov_admin)

    again = tag("email", "email")
    assert result.tags_updated == 1 and again.status == TagStatus.SUGGESTED
    assert again.findings[0] == reopened.findings[0] and again.findings[0]["detector"] == "reopened"
    assert any(f["basis"] == "values" and f["matched"] == 8 for f in again.findings[1:])
    assert again.evidence.startswith("reopened: sampled values now match")
    assert not datasource_sync(source=source, actor=gov_admin).changed, "kept, not rewritten every sync"


def test_a_rejection_stays_rejected_while_the_data_keeps_its_kind(source, warehouse, gov_admin, owner):
    datasource_sync(source=source, actor=gov_admin)
    rejected = catalog_svc.column_tag_reject(tag=tag("contact", "email"), actor=owner)

    set_values(warehouse, "contact", [*EMAILS[:8], "n/a", "n/a"])  # other values, same kind
    warehouse.run("ALTER TABLE public.contacts ALTER COLUMN contact TYPE varchar(200)")  # same kind of type
    result = datasource_sync(source=source, actor=gov_admin)

    again = tag("contact", "email")
    assert result.tags_reopened == 0 and again.status == TagStatus.REJECTED
    assert (again.decided_by, again.evidence, again.findings) == (owner, rejected.evidence, rejected.findings)
    assert not AuditEvent.objects.filter(action="column_tag.reopened").exists()


def test_a_rejection_made_on_the_name_alone_reopens_when_the_values_match(source, warehouse, gov_admin, owner):
    datasource_sync(source=source, actor=gov_admin)
    by_name = tag("email", "email")
    assert by_name.confidence == 0.5 and "but only 0% of 10" in by_name.evidence
    rejected = catalog_svc.column_tag_reject(tag=by_name, actor=owner)

    datasource_sync(source=source, actor=gov_admin)  # nothing new: it stays rejected
    assert tag("email", "email").status == TagStatus.REJECTED

    set_values(warehouse, "email", EMAILS)
    result = datasource_sync(source=source, actor=gov_admin)

    reopened = tag("email", "email")
    assert result.tags_reopened == 1 and reopened.status == TagStatus.SUGGESTED
    assert reopened.decided_by is None and reopened.decided_at is None
    assert reopened.findings[0]["detector"] == "reopened" and reopened.findings[0]["basis"] == "values"
    assert reopened.evidence.startswith("reopened: sampled values now match")
    assert any(f["basis"] == "values" and f["share"] == 1.0 for f in reopened.findings)
    event = AuditEvent.objects.get(action="column_tag.reopened")
    assert event.target_id == str(reopened.pk) and event.changes == {"status": ["rejected", "suggested"]}
    previous = event.metadata["previous_decision"]
    assert previous["status"] == "rejected" and previous["decided_by"] == owner.pk
    assert (
        rejected.decided_at is not None
        and previous["decided_at"] == rejected.decided_at.isoformat()
        and previous["findings"] == rejected.findings
    )

    # Rejected again on the values: that decision stands through later syncs.
    catalog_svc.column_tag_reject(tag=reopened, actor=owner)
    assert datasource_sync(source=source, actor=gov_admin).tags_reopened == 0
    assert tag("email", "email").status == TagStatus.REJECTED


def test_a_rejection_reopens_when_the_column_changes_kind_of_type(source, warehouse, gov_admin, owner):
    datasource_sync(source=source, actor=gov_admin)
    catalog_svc.column_tag_reject(tag=tag("client_ip", "ip_address"), actor=owner)

    warehouse.run("ALTER TABLE public.contacts ALTER COLUMN client_ip TYPE inet USING client_ip::inet")
    result = datasource_sync(source=source, actor=gov_admin)

    reopened = tag("client_ip", "ip_address")
    assert result.tags_reopened == 1 and reopened.status == TagStatus.SUGGESTED
    assert reopened.findings[0]["shape"] == "type changed from text to inet since the rejection"
    event = AuditEvent.objects.get(action="column_tag.reopened")
    assert event.reason.startswith("type changed from text to inet")


def test_confirmed_tags_are_never_touched(source, warehouse, gov_admin, owner):
    datasource_sync(source=source, actor=gov_admin)
    confirmed = catalog_svc.column_tag_confirm(tag=tag("contact", "email"), actor=owner)
    before = ColumnTag.objects.filter(pk=confirmed.pk).values().get()

    set_values(warehouse, "contact", ["call back"] * 10)
    warehouse.run("ALTER TABLE public.contacts ALTER COLUMN contact TYPE varchar(50)")
    datasource_sync(source=source, actor=gov_admin)

    assert ColumnTag.objects.filter(pk=confirmed.pk).values().get() == before


def test_a_relation_that_cannot_be_read_keeps_its_suggestions(source, warehouse, gov_admin):
    warehouse.run("CREATE MATERIALIZED VIEW public.mailing AS SELECT contact AS recipient FROM public.contacts")
    datasource_sync(source=source, actor=gov_admin)
    kept = ColumnTag.objects.get(column__dataset__name="mailing", column__name="recipient")

    warehouse.run("REFRESH MATERIALIZED VIEW public.mailing WITH NO DATA")
    result = datasource_sync(source=source, actor=gov_admin)

    assert "public.mailing" in result.sampling_failures and result.tags_withdrawn == 0
    again = ColumnTag.objects.get(pk=kept.pk)
    assert (again.confidence, again.evidence, again.evaluated_at) == (kept.confidence, kept.evidence, kept.evaluated_at)


def test_an_unchanged_sync_writes_one_statement_for_the_tags_and_no_history(
    source, gov_admin, django_assert_num_queries
):
    from governance.models import ColumnTagEvent  # type: ignore[attr-defined]

    datasource_sync(source=source, actor=gov_admin)
    history = ColumnTagEvent.objects.count()
    events = AuditEvent.objects.count()

    with django_assert_num_queries(UNCHANGED_SYNC_QUERIES) as captured:
        result = datasource_sync(source=source, actor=gov_admin)

    writes = [q["sql"] for q in captured.captured_queries if q["sql"].startswith('UPDATE "governance_columntag"')]
    assert len(writes) == 1 and '"evaluated_at"' in writes[0]

    assert not result.changed and result.relations_sampled == 1
    assert ColumnTagEvent.objects.count() == history, "a re-look is not a change of the tag"
    assert AuditEvent.objects.count() == events
