"""The default break-glass policies: Internal and Confidential data may be opened for up to 4 hours
without PII; Public needs no break-glass (access is easy); Restricted never (request and approval)."""

from django.db import migrations

DEFAULTS = {
    "public": {"allowed": False, "max_hours": 4, "include_pii": False},
    "internal": {"allowed": True, "max_hours": 4, "include_pii": False},
    "confidential": {"allowed": True, "max_hours": 4, "include_pii": False},
    "restricted": {"allowed": False, "max_hours": 1, "include_pii": False},
}


def seed(apps, schema_editor):
    Classification = apps.get_model("governance", "Classification")
    BreakGlassPolicy = apps.get_model("breakglass", "BreakGlassPolicy")
    for classification in Classification.objects.filter(slug__in=DEFAULTS):
        BreakGlassPolicy.objects.get_or_create(classification=classification, defaults=DEFAULTS[classification.slug])


class Migration(migrations.Migration):
    dependencies = [("breakglass", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
