"""Revocation that really revokes: a classification may end the grantee's sessions on revoke (on for
Restricted), and the reconciler's two findings about JIT login roles."""

import pgtrigger.compiler
import pgtrigger.migrations
from django.db import migrations, models


def restricted_terminates(apps, schema_editor):
    Classification = apps.get_model("governance", "Classification")
    Classification.objects.filter(slug="restricted").update(terminate_sessions_on_revoke=True)


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0022_column_pii_evaluated_at"),
    ]

    # The field, its history column and the history triggers (django-pghistory) first: the data
    # migration's UPDATE is then recorded with the new column.
    operations = [
        migrations.AddField(
            model_name="classification",
            name="terminate_sessions_on_revoke",
            field=models.BooleanField(
                default=False,
                help_text="Revoking a grant on such data also ends the grantee's open sessions on that source "
                "(a running query on revoked data does not go on). On for Restricted by default.",
            ),
        ),
        pgtrigger.migrations.RemoveTrigger(
            model_name="classification",
            name="insert_insert",
        ),
        pgtrigger.migrations.RemoveTrigger(
            model_name="classification",
            name="update_update",
        ),
        pgtrigger.migrations.RemoveTrigger(
            model_name="classification",
            name="delete_delete",
        ),
        migrations.AddField(
            model_name="classificationevent",
            name="terminate_sessions_on_revoke",
            field=models.BooleanField(
                default=False,
                help_text="Revoking a grant on such data also ends the grantee's open sessions on that source (a running query on revoked data does not go on). On for Restricted by default.",
            ),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name="classification",
            trigger=pgtrigger.compiler.Trigger(
                name="insert_insert",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    func='INSERT INTO "governance_classificationevent" ("allow_pii_access", "approval_stages", "auto_approve", "description", "id", "justification_required", "max_duration", "min_duration", "name", "pgh_context_id", "pgh_created_at", "pgh_label", "pgh_obj_id", "pii_requires_explicit_request", "rank", "slug", "terminate_sessions_on_revoke") VALUES (NEW."allow_pii_access", NEW."approval_stages", NEW."auto_approve", NEW."description", NEW."id", NEW."justification_required", NEW."max_duration", NEW."min_duration", NEW."name", _pgh_attach_context(), NOW(), \'insert\', NEW."id", NEW."pii_requires_explicit_request", NEW."rank", NEW."slug", NEW."terminate_sessions_on_revoke"); RETURN NULL;',
                    hash="88763e63debe910e29a1f055515a1a2577635d83",
                    operation="INSERT",
                    pgid="pgtrigger_insert_insert_1c60e",
                    table="governance_classification",
                    when="AFTER",
                ),
            ),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name="classification",
            trigger=pgtrigger.compiler.Trigger(
                name="update_update",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    condition="WHEN (OLD.* IS DISTINCT FROM NEW.*)",
                    func='INSERT INTO "governance_classificationevent" ("allow_pii_access", "approval_stages", "auto_approve", "description", "id", "justification_required", "max_duration", "min_duration", "name", "pgh_context_id", "pgh_created_at", "pgh_label", "pgh_obj_id", "pii_requires_explicit_request", "rank", "slug", "terminate_sessions_on_revoke") VALUES (NEW."allow_pii_access", NEW."approval_stages", NEW."auto_approve", NEW."description", NEW."id", NEW."justification_required", NEW."max_duration", NEW."min_duration", NEW."name", _pgh_attach_context(), NOW(), \'update\', NEW."id", NEW."pii_requires_explicit_request", NEW."rank", NEW."slug", NEW."terminate_sessions_on_revoke"); RETURN NULL;',
                    hash="2d2a47e74230917330c1aee5bcbcfe4684c9fb2a",
                    operation="UPDATE",
                    pgid="pgtrigger_update_update_b805e",
                    table="governance_classification",
                    when="AFTER",
                ),
            ),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name="classification",
            trigger=pgtrigger.compiler.Trigger(
                name="delete_delete",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    func='INSERT INTO "governance_classificationevent" ("allow_pii_access", "approval_stages", "auto_approve", "description", "id", "justification_required", "max_duration", "min_duration", "name", "pgh_context_id", "pgh_created_at", "pgh_label", "pgh_obj_id", "pii_requires_explicit_request", "rank", "slug", "terminate_sessions_on_revoke") VALUES (OLD."allow_pii_access", OLD."approval_stages", OLD."auto_approve", OLD."description", OLD."id", OLD."justification_required", OLD."max_duration", OLD."min_duration", OLD."name", _pgh_attach_context(), NOW(), \'delete\', OLD."id", OLD."pii_requires_explicit_request", OLD."rank", OLD."slug", OLD."terminate_sessions_on_revoke"); RETURN NULL;',
                    hash="405cfb3d34ab8f112629a138f4efacc955340ad7",
                    operation="DELETE",
                    pgid="pgtrigger_delete_delete_8c9d3",
                    table="governance_classification",
                    when="AFTER",
                ),
            ),
        ),
        migrations.RunPython(restricted_terminates, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="driftfinding",
            name="kind",
            field=models.CharField(
                choices=[
                    ("missing", "Missing"),
                    ("unexpected", "Unexpected"),
                    ("expired_but_present", "Expired but present"),
                    ("leftover_login", "Leftover login"),
                    ("login_expiry", "Login expiry differs"),
                ],
                max_length=24,
            ),
        ),
    ]
