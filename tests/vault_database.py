"""A stand-in for HashiCorp Vault's database secrets engine, over real HTTP, making real logins.

No Vault server can be installed from this machine's package registries (PyPI, Debian, npm), so the
tests talk to this instead: a `ThreadingHTTPServer` on 127.0.0.1 in a thread, answering the calls
the portal makes through hvac (the real client) the way Vault's API documents them:

- `GET /v1/{mount}/creds/{role}` — "Generate credentials"
  (https://developer.hashicorp.com/vault/api-docs/secret/databases#generate-credentials): runs the
  role's creation statements on the target with `{{name}}`, `{{password}}` and `{{expiration}}`
  substituted, as the PostgreSQL plugin does
  (https://developer.hashicorp.com/vault/docs/secrets/databases/postgresql), and answers
  `lease_id` (`{mount}/creds/{role}/{id}`), `lease_duration` (the role's default TTL),
  `renewable`, `data.username`, `data.password`;
- `PUT /v1/sys/leases/renew` — "Renew lease"
  (https://developer.hashicorp.com/vault/api-docs/system/leases#renew-lease): extends the lease by
  `increment` (else the default TTL), never past the role's max TTL counted from issue; an unknown
  or expired lease is a 400 `{"errors": ["lease not found"]}`;
- `PUT /v1/sys/leases/revoke` — "Revoke lease"
  (https://developer.hashicorp.com/vault/api-docs/system/leases#revoke-lease): runs the revocation
  statements (end the login's sessions, DROP ROLE); 204.

A lease not renewed by its TTL is revoked by the stand-in itself (a timer per lease), as Vault
expires leases (https://developer.hashicorp.com/vault/docs/concepts/lease). Every request needs the
`X-Vault-Token` header; without the right one the answer is Vault's 403 `{"errors": ["permission
denied"]}`. `denied` makes every request a 403 (a revoked token, a policy that lost the path).

The statements run as the target cluster's superuser (Vault's own privileged connection), in the
target database. The tests read what happened from `calls` and wait on `event(...)`, never on time.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests import tls_target

# What the portal's docs/security.md asks the Vault role to run: the new login is a member of the
# least-privileged portal role (INHERIT: its privileges) and acts as it (its sessions SET ROLE to
# it: role attributes such as CREATEROLE are not inherited, and what it creates is the portal
# role's, not a login that Vault will drop).
CREATION = [
    """CREATE ROLE "{{name}}" WITH LOGIN INHERIT PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'""",
    'GRANT "portal_provisioner" TO "{{name}}"',
    """ALTER ROLE "{{name}}" SET role = 'portal_provisioner'""",
]
# Vault's PostgreSQL plugin moves VALID UNTIL on renewal (its default renew statement).
RENEWAL = ["""ALTER ROLE "{{name}}" VALID UNTIL '{{expiration}}'"""]
REVOCATION = [
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}'",
    'DROP ROLE IF EXISTS "{{name}}"',
]


