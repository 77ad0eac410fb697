"""The outbox in the workbench: every notification and every message it made, with the bodies as
sent. With `make run` (console email backend) this is the mail catcher: nothing leaves the machine,
and here is what would have. Read-only: the worker writes these rows, nobody edits them."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html

from governance.admin_helpers import ReadOnlyAdminMixin

from .channels import message_id_header
from .models import Delivery, Notification


class DeliveryInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Delivery
    fk_name = "notification"
    fields = ("recipient", "address", "channel", "status", "attempts", "sent_at", "subject")
    readonly_fields = fields
    extra = 0
    show_change_link = True


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Events someone should hear about, as the services recorded them (the outbox rows)."""

    list_display = ("id", "kind", "created_at", "actor", "prepared_at", "note")
    list_filter = ("kind",)
    list_select_related = ("actor",)
    fields = ("kind", "created_at", "actor", "context", "dedup_key", "prepared_at", "note")
    readonly_fields = fields
    inlines = (DeliveryInline,)
    date_hierarchy = "created_at"
    show_full_result_count = False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Each message to each person: what it said (text and HTML), where it went, when, how often tried."""

    list_display = ("subject", "kind", "recipient", "address", "channel", "status", "attempts", "created_at", "sent_at")
    list_filter = ("status", "kind", "channel")
    list_select_related = ("recipient",)
    search_fields = ("subject", "address", "recipient__username")
    date_hierarchy = "created_at"
    fields = (
        "subject",
        "kind",
        "recipient",
        "address",
        "channel",
        "status",
        "email_message_id",
        "attempts",
        "next_attempt_at",
        "lease_expires_at",
        "sent_at",
        "last_error",
        "link",
        "notification",
        "digest",
        "body_text_display",
        "body_html_display",
    )
    readonly_fields = fields
    show_full_result_count = False

    @admin.display(description="Message-ID")
    def email_message_id(self, obj: Delivery) -> str:
        return message_id_header(str(obj.message_id))

    @admin.display(description="text body")
    def body_text_display(self, obj: Delivery) -> str:
        return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', obj.body_text)

    @admin.display(description="HTML body")
    def body_html_display(self, obj: Delivery) -> str:
        # The HTML as the person's mail program would show it, in a sandbox: no script, no navigation.
        return format_html(
            '<iframe sandbox srcdoc="{}" title="HTML body"'
            ' style="width: 44em; max-width: 100%; height: 30em; border: 1px solid #ccc"></iframe>',
            obj.body_html,
        )
