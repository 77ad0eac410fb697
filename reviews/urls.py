"""The portal's review pages (`/portal/reviews/`)."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "reviews"

urlpatterns = [
    path("", views.campaigns, name="campaigns"),
    path("inbox/", views.inbox, name="inbox"),
    path("items/decide/", views.items_decide, name="items_decide"),
    path("items/<int:pk>/decide/", views.item_decide, name="item_decide"),
    path("items/<int:pk>/delegate/", views.item_delegate, name="item_delegate"),
    path("<int:pk>/", views.campaign_detail, name="campaign"),
    path("<int:pk>/start/", views.campaign_start, name="campaign_start"),
    path("<int:pk>/close/", views.campaign_close, name="campaign_close"),
    path("<int:pk>/evidence.csv", views.campaign_evidence, name="campaign_evidence"),
    path("<int:pk>/evidence.pdf", views.campaign_evidence_pdf, name="campaign_evidence_pdf"),
]
