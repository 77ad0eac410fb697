"""REST API throughput: the dataset list, the access-request list and creating requests, under wrk
(16 connections), against plain DRF views over the same queries in the same run.

The app runs under gunicorn (2 workers: the machine's cores) on the test database with a catalog of
200 datasets and 500 access requests. Ours: token authentication, scopes, the visibility selectors,
throttling in Redis, filters, the audit context; creating also runs the policy, the duplicate check
and the audit event. The floor (bench/urls.py): plain DRF views with the same querysets, serializers
and page size, and a create calling the same submit service with the requester posted by id.
Target ≥ 0.5x the floor's requests/s.

Run with `make bench` (which installs wrk when missing); writes bench/results/api.json.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from accounts.models import User
from accounts.roles import REQUESTERS, SECURITY_OFFICERS
from accounts.tokens import api_token_create
from bench.sizes import seconds, size
from governance.models import AccessLevel, AccessRequest, Classification, Dataset, DataSource, RequestState

DURATION = f"{seconds(5, 1, 'BENCH_API_SECONDS'):g}"
CONNECTIONS = size(16, 4)
TARGET_RATIO = 0.5
DATASETS = size(200, 20)
REQUESTS = size(500, 50)
USERS = size(50, 5)
RESULTS = Path(__file__).resolve().parent / "results"
UNUSABLE = "!"  # an unusable password hash: these users never sign in
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.django_db(transaction=True)

CREATE_LUA = """
local tokens = {%(tokens)s}
local first, count = %(first)d, %(count)d
local n = 0
local threads = {}
tid = 0  -- set per thread by setup()
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  n = 0
end
function request()
  n = n + 1
  -- Every call a different (requester, dataset, level): no call is refused as a duplicate.
  local k = tid + %(threads)d * n
  local user = (k %% #tokens) + 1
  local ds = first + (math.floor(k / #tokens) %% count)
  local level = ({"read", "write", "admin"})[(math.floor(k / (#tokens * count)) %% 3) + 1]
  local body = string.format('{"dataset": %%d, "level": "%%s", "duration_days": 3, "justification": "bench"%%s}',
                             ds, level, %(extra)s)
  local headers = {["Content-Type"] = "application/json"}
  %(auth)s
  return wrk.format("POST", "%(path)s", headers, body)
end
local shown = false
function response(status, headers, body)
  if status >= 300 and not shown then
    shown = true
    io.stderr:write(status .. " " .. body .. "\\n")
  end
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        pytest.fail("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    return found


@pytest.fixture
def catalog(classifications: dict[str, Classification]) -> dict[str, Any]:
    source = DataSource.objects.create(name="bench_api", host="127.0.0.1", database="x", provisioning_enabled=False)
    owner = User.objects.create_user("bench_owner", password="x" * 16)
    Dataset.objects.bulk_create(
        [
            Dataset(
                source=source,
                schema=f"s{i % 5}",
                name=f"t{i:03d}",
                classification=classifications["internal"],
                declared_classification=classifications["internal"],
                owner=owner,
            )
            for i in range(DATASETS)
        ]
    )
    datasets = list(Dataset.objects.filter(source=source).order_by("pk"))
    users = User.objects.bulk_create([User(username=f"bench_u{i:02d}", password=UNUSABLE) for i in range(USERS)])
    from django.contrib.auth.models import Group

    requesters = Group.objects.get(name=REQUESTERS)
    for user in users:
        user.groups.add(requesters)
    now = timezone.now()
    AccessRequest.objects.bulk_create(
        [
            AccessRequest(
                requester=users[i % USERS],
                grantee_user=users[i % USERS],
                dataset=datasets[i % DATASETS],
                level=AccessLevel.READ,
                justification="bench",
                duration=dt.timedelta(days=3),
                state=RequestState.DENIED,
                decided_at=now,
            )
            for i in range(REQUESTS)
        ]
    )
    # The floor's requesters: others, so that its requests never duplicate ours.
    floor_users = User.objects.bulk_create([User(username=f"bench_f{i:02d}", password=UNUSABLE) for i in range(USERS)])
    officer = User.objects.create_user("bench_officer", password="x" * 16)
    officer.groups.add(Group.objects.get(name=SECURITY_OFFICERS))
    return {
        "first": datasets[0].pk,
        "officer_token": api_token_create(user=officer, scopes="read").secret,
        "user_tokens": [api_token_create(user=u, scopes="read,request").secret for u in users],
        "user_ids": [u.pk for u in floor_users],
    }


@pytest.fixture
def server() -> Iterator[str]:
    port = free_port()
    db = settings.DATABASES["default"]
    user = db.get("USER") or ""
    auth = f"{user}:{db['PASSWORD']}@" if db.get("PASSWORD") else (f"{user}@" if user else "")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "API_THROTTLE_RATE": "1000000/min",  # measure the throttle's cost, not its limit
    }
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi",
        "-w",
        "2",
        "-b",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True)  # noqa: S603
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1)  # noqa: S310 - loopback
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("gunicorn did not start")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def run_wrk(url: str, *, header: str = "", script: Path | None = None) -> dict[str, float]:
    argv = [wrk_binary(), "-t", "2", "-c", str(CONNECTIONS), "-d", f"{DURATION}s", "--latency"]
    if header:
        argv += ["-H", header]
    if script is not None:
        argv += ["-s", str(script)]
    done = subprocess.run([*argv, url], capture_output=True, text=True, check=True, timeout=120)  # noqa: S603
    out = done.stdout
    if done.stderr.strip():
        print(f"wrk {url}: first failure: {done.stderr.strip()[:300]}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99_text = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99_text, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99_text.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p99_ms": float(p99_text.group(1)) * scale, "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def create_script(tmp: Path, name: str, *, path: str, tokens: list[str], user_ids: list[int], first: int) -> Path:
    if tokens:
        auth = 'headers["Authorization"] = "Bearer " .. tokens[user]'
        extra = '""'
        token_list = ", ".join(f'"{t}"' for t in tokens)
    else:  # the floor posts the requester itself
        auth = ""
        token_list = ", ".join(str(u) for u in user_ids)
        extra = "string.format(', \"requester\": %d', tokens[user])"
    script = tmp / f"{name}.lua"
    script.write_text(
        CREATE_LUA
        % {
            "tokens": token_list,
            "first": first,
            "count": DATASETS,
            "threads": 2,
            "extra": extra,
            "auth": auth,
            "path": path,
        }
    )
    return script


def test_api_throughput_against_plain_drf(catalog: dict[str, Any], server: str, tmp_path: Path) -> None:
    probe = urllib.request.Request(  # noqa: S310 - loopback http
        f"{server}/api/v1/access-requests/",
        data=json.dumps(
            {"dataset": catalog["first"], "level": "admin", "duration_days": 3, "justification": "probe"}
        ).encode(),
        headers={"Authorization": f"Bearer {catalog['user_tokens'][0]}", "Content-Type": "application/json"},
    )
    try:
        urllib.request.urlopen(probe, timeout=10)  # noqa: S310 - loopback
    except urllib.error.HTTPError as exc:
        pytest.fail(f"creating a request through the API fails: {exc.code} {exc.read().decode()}")
    officer = f"Authorization: Bearer {catalog['officer_token']}"
    results: dict[str, dict[str, Any]] = {}
    pairs = {
        "dataset list": (f"{server}/api/v1/datasets/", f"{server}/bench/plain/datasets/"),
        "access-request list": (f"{server}/api/v1/access-requests/", f"{server}/bench/plain/access-requests/"),
    }
    for name, (ours_url, floor_url) in pairs.items():
        floor = run_wrk(floor_url)
        ours = run_wrk(ours_url, header=officer)
        results[name] = {"ours": ours, "floor": floor, "ratio": ours["rps"] / floor["rps"]}
    ours_script = create_script(
        tmp_path,
        "ours",
        path="/api/v1/access-requests/",
        tokens=catalog["user_tokens"],
        user_ids=[],
        first=catalog["first"],
    )
    floor_script = create_script(
        tmp_path, "floor", path="/bench/plain/create/", tokens=[], user_ids=catalog["user_ids"], first=catalog["first"]
    )
    floor = run_wrk(f"{server}/bench/plain/create/", script=floor_script)
    ours = run_wrk(f"{server}/api/v1/access-requests/", script=ours_script)
    results["create request"] = {"ours": ours, "floor": floor, "ratio": ours["rps"] / floor["rps"]}

    for name, r in results.items():
        assert r["ours"]["non_2xx"] == 0 and r["floor"]["non_2xx"] == 0, (name, r)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "api.json").write_text(
        json.dumps({"connections": CONNECTIONS, "seconds": DURATION, "gunicorn_workers": 2, **results}, indent=2)
    )
    print()
    for name, r in results.items():
        print(
            f"API {name}: {r['ours']['rps']:.0f} req/s, p99 {r['ours']['p99_ms']:.1f} ms; "
            f"plain DRF {r['floor']['rps']:.0f} req/s, p99 {r['floor']['p99_ms']:.1f} ms; "
            f"ratio = {r['ratio']:.2f} (target ≥ {TARGET_RATIO})"
        )
