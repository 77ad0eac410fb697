"""The Slack pages: the person's link page and preferences (Email, Slack or both per kind), and the
admin's webhooks (the URL stored encrypted, never shown) and links; query counts pinned, independent
of the number of rows."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import Team
from governance import crypto
from notifications.models import Preference, SlackLink, SlackWebhook
from notifications.services.slack_links import slack_link_code_issue, slack_link_confirm
from notifications.services.slack_webhooks import slack_webhook_set
from tests.admin.test_query_counts import count_queries

pytestmark = pytest.mark.django_db


def populate(n: int, make_user: Any, gov_admin: Any) -> None:
    start = Team.objects.count()
    for i in range(start, start + n):
        person = make_user(f"person{i}")
        slack_link_confirm(code=slack_link_code_issue(user=person), slack_user_id=f"U{i}")
        team = Team.objects.create(name=f"Team {i}", slug=f"team-{i}")
        slack_webhook_set(actor=gov_admin, team=team, channel=f"#team-{i}", url=f"https://hooks.slack.com/T/{i}")


@pytest.mark.parametrize(
    ("url_name", "pinned"),
    [
        ("admin:notifications_slackwebhook_changelist", 5),
        ("admin:notifications_slacklink_changelist", 5),
        ("notifications:slack", 3),
        ("notifications:preferences", 5),
    ],
)
def test_slack_pages_query_counts_are_pinned(url_name, pinned, make_user, gov_admin, superuser):
    client = Client()
    client.force_login(superuser)
    populate(2, make_user, gov_admin)
    small = count_queries(client, reverse(url_name))
    populate(20, make_user, gov_admin)
    large = count_queries(client, reverse(url_name))
    assert small == large == pinned, (small, large)


def test_the_preferences_page_saves_email_slack_or_both_per_kind(analyst):
    client = Client()
    client.force_login(analyst)
    data = {"channel": "email", "route_request_decided": "both", "route_access_ending": "slack"}
    assert client.post(reverse("notifications:preferences"), data).status_code == 302
    pref = Preference.objects.get(user=analyst)
    assert pref.routes == {"access_ending": "slack", "request_decided": "both"}
    assert pref.channels_for("request_decided") == ["email", "slack"] and pref.channels_for("drift_found") == ["email"]
    bad = client.post(reverse("notifications:preferences"), {"channel": "email", "route_drift_found": "pigeon"})
    assert bad.status_code == 200 and "route_drift_found" in bad.context["form"].errors


def test_a_governance_admin_sets_a_team_webhook_encrypted_and_never_shown_again(gov_admin, auditor):
    team = Team.objects.create(name="Finance", slug="finance")
    client = Client()
    client.force_login(gov_admin)
    url = "https://hooks.slack.com/services/T0/B0/secret"
    add = reverse("admin:notifications_slackwebhook_add")
    response = client.post(add, {"team": team.pk, "channel": "#finance", "url": url, "is_active": "on"})
    assert response.status_code == 302, response.content.decode()[:2000]
    hook = SlackWebhook.objects.get(team=team)
    assert url not in hook.url_encrypted and crypto.decrypt(hook.url_encrypted) == url
    page = client.get(reverse("admin:notifications_slackwebhook_change", args=[hook.pk])).content.decode()
    assert "secret" not in page
    refused = client.post(add, {"team": team.pk, "channel": "#x", "url": "http://evil.example/hook"})
    assert refused.status_code == 200 and SlackWebhook.objects.count() == 1
    client.force_login(auditor)  # reads the list, adds nothing
    assert client.get(reverse("admin:notifications_slackwebhook_changelist")).status_code == 200
    assert client.get(add).status_code == 403


def test_unlinking_forgets_the_slack_account(analyst):
    slack_link_confirm(code=slack_link_code_issue(user=analyst), slack_user_id="U1")
    client = Client()
    client.force_login(analyst)
    assert client.post(reverse("notifications:slack"), {"action": "unlink"}).status_code == 302
    assert not SlackLink.objects.filter(user=analyst).exists()
