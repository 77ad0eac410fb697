from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0021_grant_open_end_idx"),
    ]

    operations = [
        migrations.AddField(
            model_name="column",
            name="pii_evaluated_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
