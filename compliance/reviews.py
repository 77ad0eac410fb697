"""The one seam between the posture page and access reviews (built in the `reviews` app).

The control "every Restricted dataset reviewed within COMPLIANCE_REVIEW_MAX_AGE_DAYS" needs, per
dataset, when its access was last re-confirmed by a review. This module asks for it through one
callable named by the setting `COMPLIANCE_REVIEW_FACTS` (a dotted path), so that the compliance app
never imports the reviews app and works without it:

    annotate_last_reviewed(datasets: QuerySet[Dataset]) -> QuerySet[Dataset]

returns the queryset with a `last_reviewed_at` annotation (a datetime, or None for a dataset no
closed review covered), in a subquery: the control stays one query whatever the catalog's size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db.models import QuerySet
from django.utils.module_loading import import_string

ReviewAnnotator = Callable[[QuerySet[Any]], QuerySet[Any]]


def review_annotator() -> tuple[ReviewAnnotator | None, str]:
    """The callable that annotates `last_reviewed_at`, or None and why there is no review data."""
    if not apps.is_installed("reviews"):
        return None, "No review data: access reviews (the reviews app) are not installed."
    path = getattr(settings, "COMPLIANCE_REVIEW_FACTS", "")
    if not path:
        return None, "No review data: COMPLIANCE_REVIEW_FACTS names no review facts."
    try:
        annotate: ReviewAnnotator = import_string(path)
    except ImportError:
        return None, f"No review data: {path} (COMPLIANCE_REVIEW_FACTS) cannot be imported."
    return annotate, ""
