"""PostgreSQL refuses TRUNCATE on the audit trail's tables, and any change to archive checkpoints.

Row triggers (0003, 0005) never see TRUNCATE: a statement-level trigger does. The events, the seals
and the archive checkpoints are covered; archive checkpoints are append-only too (archiving only ever
adds one). A superuser can still switch triggers off (`session_replication_role = replica`) or drop
them; the anchors outside the database are what expose that (audit/anchors.py).

The test suite empties tables with TRUNCATE between transactional tests: its database backend
(config/test_database) does that with `session_replication_role = replica`, which only its
superuser may set. Production keeps the refusal.
"""

from django.db import migrations

CREATE = """
CREATE FUNCTION audit_refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only: TRUNCATE on % refused', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE FUNCTION audit_archive_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'archive checkpoints are append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_truncate();
CREATE TRIGGER audit_seal_no_truncate BEFORE TRUNCATE ON audit_auditseal
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_truncate();
CREATE TRIGGER audit_archive_no_truncate BEFORE TRUNCATE ON audit_auditarchive
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_truncate();
CREATE TRIGGER audit_archive_append_only BEFORE UPDATE OR DELETE ON audit_auditarchive
    FOR EACH ROW EXECUTE FUNCTION audit_archive_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS audit_archive_append_only ON audit_auditarchive;
DROP TRIGGER IF EXISTS audit_archive_no_truncate ON audit_auditarchive;
DROP TRIGGER IF EXISTS audit_seal_no_truncate ON audit_auditseal;
DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_auditevent;
DROP FUNCTION IF EXISTS audit_archive_append_only();
DROP FUNCTION IF EXISTS audit_refuse_truncate();
"""


class Migration(migrations.Migration):
    dependencies = [("audit", "0007_mac_covers_the_id")]
    operations = [migrations.RunSQL(CREATE, DROP)]
