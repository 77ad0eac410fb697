"""AuditArchive.location: the exact S3 object version an archive is kept in (audit/chain/archive_store.py).

Adding a column with a default rewrites no row, so the append-only trigger on the table (0008) does
not fire; existing archives (in folders) get an empty location and are not read back.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("audit", "0009_partition_by_month")]

    operations = [
        migrations.AddField(
            model_name="auditarchive",
            name="location",
            field=models.CharField(
                blank=True,
                default="",
                help_text="The exact object version the archive is kept in (s3://bucket/key?versionId=...), read "
                "back by verification; empty for a folder's archive (not read back).",
                max_length=1024,
            ),
        ),
    ]
