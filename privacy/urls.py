"""The portal's privacy pages (`/portal/privacy/`)."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "privacy"

urlpatterns = [
    path("grants/", views.grants, name="grants"),
    path("grants/<int:pk>/", views.grant_detail, name="grant"),
    path("datasets/<int:pk>/policy/", views.dataset_policy, name="dataset_policy"),
]
