from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from . import redaction
from .models import ActorRedaction, AuditArchive, AuditEvent, AuditSeal, AuditVerification


class ReadOnlyAdmin(admin.ModelAdmin):
    """Nobody adds, changes or deletes these through the admin, superusers included."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RedactedChangeList(ChangeList):
    """The page's events as displayed: redacted people under their pseudonym (audit.redaction)."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        shown = redaction.current()
        if shown:
            self.result_list = [shown.event(e) for e in self.result_list]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Read-only for everyone, superusers included: the trail is append-only. Every event is shown
    with the redactions in force applied (the stored row is not changed)."""

    list_display = ("occurred_at", "actor_username", "action", "outcome", "target_repr", "source", "ip_address")
    list_filter = ("outcome", "source", "action", "target_type")
    search_fields = ("actor_username", "action", "target_repr", "target_id", "request_id", "reason")
    date_hierarchy = "occurred_at"
    list_per_page = 100
    show_full_result_count = False  # COUNT(*) over a large trail on every page is wasted work
    readonly_fields = (
        "occurred_at",
        "actor",
        "actor_username",
        "source",
        "ip_address",
        "user_agent",
        "request_id",
        "action",
        "outcome",
        "target_type",
        "target_id",
        "target_repr",
        "changes_pretty",
        "reason",
        "metadata_pretty",
        "mac",
        "seal",
    )
    fields = readonly_fields

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return RedactedChangeList

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        event = super().get_object(request, object_id, from_field)
        return redaction.current().event(event) if event is not None else None

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any], search_term: str) -> Any:
        # A redacted name finds nothing: its results would link it to the pseudonym they show.
        if search_term and redaction.search_hides(search_term):
            return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="sealed as")
    def seal(self, obj: AuditEvent) -> str:
        sealed = AuditSeal.objects.filter(event_id=obj.pk).first()
        if sealed is None:
            return "not sealed yet (the sealer chains new events every few seconds)"
        return f"seq {sealed.seq} at {sealed.sealed_at:%Y-%m-%d %H:%M:%S}, chained MAC {sealed.chain_mac[:16]}…"

    @admin.display(description="changes")
    def changes_pretty(self, obj: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.changes, indent=2, sort_keys=True))

    @admin.display(description="metadata")
    def metadata_pretty(self, obj: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.metadata, indent=2, sort_keys=True))


@admin.register(ActorRedaction)
class ActorRedactionAdmin(ReadOnlyAdmin):
    """Who is shown under a pseudonym in the trail, why and on whose approval (digests only)."""

    list_display = ("created_at", "actor_id", "pseudonym", "reference", "approved_by", "recorded_by")
    readonly_fields = ("created_at", "actor_id", "pseudonym", "reference", "approved_by", "recorded_by")
    fields = readonly_fields


@admin.register(AuditVerification)
class AuditVerificationAdmin(ReadOnlyAdmin):
    """The outcome of each verification of the trail (periodic task or `manage.py audit_verify`)."""

    list_display = ("started_at", "ok", "checked", "head_seq", "sealed", "first_problem")
    list_filter = ("ok",)
    readonly_fields = (
        "started_at",
        "finished_at",
        "ok",
        "checked",
        "head_seq",
        "head_mac",
        "sealed",
        "problems_pretty",
    )
    fields = readonly_fields

    @admin.display(description="first problem")
    def first_problem(self, obj: AuditVerification) -> str:
        return obj.problems[0]["message"] if obj.problems else "—"

    @admin.display(description="problems (first of each kind)")
    def problems_pretty(self, obj: AuditVerification) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.problems, indent=2))


@admin.register(AuditArchive)
class AuditArchiveAdmin(ReadOnlyAdmin):
    """Where archived events went (`manage.py audit_archive`), and the checkpoint they left."""

    list_display = ("archived_at", "upto_seq", "events", "file_name", "location", "sha256")
    readonly_fields = (
        "archived_at",
        "upto_seq",
        "chain_mac",
        "events",
        "file_name",
        "location",
        "sha256",
        "signature",
    )
    fields = readonly_fields
