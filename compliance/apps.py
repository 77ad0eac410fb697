from django.apps import AppConfig


class ComplianceConfig(AppConfig):
    """The compliance posture (docs/compliance.md): controls computed from live state, and PDF
    rendering for evidence. No models: it reads what the other apps record."""

    name = "compliance"
    verbose_name = "Compliance"
