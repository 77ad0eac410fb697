from django.apps import AppConfig


class ScimConfig(AppConfig):
    """Its own app (label `scim`) so that its tables and migrations stay apart from the rest of
    identity/ (OIDC and the group mappings)."""

    name = "identity.scim"
    label = "scim"
    verbose_name = "SCIM provisioning"
    default_auto_field = "django.db.models.BigAutoField"
