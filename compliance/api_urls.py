"""`/api/v1/compliance/`: the posture as JSON (compliance/api.py)."""

from __future__ import annotations

from django.urls import path

from .api import CompliancePostureView

urlpatterns = [path("posture/", CompliancePostureView.as_view(), name="api-compliance-posture")]
