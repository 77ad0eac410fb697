"""Beat tasks of the break-glass app: they call its services only."""

from __future__ import annotations

from celery import shared_task

from .services.review import break_glass_reviews_mark_overdue


@shared_task(name="breakglass.tasks.mark_overdue_reviews")
def mark_overdue_reviews() -> int:
    """Mark the uses whose review is overdue, once each, and tell the officers."""
    return break_glass_reviews_mark_overdue()
