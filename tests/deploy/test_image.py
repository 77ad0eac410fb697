"""The production image's commands, run outside a container (there is no container engine here).

`docker/entrypoint.sh` is the image's ENTRYPOINT; these tests run it as the image would, from the
checkout with the virtualenv on PATH: `collectstatic` as the Dockerfile's build step does, `web`
(gunicorn with config/gunicorn.conf.py and production settings) on a free port, the image's
HEALTHCHECK, and `migrate`. What a user and a probe would see is asserted over HTTP: the sign-in page
and its stylesheet (WhiteNoise), the health path over plain HTTP with a pod's IP as Host, and the
HTTPS redirect and host check still in force everywhere else.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.db import connection

from tests.processes import Output, free_port

ROOT = Path(__file__).resolve().parent.parent.parent
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
HOST = "portal.example.com"
POD_IP = "10.1.2.3"
START_TIMEOUT = 90

# The mark makes pytest-django create the test database (it creates only what collected tests ask
# for); the tests themselves query nothing: the processes they start use that database.
pytestmark = pytest.mark.django_db


def _database_url() -> str:
    db = connection.settings_dict
    # Never a developer's database: `migrate` below would write to it.
    assert db["NAME"].startswith("test_"), f"not a test database: {db['NAME']}"
    user = urllib.parse.quote(db.get("USER") or "", safe="")
    password = urllib.parse.quote(db.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


@pytest.fixture(scope="module")
def production_env(tmp_path_factory: pytest.TempPathFactory, django_db_setup: Any) -> dict[str, str]:
    """The environment a container of the image would have: production settings (the entrypoint's
    default: DJANGO_SETTINGS_MODULE is not set), secrets from NAME_FILE files as compose and
    Kubernetes mount them (with the final newline an editor leaves), the test database and Redis."""
    tmp_path = tmp_path_factory.mktemp("image")
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "secret_key").write_text(Fernet.generate_key().decode() * 2 + "\n")
    (secrets_dir / "allowed_hosts").write_text(f"{HOST}\n")
    (tmp_path / "run").mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "PYTEST_"))}
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHON": sys.executable,
            "SECRET_KEY_FILE": str(secrets_dir / "secret_key"),
            "ALLOWED_HOSTS_FILE": str(secrets_dir / "allowed_hosts"),
            "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "DATABASE_URL": _database_url(),
            "REDIS_URL": settings.CELERY_BROKER_URL,
            "PORTAL_URL": f"https://{HOST}",
            "STATIC_ROOT": str(tmp_path / "staticfiles"),
            "PORTAL_RUN_DIR": str(tmp_path / "run"),
            "GUNICORN_WORKERS": "1",
            "GUNICORN_THREADS": "2",
        }
    )
    return env


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ENTRYPOINT), *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str


def _get(port: int, path: str, host: str, *, https_proxy: bool = False) -> Answer:
    """One GET as a probe or a TLS proxy would send it (no redirect followed)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Host": host}
    if https_proxy:
        headers["X-Forwarded-Proto"] = "https"  # what the TLS proxy in front of the pod sets
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read().decode(errors="replace")
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        connection.close()


@dataclass
class Web:
    port: int
    output: Output


@pytest.fixture(scope="module")
def web(production_env: dict[str, str]) -> Iterator[Web]:
    """`entrypoint.sh collectstatic` (the image's build step), then `entrypoint.sh web` on a free port."""
    collected = _run(["collectstatic", "-v0"], production_env)
    assert collected.returncode == 0, collected.stderr
    port = free_port()
    env = {**production_env, "PORT": str(port), "GUNICORN_BIND": f"127.0.0.1:{port}"}
    proc = subprocess.Popen(
        [str(ENTRYPOINT), "web"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    output = Output(proc.stdout)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            if _get(port, "/healthz", "127.0.0.1").status == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"`entrypoint.sh web` did not come up:\n{output.tail()}")
        time.sleep(0.2)
    try:
        yield Web(port, output)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_web_serves_the_sign_in_page_and_its_stylesheet_under_production_settings(web: Web) -> None:
    # gunicorn itself (exec'd by the entrypoint) with the image's config file: threads, no DEBUG page.
    assert web.output.contains("Using worker: gthread"), web.output.tail()
    page = _get(web.port, "/accounts/login/", HOST, https_proxy=True)
    assert page.status == 200, page.body[:500]
    assert "<h1>Sign in</h1>" in page.body
    stylesheet = re.search(r'href="(/static/portal/portal\.[0-9a-f]{12}\.css)"', page.body)
    assert stylesheet, "the page links the stylesheet by its hashed name (collectstatic's manifest)"

    css = _get(web.port, stylesheet.group(1), HOST, https_proxy=True)
    assert css.status == 200
    assert css.headers["content-type"].startswith("text/css")
    assert "immutable" in css.headers["cache-control"]  # WhiteNoise: hashed names are cached forever
    assert len(css.body) > 100


def test_health_answers_over_plain_http_with_a_pod_ip_as_host(web: Web) -> None:
    for host in (POD_IP, HOST, f"{POD_IP}:8000"):
        health = _get(web.port, "/healthz", host)
        assert (health.status, health.body) == (200, "ok"), host


def test_everything_else_keeps_the_https_redirect_and_the_host_check(web: Web) -> None:
    plain = _get(web.port, "/accounts/login/", HOST)
    assert plain.status == 301
    assert plain.headers["location"] == f"https://{HOST}/accounts/login/"

    assert _get(web.port, "/accounts/login/", POD_IP, https_proxy=True).status == 400
    assert _get(web.port, "/accounts/login/", POD_IP).status == 400
    # A look-alike of the health path is not exempt.
    assert _get(web.port, "/healthz/", POD_IP).status == 400


def test_the_image_healthcheck_probes_the_web_server(web: Web, production_env: dict[str, str]) -> None:
    env = {**production_env, "PORT": str(web.port)}
    healthy = _run(["healthcheck"], env)
    assert healthy.returncode == 0, healthy.stderr

    unanswered = _run(["healthcheck"], {**env, "PORT": str(free_port())})
    assert unanswered.returncode != 0


def test_healthcheck_fails_where_no_process_was_started(production_env: dict[str, str], tmp_path: Path) -> None:
    result = _run(["healthcheck"], {**production_env, "PORTAL_RUN_DIR": str(tmp_path)})
    assert result.returncode == 1
    assert "no web, worker or beat process" in result.stderr


def test_migrate_is_a_one_shot_command(production_env: dict[str, str]) -> None:
    result = _run(["migrate"], production_env)
    assert result.returncode == 0, result.stderr
    assert "No migrations to apply." in result.stdout
