from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "observability"
    verbose_name = "Health, metrics and logs"

    def ready(self) -> None:
        from . import heartbeat  # noqa: F401 - connects beat's heartbeat to the publishing of its task
