"""Real target databases for catalog tests: created on the portal's own PostgreSQL server with a
unique name (`gov_t_<hex>`), so parallel runs never collide, and dropped afterwards."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import pytest
from django.conf import settings
from psycopg2 import sql

from governance import crypto
from governance.models import DataSource
from tests.db import admin_connection, server_params


def _admin_connection() -> Any:
    return admin_connection(settings.DATABASES["default"]["NAME"])


def create_database(name: str) -> None:
    conn = _admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()


def drop_database(name: str) -> None:
    conn = _admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        conn.close()


def unique_db_name() -> str:
    return f"gov_t_{secrets.token_hex(6)}"


class TargetDB:
    """A scratch database standing in for a governed warehouse; `run()` executes in autocommit."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.conn = psycopg2.connect(**server_params(name))
        self.conn.autocommit = True

    def run(self, query: str | sql.Composable, params: Any = None) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def target_db() -> Iterator[TargetDB]:
    name = unique_db_name()
    create_database(name)
    target = TargetDB(name)
    try:
        yield target
    finally:
        target.close()
        drop_database(name)


@pytest.fixture
def make_source(db: Any) -> Callable[..., DataSource]:
    """A DataSource pointing at a database on the test server (arranged with the ORM, not a service)."""

    def make(database: str, *, name: str = "warehouse", **fields: Any) -> DataSource:
        conf = settings.DATABASES["default"]
        source = DataSource(
            name=name,
            host=conf.get("HOST") or "",
            port=int(conf.get("PORT") or 5432),
            database=database,
            username=conf.get("USER") or "",
            sslmode="disable" if not conf.get("HOST") or str(conf["HOST"]).startswith("/") else "prefer",
            **fields,
        )
        if conf.get("PASSWORD"):
            source.password_encrypted = crypto.encrypt(conf["PASSWORD"])
        source.save()
        return source

    return make
