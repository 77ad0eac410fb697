from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "observability"
    verbose_name = "Health, metrics and logs"

    def ready(self) -> None:
        from . import exporter, heartbeat  # noqa: F401 - connect their Celery signals (worker metrics, beat's heartbeat)
