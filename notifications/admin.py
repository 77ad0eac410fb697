"""The outbox in the workbench: every notification and every message it made, with the bodies as
sent. With `make run` (console email backend) this is the mail catcher: nothing leaves the machine,
and here is what would have. Read-only: the worker writes these rows, nobody edits them."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from governance.admin_helpers import ReadOnlyAdminMixin, ServiceAdminMixin

from .channels import message_id_header
from .models import Delivery, Notification, SlackLink, SlackWebhook
from .services.slack_webhooks import slack_webhook_set


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
        "payload",
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


class SlackWebhookForm(forms.ModelForm):
    url = forms.CharField(
        required=False,
        label="Webhook URL",
        widget=forms.PasswordInput(render_value=False),
        help_text="Stored encrypted and never shown again; leave empty to keep the current one.",
    )

    class Meta:
        model = SlackWebhook
        fields = ("team", "channel", "is_active")


@admin.register(SlackWebhook)
class SlackWebhookAdmin(ServiceAdminMixin, admin.ModelAdmin):
    """A team's Slack channel: where members who chose Slack but linked no account are told."""

    form = SlackWebhookForm
    list_display = ("team", "channel", "is_active", "updated_at")
    list_select_related = ("team",)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # switch it off instead: the audit trail keeps who changed what

    def save_model(self, request: HttpRequest, obj: SlackWebhook, form: Any, change: bool) -> None:
        data = form.cleaned_data
        saved = self.call_service(
            request,
            lambda: slack_webhook_set(
                actor=request.user,
                team=data["team"],
                channel=data["channel"],
                url=data.get("url", ""),
                is_active=data["is_active"],
            ),
        )
        obj.pk = saved.pk if saved else None


@admin.register(SlackLink)
class SlackLinkAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Who linked which Slack account (people link and unlink themselves on the portal)."""

    list_display = ("user", "slack_user_id", "slack_team_id", "linked_at")
    list_select_related = ("user",)
    search_fields = ("user__username", "slack_user_id")
    fields = ("user", "slack_user_id", "slack_team_id", "linked_at")
    readonly_fields = fields
