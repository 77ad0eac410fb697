from django.apps import AppConfig


class IdentityConfig(AppConfig):
    name = "identity"
    verbose_name = "Company identity"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .oidc import checks  # noqa: F401  (registers the OIDC settings checks)
