"""The notifications pages of the portal (`/portal/notifications/`)."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "notifications"

urlpatterns = [
    path("", views.preferences, name="preferences"),
    path("slack/", views.slack, name="slack"),
]
