from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    name = "governance"
    verbose_name = "Data governance"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks
