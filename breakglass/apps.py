from django.apps import AppConfig


class BreakGlassConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "breakglass"
    verbose_name = "Break-glass access"
