"""Routes of /api/v1/quality/."""

from __future__ import annotations

from rest_framework.routers import DefaultRouter

from . import as_code, views

router = DefaultRouter(trailing_slash=True)
router.include_format_suffixes = False
router.include_root_view = False
router.register("checks", views.QualityCheckViewSet, basename="quality-check")
router.register("runs", views.QualityRunViewSet, basename="quality-run")
router.register("datasets", views.DatasetQualityViewSet, basename="quality-dataset")
router.register("as-code", as_code.AsCodeViewSet, basename="quality-as-code")

urlpatterns = router.urls
