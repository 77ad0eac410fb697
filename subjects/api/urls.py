"""Routes of /api/v1/subject-requests/, subject-restrictions/, subject-identifiers/, subject-relationships/,
subject-handling/."""

from __future__ import annotations

from rest_framework.routers import DefaultRouter

from . import views, views_catalog

router = DefaultRouter(trailing_slash=True)
router.include_format_suffixes = False
router.include_root_view = False
router.register("subject-requests", views.SubjectRequestViewSet, basename="subject-request")
router.register("subject-restrictions", views.RestrictionViewSet, basename="subject-restriction")
router.register("subject-identifiers", views_catalog.SubjectIdentifierViewSet, basename="subject-identifier")
router.register("subject-relationships", views_catalog.RelationshipViewSet, basename="subject-relationship")
router.register("subject-handling", views_catalog.HandlingViewSet, basename="subject-handling")

urlpatterns = router.urls
