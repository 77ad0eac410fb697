"""Connections to the test PostgreSQL server as the portal's own (superuser) login: for arranging
targets, inspecting them, and creating scratch databases. One definition for every test package."""

from __future__ import annotations

from typing import Any

import psycopg2
from django.conf import settings


def server_params(dbname: str | None = None) -> dict[str, Any]:
    """libpq keyword arguments for the server of the test database (only those that are set)."""
    db = settings.DATABASES["default"]
    params: dict[str, Any] = {"connect_timeout": 5}
    if dbname is not None:
        params["dbname"] = dbname
    for key, param in (("HOST", "host"), ("PORT", "port"), ("USER", "user"), ("PASSWORD", "password")):
        if db.get(key):
            params[param] = db[key]
    return params


def admin_connection(dbname: str = "postgres") -> Any:
    """An autocommit connection to `dbname` on that server."""
    conn = psycopg2.connect(**server_params(dbname))
    conn.autocommit = True
    return conn
