from django.apps import AppConfig
from django.db.models.signals import post_migrate


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "People and teams"

    def ready(self) -> None:
        from .roles import ensure_portal_groups

        # Groups need the permission rows, which Django creates in post_migrate; so do we, after it.
        post_migrate.connect(ensure_portal_groups, dispatch_uid="accounts.ensure_portal_groups")
        from . import signals  # noqa: F401 - sign-in successes, failures and lockouts go to the audit trail
