"""`make run` on a machine with only Python: the whole stack comes up, serves the admin, and goes away.

This starts `scripts/devstack.py run` for real with EMBEDDED=1 (PostgreSQL and Redis from the wheels),
in a temporary state directory, then signs in to the admin as the demo admin and stops it with SIGINT
as Ctrl-C would. It needs no Django test database: it talks to the stack over HTTP (and, to check who
may connect to the databases the demo made, to its embedded PostgreSQL) only.

The choice of the portal's database is tested on its own too, on the test server: PUBLIC's CONNECT
is revoked on a database the stack made (the embedded server's, or one it created on the local
server), never on one DATABASE_URL names or one that was there before.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import importlib.util
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql

from tests.processes import Output, free_port

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 180
STOP_TIMEOUT = 60

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="checks for orphan processes through /proc")


def _processes_mentioning(needles: Iterable[str]) -> list[str]:
    """Every live process (but this one) whose command line contains one of the needles."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # exited meanwhile, or a kernel thread
            continue
        if any(needle in cmdline for needle in needles):
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def _devstack() -> Any:
    """scripts/devstack.py as a module (one copy per test session, shared with tests/tls_target.py)."""
    name = "devstack_for_tests"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "devstack.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
        spec.loader.exec_module(module)
    return sys.modules[name]


def _public_may_connect(url: str, database: str) -> bool:
    conn = psycopg2.connect(url, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT has_database_privilege('public', %s, 'CONNECT')", [database])
            return bool(cur.fetchone()[0])
    finally:
        conn.close()


def _browser() -> urllib.request.OpenerDirector:
    """An HTTP client that keeps cookies (session, CSRF) like a browser."""
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))


def _login_to_admin(base: str, password: str) -> tuple[int, str, str]:
    """Sign in through the admin login form; return the final status, URL and page."""
    opener = _browser()
    login_url = f"{base}/admin/login/?next=/admin/"
    with opener.open(login_url, timeout=30) as response:
        page = response.read().decode()
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert match, "no CSRF token on the login page"
    form = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": match.group(1), "username": "admin", "password": password, "next": "/admin/"}
    ).encode()
    with opener.open(login_url, data=form, timeout=30) as response:
        return response.status, response.geturl(), response.read().decode()


@pytest.mark.slow  # the whole stack: embedded PostgreSQL and Redis, migrate, web and worker
def test_make_run_serves_the_admin_and_ctrl_c_leaves_nothing_behind(tmp_path: Path) -> None:
    port = free_port()
    state_dir = tmp_path / "devstack"
    demo_password = secrets.token_urlsafe(16)
    env = {
        key: value
        for key, value in os.environ.items()
        # The stack must find everything itself; pytest's own settings must not leak into it.
        if key not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"}
    }
    env.update(
        EMBEDDED="1",
        PORT=str(port),
        DEMO_PASSWORD=demo_password,
        DEVSTACK_DIR=str(state_dir),
        PYTHONUNBUFFERED="1",
    )
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "devstack.py"), "run"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # our SIGINT below is the only one it gets, as from a terminal
    )
    assert proc.stdout is not None
    output = Output(proc.stdout)
    base = f"http://127.0.0.1:{port}"
    needles = [str(state_dir), f"127.0.0.1:{port}"]
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not output.contains(f"{base}/admin/"):
            assert proc.poll() is None, f"devstack exited with {proc.returncode}:\n{output.tail()}"
            assert time.monotonic() < deadline, f"no URL after {START_TIMEOUT} s:\n{output.tail()}"
            time.sleep(0.2)

        with _browser().open(f"{base}/healthz", timeout=30) as response:
            assert response.status == 200
        with _browser().open(f"{base}/admin/login/", timeout=30) as response:
            assert response.status == 200
            assert 'name="password"' in response.read().decode()

        status, url, page = _login_to_admin(base, demo_password)
        assert status == 200
        assert urllib.parse.urlsplit(url).path == "/admin/", url
        assert 'id="login-form"' not in page, "still on the login page: the demo admin could not sign in"
        assert "/admin/logout/" in page

        # The demo's audit trail is anchored outside its database: the beat seals the demo's events
        # and writes the signed head to the file witness within one anchor interval (30 s).
        anchors_file = state_dir / "audit-anchors.jsonl"
        # devstack prints paths inside the project relative to it (pytest's temporary directory is
        # under .devstack when make test runs this), others as they are.
        shown = anchors_file.relative_to(ROOT) if anchors_file.is_relative_to(ROOT) else anchors_file
        assert output.contains(f"anchors of the trail's head in {shown}"), output.tail()
        deadline = time.monotonic() + 90
        while not (anchors_file.exists() and anchors_file.read_text().endswith("\n")):
            assert time.monotonic() < deadline, f"no anchor in {anchors_file} after 90 s:\n{output.tail()}"
            time.sleep(0.5)
        anchor = json.loads(anchors_file.read_text().splitlines()[-1])
        assert anchor["v"] == 2 and anchor["seq"] > 0 and len(anchor["signature"]) == 64, anchor

        # The embedded cluster is the demo's: PUBLIC may connect neither to the portal's database
        # nor to the warehouse seed_demo made, so a JIT login made for the warehouse (which inherits
        # CONNECT on it from its principal) can reach nothing else; the portal's login still can.
        password = (state_dir / "postgres-password").read_text().strip()
        port = int((state_dir / "postgres-port").read_text())
        server = f"postgres://postgres:{urllib.parse.quote(password, safe='')}@127.0.0.1:{port}"
        assert output.contains("revoked PUBLIC's CONNECT on database 'governance'"), output.tail()
        assert output.contains("warehouse demo_warehouse: only roles granted CONNECT may connect"), output.tail()
        for database in ("governance", "demo_warehouse"):
            assert _public_may_connect(f"{server}/{database}", database) is False, database

        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"devstack still running {STOP_TIMEOUT} s after SIGINT:\n{output.tail()}")
        assert code == 0, output.tail()
        assert _processes_mentioning(needles) == [], output.tail()
    finally:
        if proc.poll() is None:  # a failed assertion above: still stop the stack the gentle way first
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Whatever failed above, do not leave servers from this test running on the machine.
        for line in _processes_mentioning(needles):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)


