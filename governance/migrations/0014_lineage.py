"""Lineage: what views read (datasets and columns), the declared vs the effective classification,
inherited sensitive-data tags, SECURITY DEFINER risks. Existing datasets declare what they had."""

import django.contrib.postgres.fields
import django.db.models.deletion
import pgtrigger.compiler
import pgtrigger.migrations
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('governance', '0013_datasource_aws'),
    ]

    operations = [
        migrations.CreateModel(
            name='ColumnDerivation',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
            ],
        ),
        migrations.CreateModel(
            name='DatasetDependency',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('via', models.CharField(blank=True, help_text="Empty: the view's query names it; else the function that reads it.", max_length=300)),
            ],
        ),
        pgtrigger.migrations.RemoveTrigger(
            model_name='dataset',
            name='insert_insert',
        ),
        pgtrigger.migrations.RemoveTrigger(
            model_name='dataset',
            name='update_update',
        ),
        pgtrigger.migrations.RemoveTrigger(
            model_name='dataset',
            name='delete_delete',
        ),
        migrations.AddField(
            model_name='column',
            name='inherited_from',
            field=models.JSONField(blank=True, default=list, help_text='[{"tag": ..., "column": "schema.table.column", "column_id": ...}]'),
        ),
        migrations.AddField(
            model_name='column',
            name='inherited_tags',
            field=django.contrib.postgres.fields.ArrayField(base_field=models.CharField(max_length=32), blank=True, default=list, size=None),
        ),
        migrations.AddField(
            model_name='column',
            name='lineage_note',
            field=models.CharField(blank=True, help_text='Set when the column could not be traced exactly, with the reason.', max_length=300),
        ),
        migrations.AddField(
            model_name='dataset',
            name='declared_classification',
            field=models.ForeignKey(help_text="The dataset's own classification, as set by a governance admin (or raised by confirmed PII).", null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='governance.classification'),
        ),
        # Until now the one classification was the declared one; lineage starts equal to it.
        migrations.RunSQL(
            "UPDATE governance_dataset SET declared_classification_id = classification_id",
            migrations.RunSQL.noop,
        ),
        migrations.AlterField(
            model_name='dataset',
            name='declared_classification',
            field=models.ForeignKey(help_text="The dataset's own classification, as set by a governance admin (or raised by confirmed PII).", on_delete=django.db.models.deletion.PROTECT, related_name='+', to='governance.classification'),
        ),
        migrations.AddField(
            model_name='dataset',
            name='definer_risks',
            field=models.JSONField(blank=True, default=list, help_text='SECURITY DEFINER functions that read this dataset: whoever may call one reads what it reads.'),
        ),
        migrations.AddField(
            model_name='dataset',
            name='lineage_notes',
            field=models.JSONField(blank=True, default=list, help_text='What the sync could not trace, and what the dataset is judged by instead.'),
        ),
        migrations.AddField(
            model_name='dataset',
            name='lineage_status',
            field=models.CharField(blank=True, choices=[('traced', 'Every column traced to what it reads'), ('partial', 'Some columns judged by everything the view reads'), ('opaque', 'Not traceable: every column judged by everything the view reads')], default='', max_length=16),
        ),
        migrations.AddField(
            model_name='datasetevent',
            name='declared_classification',
            field=models.ForeignKey(db_constraint=False, help_text="The dataset's own classification, as set by a governance admin (or raised by confirmed PII).", null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', related_query_name='+', to='governance.classification'),
        ),
        migrations.RunSQL(
            "UPDATE governance_datasetevent SET declared_classification_id = classification_id",
            migrations.RunSQL.noop,
        ),
        migrations.AlterField(
            model_name='datasetevent',
            name='declared_classification',
            field=models.ForeignKey(db_constraint=False, help_text="The dataset's own classification, as set by a governance admin (or raised by confirmed PII).", on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', related_query_name='+', to='governance.classification'),
        ),
        migrations.AddField(
            model_name='datasetevent',
            name='definer_risks',
            field=models.JSONField(blank=True, default=list, help_text='SECURITY DEFINER functions that read this dataset: whoever may call one reads what it reads.'),
        ),
        migrations.AddField(
            model_name='datasetevent',
            name='lineage_notes',
            field=models.JSONField(blank=True, default=list, help_text='What the sync could not trace, and what the dataset is judged by instead.'),
        ),
        migrations.AddField(
            model_name='datasetevent',
            name='lineage_status',
            field=models.CharField(blank=True, choices=[('traced', 'Every column traced to what it reads'), ('partial', 'Some columns judged by everything the view reads'), ('opaque', 'Not traceable: every column judged by everything the view reads')], default='', max_length=16),
        ),
        migrations.AlterField(
            model_name='dataset',
            name='classification',
            field=models.ForeignKey(help_text='Effective: the strictest of the declared classification and of everything the dataset reads.', on_delete=django.db.models.deletion.PROTECT, related_name='datasets', to='governance.classification'),
        ),
        migrations.AlterField(
            model_name='datasetevent',
            name='classification',
            field=models.ForeignKey(db_constraint=False, help_text='Effective: the strictest of the declared classification and of everything the dataset reads.', on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', related_query_name='+', to='governance.classification'),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='dataset',
            trigger=pgtrigger.compiler.Trigger(name='insert_insert', sql=pgtrigger.compiler.UpsertTriggerSql(func='INSERT INTO "governance_datasetevent" ("classification_id", "created_at", "declared_classification_id", "definer_risks", "description", "id", "is_present", "kind", "last_seen_at", "lineage_notes", "lineage_status", "name", "owner_id", "pgh_context_id", "pgh_created_at", "pgh_label", "pgh_obj_id", "schema", "source_id", "tags", "updated_at", "vanished_at") VALUES (NEW."classification_id", NEW."created_at", NEW."declared_classification_id", NEW."definer_risks", NEW."description", NEW."id", NEW."is_present", NEW."kind", NEW."last_seen_at", NEW."lineage_notes", NEW."lineage_status", NEW."name", NEW."owner_id", _pgh_attach_context(), NOW(), \'insert\', NEW."id", NEW."schema", NEW."source_id", NEW."tags", NEW."updated_at", NEW."vanished_at"); RETURN NULL;', hash='662d93ea0ff2433ccccd4d9a4a92f795e677be30', operation='INSERT', pgid='pgtrigger_insert_insert_2c268', table='governance_dataset', when='AFTER')),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='dataset',
            trigger=pgtrigger.compiler.Trigger(name='update_update', sql=pgtrigger.compiler.UpsertTriggerSql(condition='WHEN (OLD.* IS DISTINCT FROM NEW.*)', func='INSERT INTO "governance_datasetevent" ("classification_id", "created_at", "declared_classification_id", "definer_risks", "description", "id", "is_present", "kind", "last_seen_at", "lineage_notes", "lineage_status", "name", "owner_id", "pgh_context_id", "pgh_created_at", "pgh_label", "pgh_obj_id", "schema", "source_id", "tags", "updated_at", "vanished_at") VALUES (NEW."classification_id", NEW."created_at", NEW."declared_classification_id", NEW."definer_risks", NEW."description", NEW."id", NEW."is_present", NEW."kind", NEW."last_seen_at", NEW."lineage_notes", NEW."lineage_status", NEW."name", NEW."owner_id", _pgh_attach_context(), NOW(), \'update\', NEW."id", NEW."schema", NEW."source_id", NEW."tags", NEW."updated_at", NEW."vanished_at"); RETURN NULL;', hash='43ec1ab1985c6f15a81df959508f4c90ef3f45b4', operation='UPDATE', pgid='pgtrigger_update_update_ebb62', table='governance_dataset', when='AFTER')),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='dataset',
            trigger=pgtrigger.compiler.Trigger(name='delete_delete', sql=pgtrigger.compiler.UpsertTriggerSql(func='INSERT INTO "governance_datasetevent" ("classification_id", "created_at", "declared_classification_id", "definer_risks", "description", "id", "is_present", "kind", "last_seen_at", "lineage_notes", "lineage_status", "name", "owner_id", "pgh_context_id", "pgh_created_at", "pgh_label", "pgh_obj_id", "schema", "source_id", "tags", "updated_at", "vanished_at") VALUES (OLD."classification_id", OLD."created_at", OLD."declared_classification_id", OLD."definer_risks", OLD."description", OLD."id", OLD."is_present", OLD."kind", OLD."last_seen_at", OLD."lineage_notes", OLD."lineage_status", OLD."name", OLD."owner_id", _pgh_attach_context(), NOW(), \'delete\', OLD."id", OLD."schema", OLD."source_id", OLD."tags", OLD."updated_at", OLD."vanished_at"); RETURN NULL;', hash='35288f12ba6308f93d90b0c9834644257b4cb5b6', operation='DELETE', pgid='pgtrigger_delete_delete_c41a0', table='governance_dataset', when='AFTER')),
        ),
        migrations.AddField(
            model_name='columnderivation',
            name='column',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='derived_from_links', to='governance.column'),
        ),
        migrations.AddField(
            model_name='columnderivation',
            name='upstream',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='feeds_links', to='governance.column'),
        ),
        migrations.AddField(
            model_name='datasetdependency',
            name='dataset',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='upstream_links', to='governance.dataset'),
        ),
        migrations.AddField(
            model_name='datasetdependency',
            name='upstream',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='downstream_links', to='governance.dataset'),
        ),
        migrations.AddIndex(
            model_name='columnderivation',
            index=models.Index(fields=['upstream'], name='column_derivation_up_idx'),
        ),
        migrations.AddConstraint(
            model_name='columnderivation',
            constraint=models.UniqueConstraint(fields=('column', 'upstream'), name='column_derivation_unique'),
        ),
        migrations.AddConstraint(
            model_name='datasetdependency',
            constraint=models.UniqueConstraint(fields=('dataset', 'upstream'), name='dataset_dependency_unique'),
        ),
        migrations.AddConstraint(
            model_name='datasetdependency',
            constraint=models.CheckConstraint(condition=models.Q(('dataset', models.F('upstream')), _negated=True), name='dataset_dependency_not_self'),
        ),
    ]
