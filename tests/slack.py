"""A local Slack for the tests: a real HTTP server (on a free port of 127.0.0.1, in a thread of the
test process) that answers as Slack's Web API, incoming webhooks and response URLs do, and checks
the shape of what the portal sends:

- `POST /api/chat.postMessage`: `Authorization: Bearer <token>`, a JSON body with `channel`, a
  `text` fallback and Block Kit `blocks`; answers `{"ok": true, ...}` (or what `fail_next` says);
- `POST /hooks/<name>` (an incoming webhook): JSON with `text` and `blocks`; answers `ok`;
- `POST /response/<name>` (a message's response_url): JSON; answers `ok`.

A request of the wrong shape is answered as Slack would (`invalid_payload`, `not_authed`) and listed
in `problems`, which the tests assert empty. Plus `signed()`: a request body signed as Slack signs
its requests to the portal (the interactivity endpoint, the slash command)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

from tests.processes import free_port

BOT_TOKEN = "xoxb-test-bot-token"
SIGNING_SECRET = "test-signing-secret"


@dataclass
class Posted:
    path: str
    headers: dict[str, str]
    body: Any

    @property
    def kind(self) -> str:
        return self.path.split("/")[1]  # api, hooks, response

    def button_values(self) -> dict[str, str]:
        return {
            e["action_id"]: e.get("value", e.get("url", ""))
            for b in self.body.get("blocks", [])
            if b.get("type") == "actions"
            for e in b["elements"]
        }


def _blocks_ok(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and isinstance(body.get("text"), str)
        and bool(body["text"])
        and isinstance(body.get("blocks"), list)
        and all(isinstance(b, dict) and "type" in b for b in body["blocks"])
    )


class SlackReceiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.posted: list[Posted] = []
        self.problems: list[str] = []
        self.failures: list[tuple[int, Any]] = []  # (status, body) for the next requests
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = receiver._handle(self.path, dict(self.headers), raw)
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if not isinstance(answer, bytes) else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)

    def _handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        try:
            body = json.loads(raw)
        except ValueError:
            self._problem(f"{path}: not JSON")
            return 400, b"invalid_payload"
        if not headers.get("Content-Type", "").startswith("application/json"):
            self._problem(f"{path}: Content-Type {headers.get('Content-Type')!r}")
        with self.lock:
            self.posted.append(Posted(path, headers, body))
            failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            return failure
        if path == "/api/chat.postMessage":
            if headers.get("Authorization") != f"Bearer {BOT_TOKEN}":
                self._problem(f"{path}: Authorization {headers.get('Authorization')!r}")
                return 200, {"ok": False, "error": "not_authed"}
            if not isinstance(body.get("channel"), str) or not body["channel"] or not _blocks_ok(body):
                self._problem(f"{path}: shape {body!r}")
                return 200, {"ok": False, "error": "invalid_blocks"}
            return 200, {"ok": True, "channel": body["channel"], "ts": f"{time.time():.6f}"}
        if path.startswith("/hooks/"):
            if not _blocks_ok(body) or "Authorization" in headers:
                self._problem(f"{path}: shape {body!r}")
                return 400, b"invalid_payload"
            return 200, b"ok"
        if path.startswith("/response/"):
            if not isinstance(body.get("text"), str):
                self._problem(f"{path}: shape {body!r}")
                return 400, b"invalid_payload"
            return 200, b"ok"
        self._problem(f"unknown path {path}")
        return 404, b"no_service"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def clear(self) -> None:
        with self.lock:
            self.posted.clear()
            self.problems.clear()
            self.failures.clear()

    def fail_next(self, status: int, body: Any) -> None:
        with self.lock:
            self.failures.append((status, body))

    def to(self, path: str) -> list[Posted]:
        with self.lock:
            return [p for p in self.posted if p.path == path]

    def wait_for(self, path: str, count: int = 1, timeout: float = 30) -> list[Posted]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.to(path)
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"expected {count} post(s) to {path}, got {len(self.to(path))}")


def sign(body: bytes, timestamp: int | None = None, secret: str = SIGNING_SECRET) -> dict[str, str]:
    """The headers Slack sends with a request to the portal: X-Slack-Request-Timestamp and
    X-Slack-Signature = v0= + HMAC-SHA256("v0:{timestamp}:{body}") under the signing secret."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"HTTP_X_SLACK_REQUEST_TIMESTAMP": ts, "HTTP_X_SLACK_SIGNATURE": f"v0={digest}"}


def form_body(fields: dict[str, str]) -> bytes:
    return urlencode(fields).encode()


_receiver: SlackReceiver | None = None


def start() -> SlackReceiver:
    global _receiver
    if _receiver is None:
        _receiver = SlackReceiver()
        _receiver.start()
    return _receiver


def current() -> SlackReceiver | None:
    return _receiver


def stop() -> None:
    global _receiver
    if _receiver is not None:
        _receiver.stop()
        _receiver = None


def env() -> dict[str, str]:
    """The settings a worker process needs to post to this receiver (none when it is not running)."""
    if _receiver is None:
        return {}
    return {
        "SLACK_API_URL": f"{_receiver.url}/api",
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_HOOKS_URL_PREFIX": f"{_receiver.url}/",
    }
