"""The deploy check that keeps the links in messages pointing at the real portal."""

from __future__ import annotations

import pytest

from notifications.checks import portal_url_reaches_people


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://portal.example.com", "https://localhost", "not a url"]
)
def test_a_development_or_plain_http_portal_url_is_warned_about(settings, url):
    settings.PORTAL_URL = url
    assert [w.id for w in portal_url_reaches_people()] == ["notifications.W001"]


def test_a_public_https_portal_url_passes(settings):
    settings.PORTAL_URL = "https://access.example.com"
    assert portal_url_reaches_people() == []
