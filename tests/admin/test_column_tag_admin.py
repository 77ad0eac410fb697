"""The workbench's Column tags pages for owners and stewards (README tour, step 2): their datasets'
tags only, with why; confirm and reject through the services, all or none; strangers 403."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client

from accounts.models import User
from audit.models import AuditEvent
from governance.models import ColumnTag, Dataset, TagStatus
from tests.governance.stewardship_world import Estate, build

pytestmark = pytest.mark.django_db
URL = "/admin/governance/columntag/"


@pytest.fixture
def estate(make_dataset: Callable[..., Dataset], owner: User, other_owner: User) -> Estate:
    return build(make_dataset, owner, other_owner)


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_steward_sees_the_tags_of_their_datasets_with_why(estate: Estate, owner: User) -> None:
    client = signed_in(owner)
    assert "Column tags" in client.get("/admin/").content.decode()
    page = client.get(URL).content.decode()
    assert "sales.customers" in page and "finance.payments" not in page
    assert "73% of 40 sampled values match name@domain" in page
    assert client.get(f"{URL}{estate.email.pk}/change/").status_code == 200
    assert client.get(f"{URL}{estate.iban.pk}/change/").status_code in (302, 403, 404)


def test_a_steward_confirms_and_rejects_through_the_actions(estate: Estate, owner: User) -> None:
    client = signed_in(owner)
    client.post(URL, {"action": "confirm_tags", "_selected_action": [estate.email.pk]}, follow=True)
    client.post(URL, {"action": "reject_tags", "_selected_action": [estate.name.pk]}, follow=True)
    assert ColumnTag.objects.get(pk=estate.email.pk).status == TagStatus.CONFIRMED
    assert ColumnTag.objects.get(pk=estate.name.pk).status == TagStatus.REJECTED
    estate.customers.refresh_from_db()
    assert estate.customers.classification.slug == "confidential"
    assert AuditEvent.objects.filter(action="column_tag.confirmed", actor_username="owner").exists()


def test_people_who_steward_nothing_get_a_403(estate: Estate, make_user: Callable[..., User]) -> None:
    stranger = make_user("stranger")
    assert signed_in(stranger).get(URL).status_code == 403
