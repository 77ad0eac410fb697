"""The test suite's database backend: PostgreSQL, except that emptying the database between
transactional tests (Django's flush: one TRUNCATE of every table) runs with triggers off.

The audit trail's tables refuse TRUNCATE by trigger (audit/migrations/0008) in every database,
production included. `session_replication_role = replica` switches ordinary triggers off for the
flush's transaction only; PostgreSQL lets only a superuser (the test database's owner here) set it.
Only config.settings.test names this backend; nothing else in the project can reach it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.backends.postgresql import base, operations


class DatabaseOperations(operations.DatabaseOperations):
    def execute_sql_flush(self, sql_list: Iterable[str]) -> None:
        with transaction.atomic(using=self.connection.alias, savepoint=self.connection.features.can_rollback_ddl):
            with self.connection.cursor() as cursor:
                cursor.execute("SET LOCAL session_replication_role = replica")
                for sql in sql_list:
                    cursor.execute(sql)


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class: Any = DatabaseOperations
