from django.apps import AppConfig


class SubjectsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "subjects"
    verbose_name = "Data-subject requests"

    def ready(self) -> None:
        # The request's identifiers, corrections, a self-service message and an access export are
        # encrypted with governance.crypto: `rewrap_secrets` moves them under the current key like
        # every stored secret.
        from governance.selectors.keys import stored_secret_register
        from governance.services.sync import catalog_synced

        from .models import SubjectExport, SubjectRequest
        from .services.identifiers import identifiers_suggest_after_sync

        stored_secret_register(
            SubjectRequest,
            "identifiers_encrypted",
            "subject_identifiers",
            "the identifiers of subject request #{row.pk}",
        )
        stored_secret_register(
            SubjectRequest,
            "message_encrypted",
            "subject_messages",
            "the self-service message of subject request #{row.pk}",
        )
        stored_secret_register(
            SubjectRequest,
            "corrections_encrypted",
            "subject_corrections",
            "the corrections of subject request #{row.pk}",
        )
        stored_secret_register(
            SubjectExport,
            "payload_encrypted",
            "subject_exports",
            "the access export of subject request #{row.request_id}",
        )
        # Identifier suggestions follow the catalog: each sync that changed a source asks a worker.
        catalog_synced.connect(identifiers_suggest_after_sync, dispatch_uid="subjects.suggest_after_sync")
