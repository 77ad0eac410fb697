"""Management commands print their result on standard output and nothing else; logs, and the SIEM
line of every audit event they record, go to standard error (config/settings/base.py). Scripts
capture results: `TOKEN=$(manage.py api_token create ...)` must hold the token only.

Each command runs as a real process (`manage.py ...`) with the development settings, where the SIEM
stream is on, against the test database (committed rows: transactional tests)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from accounts.models import ApiToken
from audit.models import AuditEvent

ROOT = Path(__file__).resolve().parent.parent
TOKEN = re.compile(r"gov_[0-9a-f]+_[A-Za-z0-9_-]+")

pytestmark = pytest.mark.django_db(transaction=True)


def manage(*args: str) -> subprocess.CompletedProcess[str]:
    """`python manage.py ARGS` with the development settings (SIEM stream on) on the test database."""
    db = settings.DATABASES["default"]
    user = db.get("USER") or ""
    auth = f"{user}:{db['PASSWORD']}@" if db.get("PASSWORD") else (f"{user}@" if user else "")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.dev",
        "DATABASE_URL": f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}",
        "REDIS_URL": settings.CELERY_BROKER_URL,
        "FIELD_ENCRYPTION_KEYS": ",".join(settings.FIELD_ENCRYPTION_KEYS),
        "AUDIT_SIEM_LOG_FILE": "",
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def siem_actions(stderr: str) -> list[str]:
    return re.findall(r'"action": "([^"]+)"', stderr)


def test_api_token_create_prints_the_token_only_and_its_audit_line_on_stderr(make_user: Any) -> None:
    make_user("analyst")
    result = manage("api_token", "create", "analyst", "--scopes", "read,request", "--expires-in", "1d")
    assert result.returncode == 0, result.stderr
    assert TOKEN.fullmatch(result.stdout.rstrip("\n")), result.stdout
    assert result.stdout.count("\n") == 1
    assert siem_actions(result.stderr) == ["api_token.created"], result.stderr
    key_id = result.stdout.split("_")[1]
    assert ApiToken.objects.get(key_id=key_id).user.username == "analyst"


def test_api_token_list_and_revoke_print_their_result_only(make_user: Any) -> None:
    make_user("analyst")
    created = manage("api_token", "create", "analyst", "--scopes", "read", "--name", "ci")
    key_id = created.stdout.split("_")[1]

    listing = manage("api_token", "list", "analyst")
    assert listing.returncode == 0, listing.stderr
    (line,) = listing.stdout.splitlines()
    assert line.startswith(f"{key_id}  analyst ") and line.endswith("never used; ci"), line

    revoked = manage("api_token", "revoke", key_id, "--reason", "done")
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout == f"revoked {key_id}\n"
    assert siem_actions(revoked.stderr) == ["api_token.revoked"], revoked.stderr


def test_a_refused_command_says_why_in_one_line_on_stderr_and_prints_nothing(db: Any) -> None:
    result = manage("api_token", "create", "nobody", "--scopes", "read")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip() == "CommandError: No user 'nobody'."


def test_generate_encryption_key_prints_the_key_only() -> None:
    result = manage("generate_encryption_key")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}=\n", result.stdout), result.stdout


def test_expire_stale_requests_prints_the_count_only(make_user: Any) -> None:
    result = manage("expire_stale_requests")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "0 stale request(s) expired.\n"


def test_rotate_encryption_keys_prints_its_summary_and_audits_on_stderr(make_user: Any) -> None:
    result = manage("rotate_encryption_keys")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(
        r"re-encrypted under key \S+: 0 data source password\(s\), 0 temporary login password\(s\), "
        r"0 webhook URL\(s\), 0 pending rotation password\(s\)\. The older keys can now be removed\.\n",
        result.stdout,
    ), result.stdout
    assert siem_actions(result.stderr) == ["encryption_keys.rotated"], result.stderr
    assert AuditEvent.objects.filter(action="encryption_keys.rotated").count() == 1


def test_the_servers_keep_the_siem_stream_on_stdout_and_commands_send_it_to_stderr() -> None:
    """Where the SIEM lines go without AUDIT_SIEM_LOG_FILE (docs/operations.md)."""
    from config.settings.base import _siem_stream

    assert _siem_stream(["manage.py", "api_token", "create"]) == "ext://sys.stderr"
    assert _siem_stream(["/app/manage.py", "reconcile"]) == "ext://sys.stderr"
    assert _siem_stream(["/venv/bin/django-admin", "audit_verify"]) == "ext://sys.stderr"
    assert _siem_stream(["/venv/lib/python3.11/site-packages/django/__main__.py", "seed_demo"]) == "ext://sys.stderr"
    assert _siem_stream(["manage.py", "runserver", "0.0.0.0:8000"]) == "ext://sys.stdout"
    assert _siem_stream(["/venv/bin/celery", "-A", "config", "worker"]) == "ext://sys.stdout"
    assert _siem_stream(["/venv/bin/gunicorn", "config.wsgi"]) == "ext://sys.stdout"
    assert _siem_stream([]) == "ext://sys.stdout"
