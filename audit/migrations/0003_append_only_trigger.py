"""PostgreSQL itself refuses UPDATE and DELETE on audit events, whatever path the SQL takes.

A superuser can still drop the trigger (or use TRUNCATE, which row triggers do not see); the hash
chain of issue 6 is what exposes that. Test runs empty tables with TRUNCATE, which is why this is a
row trigger on UPDATE/DELETE only.
"""

from django.db import migrations

CREATE = """
CREATE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only: % on audit_auditevent refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_event_append_only
    BEFORE UPDATE OR DELETE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION audit_event_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS audit_event_append_only ON audit_auditevent;
DROP FUNCTION IF EXISTS audit_event_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_actor_do_nothing")]
    operations = [migrations.RunSQL(CREATE, DROP)]
