from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0020_columntag_history_without_evaluated_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="column",
            name="pii_evaluated_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
