"""Routes of /api/v1/policy/."""

from __future__ import annotations

from rest_framework.routers import DefaultRouter

from . import views

router = DefaultRouter(trailing_slash=True)
router.include_format_suffixes = False
router.include_root_view = False
router.register("", views.PolicyViewSet, basename="policy")

urlpatterns = router.urls
