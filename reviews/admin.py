"""The workbench's review pages: campaigns (created through the service; started and closed by
actions) with their progress, and items (read-only; decided by actions that call the same service as
the portal and the API, so the reviewer and separation-of-duties checks hold here too)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from governance.admin_helpers import ReadOnlyAdminMixin, ServiceAdminMixin, run_bulk, run_service

from .models import Decision, ReviewCampaign, ReviewItem
from .services import campaigns as campaign_services
from .services import decisions

CREATE_FIELDS: list[Any] = list(campaign_services.CAMPAIGN_FIELDS)


def progress_bar(decided: int, total: int) -> str:
    if not total:
        return "no items"
    return format_html(
        '<progress max="{}" value="{}" aria-label="{} of {} decided"></progress> {} of {}',
        total, decided, decided, total, decided, total,
    )  # fmt: skip


@admin.register(ReviewCampaign)
class ReviewCampaignAdmin(ServiceAdminMixin, admin.ModelAdmin):
    list_display = ("name", "status", "recurrence", "deadline_at", "deadline_action", "progress")
    list_filter = ("status", "recurrence", "deadline_action")
    list_select_related = ("source", "classification", "role", "dataset_owner")
    search_fields = ("name",)
    fields = CREATE_FIELDS
    actions = ("start", "close")

    def get_queryset(self, request: HttpRequest) -> QuerySet[ReviewCampaign]:
        return (
            super()
            .get_queryset(request)
            .annotate(total=Count("items"), decided=Count("items", filter=~Q(items__decision=Decision.PENDING)))
        )

    @admin.display(description="progress")
    def progress(self, obj: Any) -> str:
        return progress_bar(obj.decided, obj.total)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return CREATE_FIELDS if obj is not None else ()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ReviewCampaign, form: Any, change: bool) -> None:
        if change:
            return
        data = {k: v for k, v in form.cleaned_data.items() if k in CREATE_FIELDS and k != "name"}
        created = self.call_service(
            request,
            lambda: campaign_services.review_campaign_create(
                actor=request.user, name=form.cleaned_data["name"], **data
            ),
        )
        obj.pk = created.pk if created else None

    @admin.action(description="Start the selected campaigns now")
    def start(self, request: HttpRequest, queryset: QuerySet[ReviewCampaign]) -> None:
        run_bulk(
            request,
            queryset,
            lambda c: campaign_services.review_campaign_start(campaign=c.pk, actor=request.user),
            verb="started",
            label=str,
        )

    @admin.action(description="Close the selected campaigns (every item decided)")
    def close(self, request: HttpRequest, queryset: QuerySet[ReviewCampaign]) -> None:
        run_bulk(
            request,
            queryset,
            lambda c: campaign_services.review_campaign_close(campaign=c.pk, actor=request.user),
            verb="closed",
            label=str,
        )


@admin.register(ReviewItem)
class ReviewItemAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("pk", "campaign", "what", "reviewer", "assigned_via", "decision", "decided_at", "revoked_at")
    list_filter = ("decision", "assigned_via", "campaign")
    list_select_related = ("campaign", "dataset", "subject_user", "subject_role", "reviewer")
    search_fields = ("subject_user__username", "reviewer__username", "dataset__name")
    actions = ("keep", "revoke")

    @admin.display(description="access")
    def what(self, obj: ReviewItem) -> str:
        return obj.describe()

    def _decide(self, request: HttpRequest, queryset: QuerySet[ReviewItem], decision: str) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        comment = f"Decided in the workbench by {request.user}."
        run_service(
            request,
            lambda: decisions.review_items_decide(ids=ids, actor=request.user, decision=decision, comment=comment),
            success=f"{decision.capitalize()}: {len(ids)} item(s).",
        )

    @admin.action(description="Keep the selected items (you must be their reviewer)")
    def keep(self, request: HttpRequest, queryset: QuerySet[ReviewItem]) -> None:
        self._decide(request, queryset, Decision.KEEP)

    @admin.action(description="Revoke the selected items (you must be their reviewer)")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ReviewItem]) -> None:
        self._decide(request, queryset, Decision.REVOKE)
