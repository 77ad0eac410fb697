"""Routes of /api/v1/reviews/."""

from __future__ import annotations

from rest_framework.routers import DefaultRouter

from . import views

router = DefaultRouter(trailing_slash=True)
router.include_format_suffixes = False
router.include_root_view = False
router.register("campaigns", views.ReviewCampaignViewSet, basename="review-campaign")
router.register("items", views.ReviewItemViewSet, basename="review-item")

urlpatterns = router.urls
