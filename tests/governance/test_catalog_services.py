"""Catalog writes: owners, stewards, classification floors from confirmed PII, data source secrets."""

from __future__ import annotations

import pytest

from audit.models import AuditEvent
from governance import crypto
from governance.errors import InvalidInput, NotPermitted, PolicyViolation
from governance.models import ColumnTag, DataSource, TagStatus
from governance.policy import holds_dataset_perm
from governance.selectors.catalog import dataset_stewards, datasets_approvable_by
from governance.services import catalog as svc

pytestmark = pytest.mark.django_db


def test_confirming_pii_raises_internal_dataset_to_confidential(gov_admin, owner, make_dataset, classifications):
    ds = make_dataset("contacts", classification="internal", owner=owner, columns=("id", "email"))
    tag = ColumnTag.objects.create(column=ds.columns.get(name="email"), tag="email", evidence="name")
    svc.column_tag_confirm(tag=tag, actor=owner)
    ds.refresh_from_db()
    tag.refresh_from_db()
    assert tag.status == TagStatus.CONFIRMED and tag.decided_by == owner
    assert ds.classification == classifications["confidential"]
    raised = AuditEvent.objects.get(action="dataset.classification_raised")
    assert raised.actor == owner and "Internal" in raised.reason
    assert raised.changes == {
        "declared_classification": [classifications["internal"].pk, classifications["confidential"].pk]
    }


def test_confirming_phi_raises_to_restricted(owner, make_dataset, classifications):
    ds = make_dataset("leave", classification="confidential", owner=owner, columns=("id", "diagnosis"))
    svc.column_tag_add(column=ds.columns.get(name="diagnosis"), tag="phi", actor=owner)
    ds.refresh_from_db()
    assert ds.classification == classifications["restricted"]


def test_rejecting_keeps_classification(owner, make_dataset, classifications):
    ds = make_dataset("contacts", classification="internal", owner=owner, columns=("id", "email"))
    tag = ColumnTag.objects.create(column=ds.columns.get(name="email"), tag="email")
    svc.column_tag_reject(tag=tag, actor=owner)
    ds.refresh_from_db()
    assert ds.classification == classifications["internal"]
    assert AuditEvent.objects.filter(action="column_tag.rejected").count() == 1


def test_non_steward_cannot_confirm(analyst, owner, make_dataset):
    ds = make_dataset("contacts", owner=owner, columns=("id", "email"))
    tag = ColumnTag.objects.create(column=ds.columns.get(name="email"), tag="email")
    with pytest.raises(NotPermitted, match="owner or steward"):
        svc.column_tag_confirm(tag=tag, actor=analyst)
    tag.refresh_from_db()
    assert tag.status == TagStatus.SUGGESTED
    assert AuditEvent.objects.get(outcome="denied").action == "column_tag.confirm"


def test_classification_cannot_drop_below_confirmed_pii(gov_admin, owner, make_dataset, classifications):
    ds = make_dataset(
        "contacts", classification="confidential", owner=owner, columns=("id", "email"), pii={"email": "email"}
    )
    with pytest.raises(PolicyViolation, match="at least Confidential"):
        svc.dataset_update(dataset=ds, actor=gov_admin, classification=classifications["public"])
    ds.refresh_from_db()
    assert ds.classification == classifications["confidential"]


def test_owner_change_moves_object_permissions(gov_admin, owner, other_owner, make_dataset):
    ds = make_dataset("orders", owner=owner)
    svc.dataset_update(dataset=ds, actor=gov_admin, owner=other_owner, reason="team change")
    assert not holds_dataset_perm(owner, ds, "approve_access")
    assert holds_dataset_perm(other_owner, ds, "approve_access")
    assert list(datasets_approvable_by(other_owner)) == [ds]
    event = AuditEvent.objects.get(action="dataset.updated")
    assert event.changes == {"owner": [owner.pk, other_owner.pk]} and event.reason == "team change"


def test_owner_cannot_change_own_classification(owner, make_dataset, classifications):
    ds = make_dataset("orders", owner=owner)
    with pytest.raises(NotPermitted, match="governance admins"):
        svc.dataset_update(dataset=ds, actor=owner, classification=classifications["public"])
    svc.dataset_update(dataset=ds, actor=owner, description="Orders by day")
    ds.refresh_from_db()
    assert ds.description == "Orders by day"


def test_stewards_approve_and_are_listed(gov_admin, owner, analyst, make_user, make_dataset):
    steward = make_user("steward")
    ds = make_dataset("orders", owner=owner)
    svc.dataset_set_stewards(dataset=ds, users=[steward], actor=gov_admin)
    assert list(dataset_stewards(ds)) == [steward]
    assert holds_dataset_perm(steward, ds, "approve_access")
    svc.dataset_set_stewards(dataset=ds, users=[], actor=gov_admin)
    assert list(dataset_stewards(ds)) == []
    assert [e.action for e in AuditEvent.objects.order_by("id")] == ["dataset.steward_added", "dataset.steward_removed"]
    with pytest.raises(NotPermitted):
        svc.dataset_steward_add(dataset=ds, user=steward, actor=analyst)


def test_datasource_secret_is_encrypted_and_never_audited(gov_admin):
    source = svc.datasource_create(
        actor=gov_admin, name="billing", host="db", database="billing", username="portal", password="hunter2-canary"
    )
    raw = DataSource.objects.values_list("password_encrypted", flat=True).get(pk=source.pk)
    assert "hunter2-canary" not in raw
    assert crypto.decrypt(raw) == "hunter2-canary"
    assert "hunter2" not in repr(source) and "hunter2" not in str(source)
    svc.datasource_update(source=source, actor=gov_admin, password="rotated-canary")
    events = list(AuditEvent.objects.order_by("id"))
    assert [e.action for e in events] == ["datasource.created", "datasource.updated"]
    assert events[1].changes == {"password": ["[redacted]", "[redacted]"]}
    assert all("canary" not in str(e.changes) + str(e.metadata) for e in events)


def test_datasource_create_refusals(analyst, gov_admin):
    with pytest.raises(NotPermitted):
        svc.datasource_create(actor=analyst, name="x")
    svc.datasource_create(actor=gov_admin, name="x")
    with pytest.raises(InvalidInput, match="already exists"):
        svc.datasource_create(actor=gov_admin, name="x")
    assert DataSource.objects.count() == 1
    assert AuditEvent.objects.filter(outcome="denied").count() == 2


def test_multifernet_rotation_decrypts_old_tokens(settings):
    old_key, new_key = crypto.generate_key(), crypto.generate_key()
    settings.FIELD_ENCRYPTION_KEYS = [old_key]
    token = crypto.encrypt("pw")
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]
    assert crypto.decrypt(token) == "pw"
    settings.FIELD_ENCRYPTION_KEYS = [new_key]
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="cannot be decrypted"):
        crypto.decrypt(token)


def test_steward_cannot_reject_a_confirmed_tag_but_an_officer_can(owner, officer, make_dataset):
    ds = make_dataset(
        "contacts", classification="confidential", owner=owner, columns=("id", "email"), pii={"email": "email"}
    )
    tag = ColumnTag.objects.get(column__dataset=ds)
    with pytest.raises(NotPermitted, match="confirmed tag"):
        svc.column_tag_reject(tag=tag, actor=owner)
    tag.refresh_from_db()
    assert tag.status == TagStatus.CONFIRMED
    svc.column_tag_reject(tag=tag, actor=officer)
    tag.refresh_from_db()
    assert tag.status == TagStatus.REJECTED
    assert AuditEvent.objects.get(action="column_tag.rejected").actor == officer
