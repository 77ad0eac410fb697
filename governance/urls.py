"""The web portal's pages (`/portal/`)."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "portal"

urlpatterns = [
    path("", views.catalog, name="catalog"),
    path("datasets/<int:pk>/", views.dataset_detail, name="dataset"),
    path("datasets/<int:pk>/request/", views.request_access, name="request"),
]