def _expiration(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


@dataclass
class Role:
    dbname: str
    creation_statements: list[str] = field(default_factory=lambda: list(CREATION))
    renew_statements: list[str] = field(default_factory=lambda: list(RENEWAL))
    revocation_statements: list[str] = field(default_factory=lambda: list(REVOCATION))
    default_ttl: float = 60.0
    max_ttl: float = 300.0


@dataclass
class Lease:
    lease_id: str
    role: Role
    username: str
    issued: float
    expires: float
    timer: threading.Timer | None = None


class VaultDatabase:
    """The engine's state: roles by mount/name, live leases, the calls received."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.url = ""
        self.offset = 0.0  # how far the tests moved the clock on (advance())
        self.password_prefix = "A1a-"
        self.denied = False
        self.roles: dict[str, Role] = {}  # "mount/role" -> Role
        self.leases: dict[str, Lease] = {}
        self.calls: list[tuple[str, str]] = []  # (operation, lease_id or role path)
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)

    # --- what the tests look at -------------------------------------------------------------

    def count(self, operation: str) -> int:
        with self._lock:
            return sum(1 for op, _ in self.calls if op == operation)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
        """Wait until `predicate()` holds (each call is re-checked); False after `timeout`."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def clock(self) -> float:
        """The stand-in's time: the real monotonic clock, moved on by advance()."""
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        """Move time on by `seconds` without waiting: every lease whose TTL has run out by then is
        expired (revoked, as the timers would have), the others' timers re-armed."""
        with self._lock:
            self.offset += seconds
            leases = list(self.leases.values())
        for lease in leases:
            if lease.expires <= self.clock():
                self._revoke(lease.lease_id, "expired")
            else:
                with self._lock:
                    self._arm(lease)

    # --- the engine -------------------------------------------------------------------------

    def _record(self, operation: str, subject: str) -> None:
        with self._changed:
            self.calls.append((operation, subject))
            self._changed.notify_all()

    def _run(self, role: Role, statements: list[str], values: dict[str, str]) -> None:
        conn = tls_target.current().superuser(role.dbname)
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    for key, value in values.items():
                        statement = statement.replace("{{" + key + "}}", value)
                    cur.execute(statement)
        finally:
            conn.close()

    def generate(self, path: str) -> dict[str, Any]:
        role = self.roles[path]
        now = self.clock()
        # Vault's default PostgreSQL username template: v-<display>-<role>-<random 20>-<unix time>.
        username = f"v-token-{path.rsplit('/', 1)[1][:8]}-{secrets.token_hex(10)}-{int(time.time())}"[:63]
        password = self.password_prefix + secrets.token_urlsafe(15)
        self._run(
            role,
            role.creation_statements,
            {"name": username, "password": password, "expiration": _expiration(role.default_ttl)},
        )
        mount, name = path.rsplit("/", 1)
        lease = Lease(f"{mount}/creds/{name}/{secrets.token_hex(12)}", role, username, now, now + role.default_ttl)
        with self._lock:
            self.leases[lease.lease_id] = lease
            self._arm(lease)
        self._record("creds", lease.lease_id)
        return {
            "request_id": secrets.token_hex(8),
            "lease_id": lease.lease_id,
            "lease_duration": int(role.default_ttl),
            "renewable": True,
            "data": {"username": username, "password": password},
            "warnings": None,
        }

    def _arm(self, lease: Lease) -> None:
        if lease.timer is not None:
            lease.timer.cancel()
        lease.timer = threading.Timer(max(0.0, lease.expires - self.clock()), self._revoke, (lease.lease_id, "expired"))
        lease.timer.daemon = True
        lease.timer.start()

    def renew(self, lease_id: str, increment: float | None) -> dict[str, Any] | None:
        with self._lock:
            lease = self.leases.get(lease_id)
            now = self.clock()
            if lease is None or lease.expires <= now:
                return None
            cap = lease.issued + lease.role.max_ttl
            lease.expires = min(now + (increment or lease.role.default_ttl), cap)
            self._arm(lease)
            duration = int(lease.expires - now)
        self._run(
            lease.role, lease.role.renew_statements, {"name": lease.username, "expiration": _expiration(duration)}
        )
        self._record("renew", lease_id)
        return {"lease_id": lease_id, "lease_duration": duration, "renewable": True, "data": None}

    def _revoke(self, lease_id: str, why: str) -> None:
        with self._lock:
            lease = self.leases.pop(lease_id, None)
            if lease is None:
                return
            if lease.timer is not None:
                lease.timer.cancel()
        self._run(lease.role, lease.role.revocation_statements, {"name": lease.username})
        self._record(why, lease_id)

    def username_of(self, lease_id: str) -> str:
        with self._lock:
            return self.leases[lease_id].username

    def revoke_all(self) -> None:
        for lease_id in list(self.leases):
            self._revoke(lease_id, "revoked")


def _handler(vault: VaultDatabase) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _authorised(self) -> bool:
            if vault.denied or self.headers.get("X-Vault-Token") != vault.token:
                self._answer(403, {"errors": ["permission denied"]})
                return False
            return True

        def do_GET(self) -> None:
            if not self._authorised():
                return
            parts = self.path.split("?")[0].strip("/").split("/")
            # v1 / <mount> / creds / <role>
            if len(parts) == 4 and parts[0] == "v1" and parts[2] == "creds" and f"{parts[1]}/{parts[3]}" in vault.roles:
                return self._answer(200, vault.generate(f"{parts[1]}/{parts[3]}"))
            return self._answer(404, {"errors": []})

        def do_PUT(self) -> None:
            if not self._authorised():
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                return self._answer(400, {"errors": ["failed to parse JSON input"]})
            path = self.path.split("?")[0]
            lease_id = str(body.get("lease_id") or "")
            if path == "/v1/sys/leases/renew":
                renewed = vault.renew(lease_id, body.get("increment"))
                if renewed is None:
                    return self._answer(400, {"errors": ["lease not found"]})
                return self._answer(200, renewed)
            if path == "/v1/sys/leases/revoke":
                vault._revoke(lease_id, "revoked")
                return self._answer(204, None)
            return self._answer(404, {"errors": []})

        def _answer(self, status: int, body: Any) -> None:
            raw = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            if raw:
                self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def serve() -> Generator[VaultDatabase, None, None]:
    """The stand-in on a free port of 127.0.0.1 until the generator is closed; leases still live
    then are revoked (their logins dropped), as a test's Vault going away would leave nothing."""
    vault = VaultDatabase(secrets.token_hex(16))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(vault))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    vault.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield vault
    finally:
        server.shutdown()
        server.server_close()
        vault.revoke_all()
