"""`/portal/compliance/`: the posture page and its PDF."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "compliance"

urlpatterns = [
    path("", views.posture, name="posture"),
    path("posture.pdf", views.posture_pdf, name="posture_pdf"),
]
