"""Seed the four default classifications. Policy is data: admins tune these rows afterwards."""

from django.db import migrations

DEFAULTS = [
    {
        "slug": "public",
        "name": "Public",
        "rank": 10,
        "description": "Data that may be published. Read access is granted at once.",
        "approval_stages": [],
        "max_duration_days": 365,
        "justification_required": False,
        "auto_approve": True,
        "pii_requires_explicit_request": False,
    },
    {
        "slug": "internal",
        "name": "Internal",
        "rank": 20,
        "description": "Business data for employees. The dataset owner approves.",
        "approval_stages": ["owner"],
        "max_duration_days": 180,
        "justification_required": False,
        "auto_approve": False,
        "pii_requires_explicit_request": False,
    },
    {
        "slug": "confidential",
        "name": "Confidential",
        "rank": 30,
        "description": "Customer, employee or financial data. The owner approves; a reason is required.",
        "approval_stages": ["owner"],
        "max_duration_days": 90,
        "justification_required": True,
        "auto_approve": False,
        "pii_requires_explicit_request": False,
    },
    {
        "slug": "restricted",
        "name": "Restricted",
        "rank": 40,
        "description": (
            "The most sensitive data (identity numbers, health, payroll). The owner and then a security "
            "officer approve; a reason is required; PII columns only when requested by name."
        ),
        "approval_stages": ["owner", "security_officer"],
        "max_duration_days": 30,
        "justification_required": True,
        "auto_approve": False,
        "pii_requires_explicit_request": True,
    },
]


def seed(apps, schema_editor):
    Classification = apps.get_model("governance", "Classification")
    for row in DEFAULTS:
        Classification.objects.update_or_create(slug=row["slug"], defaults=row)


def unseed(apps, schema_editor):
    # Leave the rows: datasets point at them and PROTECT would refuse anyway.
    pass


class Migration(migrations.Migration):
    dependencies = [("governance", "0001_initial")]
    operations = [migrations.RunPython(seed, unseed)]