# --- which portal database is closed to PUBLIC ----------------------------------------------------------


@pytest.fixture
def test_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The test PostgreSQL server's connection keywords (from the Django settings), a database name
    nobody uses, and the environment devstack would see without DATABASE_URL; the database is dropped
    afterwards."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    params = {k: str(db[key]) for key, k in (("HOST", "host"), ("PORT", "port"), ("USER", "user"),
                                             ("PASSWORD", "password")) if db.get(key)}  # fmt: skip
    for name in ("DATABASE_URL", "EMBEDDED"):
        monkeypatch.delenv(name, raising=False)
    name = f"gov_t_{secrets.token_hex(6)}"
    password = ":" + urllib.parse.quote(params["password"], safe="") if "password" in params else ""
    auth = params.get("user", "") + password
    server = f"postgres://{auth + '@' if auth else ''}{params.get('host', '127.0.0.1')}:{params.get('port', '5432')}"
    yield {"params": params, "name": name, "server": server}
    admin = psycopg2.connect(f"{server}/postgres", connect_timeout=5)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        admin.close()


def _on_local_server(test_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """devstack, set to find the test server as "a local server on 127.0.0.1:5432" (its login from
    libpq's environment, as a developer's own login would be) with `name` as the portal's database."""
    params = test_server["params"]
    if params.get("host", "127.0.0.1") not in ("127.0.0.1", "localhost") or params.get("port", "5432") != "5432":
        pytest.skip("the test server is not the local server on 127.0.0.1:5432 that devstack looks for")
    for key, variable in (("user", "PGUSER"), ("password", "PGPASSWORD")):
        if key in params:
            monkeypatch.setenv(variable, params[key])
    devstack = _devstack()
    # Patched where provide_postgres looks it up: scripts/devstack_lib/services.py.
    monkeypatch.setattr(devstack.services, "DATABASE_NAME", test_server["name"])
    return devstack


def test_a_portal_database_devstack_creates_on_the_local_server_is_closed_to_public(
    test_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    devstack = _on_local_server(test_server, monkeypatch)
    config = devstack.Config(state_dir=tmp_path, dotenv={})
    service = devstack.provide_postgres(config, None, tmp_path, {}, durable=False)
    assert service.origin == "local server on 127.0.0.1:5432"
    name = test_server["name"]
    assert _public_may_connect(service.url, name) is False  # its creator, the portal's login, still connects
    devstack.provide_postgres(config, None, tmp_path, {}, durable=False)  # the next run: nothing to do
    assert _public_may_connect(service.url, name) is False


def test_a_portal_database_that_was_there_before_is_left_as_it_was(
    test_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    devstack = _on_local_server(test_server, monkeypatch)
    name = test_server["name"]
    admin = psycopg2.connect(f"{test_server['server']}/postgres", connect_timeout=5)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))  # a developer's own
    finally:
        admin.close()
    config = devstack.Config(state_dir=tmp_path, dotenv={})
    service = devstack.provide_postgres(config, None, tmp_path, {}, durable=False)
    assert _public_may_connect(service.url, name) is True


def test_a_database_named_by_database_url_keeps_its_privileges_even_when_devstack_creates_it(
    test_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    name = test_server["name"]
    url = f"{test_server['server']}/{name}"
    monkeypatch.setenv("DATABASE_URL", url)
    devstack = _devstack()
    config = devstack.Config(state_dir=tmp_path, dotenv={})
    service = devstack.provide_postgres(config, None, tmp_path, {}, durable=False)
    assert service.origin == "from DATABASE_URL"
    assert _public_may_connect(url, name) is True  # created because it was missing, but the user's


def test_devstack_env_without_a_running_stack_says_so_in_one_line(tmp_path: Path) -> None:
    """`eval "$(devstack.py env)"` in a shell where no `make run` runs: nothing to eval, one line on
    stderr, exit 1 (the stack's exports, printed while it runs, are used by tests/docs)."""
    env = {**os.environ, "DEVSTACK_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "devstack.py"), "env"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    shown = tmp_path.relative_to(ROOT) if tmp_path.is_relative_to(ROOT) else tmp_path  # as devstack prints paths
    assert result.stderr == f"devstack: error: no `make run` is running on {shown}; start it first\n"
