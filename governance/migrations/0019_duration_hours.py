"""Policies bound durations in hours or days: Classification.max_duration_days becomes
max_duration (a duration, the same days; its history rows too), and min_duration (an hour by
default) is added. Reversible: a longest duration in hours rounds up to whole days going back."""

import datetime

import pgtrigger.compiler
import pgtrigger.migrations
from django.db import migrations, models

TO_DURATION = "UPDATE {table} SET max_duration = make_interval(days => max_duration_days)"
TO_DAYS = "UPDATE {table} SET max_duration_days = GREATEST(1, CEIL(EXTRACT(EPOCH FROM max_duration) / 86400))"
MAX_HELP = "Longest grant a request may ask for (hours or days)."
MIN_HELP = "Shortest grant a request may ask for (hours or days)."
OLD_HELP = "Longest grant a request may ask for."


def _copy(model_name, table):
    # The old column is made nullable first, so that going back can fill it before it is NOT NULL again.
    return [
        migrations.AddField(
            model_name=model_name,
            name="min_duration",
            field=models.DurationField(default=datetime.timedelta(seconds=3600), help_text=MIN_HELP),
        ),
        migrations.AddField(
            model_name=model_name, name="max_duration", field=models.DurationField(null=True, help_text=MAX_HELP)
        ),
        migrations.AlterField(
            model_name=model_name,
            name="max_duration_days",
            field=models.PositiveIntegerField(null=True, help_text=OLD_HELP),
        ),
        migrations.RunSQL(TO_DURATION.format(table=table), TO_DAYS.format(table=table)),
        migrations.AlterField(
            model_name=model_name, name="max_duration", field=models.DurationField(help_text=MAX_HELP)
        ),
    ]


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0018_national_id"),
    ]

    operations = [
        # History triggers off while the columns change (no history rows for the copy itself).
        pgtrigger.migrations.RemoveTrigger(
            model_name='classification',
            name='insert_insert',
        ),
        pgtrigger.migrations.RemoveTrigger(
            model_name='classification',
            name='update_update',
        ),
        pgtrigger.migrations.RemoveTrigger(
            model_name='classification',
            name='delete_delete',
        ),
        *_copy("classification", "governance_classification"),
        *_copy("classificationevent", "governance_classificationevent"),
        migrations.RemoveConstraint(model_name="classification", name="classification_max_duration_positive"),
        migrations.RemoveField(model_name="classification", name="max_duration_days"),
        migrations.RemoveField(model_name="classificationevent", name="max_duration_days"),
        migrations.AddConstraint(
            model_name="classification",
            constraint=models.CheckConstraint(
                condition=models.Q(("min_duration__gt", datetime.timedelta(0))),
                name="classification_min_duration_positive",
            ),
        ),
        migrations.AddConstraint(
            model_name="classification",
            constraint=models.CheckConstraint(
                condition=models.Q(("min_duration__lte", models.F("max_duration"))),
                name="classification_min_duration_within_max",
            ),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='classification',
            trigger=pgtrigger.compiler.Trigger(name='insert_insert', sql=pgtrigger.compiler.UpsertTriggerSql(func='INSERT INTO "governance_classificationevent" ("allow_pii_access", "approval_stages", "auto_approve", "description", "id", "justification_required", "max_duration", "min_duration", "name", "pgh_context_id", "pgh_created_at", "pgh_label", "pgh_obj_id", "pii_requires_explicit_request", "rank", "slug") VALUES (NEW."allow_pii_access", NEW."approval_stages", NEW."auto_approve", NEW."description", NEW."id", NEW."justification_required", NEW."max_duration", NEW."min_duration", NEW."name", _pgh_attach_context(), NOW(), \'insert\', NEW."id", NEW."pii_requires_explicit_request", NEW."rank", NEW."slug"); RETURN NULL;', hash='229f00b3c783452c4bf7fb3a7797fbcf6f2a8611', operation='INSERT', pgid='pgtrigger_insert_insert_1c60e', table='governance_classification', when='AFTER')),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='classification',
            trigger=pgtrigger.compiler.Trigger(name='update_update', sql=pgtrigger.compiler.UpsertTriggerSql(condition='WHEN (OLD.* IS DISTINCT FROM NEW.*)', func='INSERT INTO "governance_classificationevent" ("allow_pii_access", "approval_stages", "auto_approve", "description", "id", "justification_required", "max_duration", "min_duration", "name", "pgh_context_id", "pgh_created_at", "pgh_label", "pgh_obj_id", "pii_requires_explicit_request", "rank", "slug") VALUES (NEW."allow_pii_access", NEW."approval_stages", NEW."auto_approve", NEW."description", NEW."id", NEW."justification_required", NEW."max_duration", NEW."min_duration", NEW."name", _pgh_attach_context(), NOW(), \'update\', NEW."id", NEW."pii_requires_explicit_request", NEW."rank", NEW."slug"); RETURN NULL;', hash='3fdb54fb360bcbfea1a3b931a08a4880c9d92315', operation='UPDATE', pgid='pgtrigger_update_update_b805e', table='governance_classification', when='AFTER')),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='classification',
            trigger=pgtrigger.compiler.Trigger(name='delete_delete', sql=pgtrigger.compiler.UpsertTriggerSql(func='INSERT INTO "governance_classificationevent" ("allow_pii_access", "approval_stages", "auto_approve", "description", "id", "justification_required", "max_duration", "min_duration", "name", "pgh_context_id", "pgh_created_at", "pgh_label", "pgh_obj_id", "pii_requires_explicit_request", "rank", "slug") VALUES (OLD."allow_pii_access", OLD."approval_stages", OLD."auto_approve", OLD."description", OLD."id", OLD."justification_required", OLD."max_duration", OLD."min_duration", OLD."name", _pgh_attach_context(), NOW(), \'delete\', OLD."id", OLD."pii_requires_explicit_request", OLD."rank", OLD."slug"); RETURN NULL;', hash='6bdcc854dfd2372378d902977bfc9c179ec8557c', operation='DELETE', pgid='pgtrigger_delete_delete_8c9d3', table='governance_classification', when='AFTER')),
        ),
    ]
