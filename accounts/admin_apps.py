"""The admin application, with its site replaced by the one that asks for a second factor."""

from django.contrib.admin.apps import AdminConfig


class PortalAdminConfig(AdminConfig):
    """django.contrib.admin with accounts.mfa.PortalAdminSite as `admin.site`."""

    default_site = "accounts.mfa.PortalAdminSite"
