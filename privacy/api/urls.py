"""Routes of /api/v1/privacy/."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import DefaultRouter

from . import views

router = DefaultRouter(trailing_slash=True)
router.include_format_suffixes = False
router.include_root_view = False
router.register("grants", views.AggregateGrantViewSet, basename="privacy-grant")

urlpatterns = [
    path("datasets/<int:pk>/policy/", views.DatasetPrivacyPolicyView.as_view(), name="privacy-dataset-policy"),
    *router.urls,
]
