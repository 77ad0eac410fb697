from django.apps import AppConfig


class PolicyConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "policy"
    verbose_name = "Policy as code"

    def ready(self) -> None:
        # Governance's services refuse to change what a policy document manages; they learn how
        # to ask here (governance never imports this app: docs/policy-as-code.md#managed-by-code).
        from governance import managed

        from .selectors import managed_where

        managed.register(managed_where)
