from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit trail"

    def ready(self) -> None:
        from . import (
            celery,  # noqa: F401 - connects the signal that carries request ids to tasks
            checks,  # noqa: F401 - registers the deploy check for an anchor witness
        )
