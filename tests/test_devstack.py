"""`make run` on a machine with only Python: the whole stack comes up, serves the admin, and goes away.

This starts `scripts/devstack.py run` for real with EMBEDDED=1 (PostgreSQL and Redis from the wheels),
in a temporary state directory, then signs in to the admin as the demo admin and stops it with SIGINT
as Ctrl-C would. It needs no Django test database: it talks to the stack over HTTP only.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 180
STOP_TIMEOUT = 60

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="checks for orphan processes through /proc")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Output:
    """Collects a child's output in a thread: a full pipe would block the stack we are testing."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.lines.append(raw.decode(errors="replace"))

    def contains(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def tail(self, count: int = 60) -> str:
        return "".join(self.lines[-count:])


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
    port = _free_port()
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
    output = _Output(proc.stdout)
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
        assert output.contains(f"anchors of the trail's head in {anchors_file}"), output.tail()
        deadline = time.monotonic() + 90
        while not (anchors_file.exists() and anchors_file.read_text().endswith("\n")):
            assert time.monotonic() < deadline, f"no anchor in {anchors_file} after 90 s:\n{output.tail()}"
            time.sleep(0.5)
        anchor = json.loads(anchors_file.read_text().splitlines()[-1])
        assert anchor["v"] == 2 and anchor["seq"] > 0 and len(anchor["signature"]) == 64, anchor

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
