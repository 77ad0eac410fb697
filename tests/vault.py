"""A stand-in for HashiCorp Vault's HTTP API, for tests: a real HTTP server on 127.0.0.1 that hvac,
the portal's real client, talks to.

No Vault server can be installed on the machine these tests were written on (it is not in PyPI,
Debian or npm), so this serves the calls the portal makes, in the shapes Vault's API documents:

- KV version 2 (developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2): `GET/POST
  /v1/{mount}/data/{path}` (versions; `options.cas` check-and-set, 400 "check-and-set parameter did
  not match the current version"), `GET /v1/{mount}/metadata/{path}` (updated_time);
- Transit (developer.hashicorp.com/vault/api-docs/secret/transit): `POST datakey/{plaintext|wrapped}/NAME`,
  `decrypt/NAME`, `rewrap/NAME`, `keys/NAME/rotate`, `keys/NAME/config` (min_decryption_version),
  `GET keys/NAME` (latest_version, min_decryption_version). Each key version is a real AES-256-GCM
  key; ciphertexts are `vault:v{N}:` + base64(nonce || ciphertext || tag), as Vault's
  aes256-gcm96 keys produce them; a version below min_decryption_version is refused as Vault does.

Every request needs `X-Vault-Token` (else 403 with Vault's error body); `deny(prefix, method)` makes
the token's policy refuse a path (403), as an ACL without that capability would; `race(path, data)`
lands another client's KV write just before the portal's next one (to prove check-and-set). Vault's errors are
`{"errors": [...]}` with the status codes hvac maps to its exceptions. What this does not prove:
Vault's own behaviour beyond these documented answers (seal, leases, namespaces, auth methods).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DENIED = "1 error occurred:\n\t* permission denied\n\n"


class VaultError(Exception):
    def __init__(self, status: int, *errors: str) -> None:
        super().__init__(status, errors)
        self.status, self.errors = status, list(errors)


@dataclass
class TransitKey:
    versions: dict[int, bytes] = field(default_factory=lambda: {1: AESGCM.generate_key(bit_length=256)})
    created: dict[int, int] = field(default_factory=lambda: {1: _unix()})
    min_decryption_version: int = 1

    @property
    def latest(self) -> int:
        return max(self.versions)

    def encrypt(self, plaintext: bytes, version: int = 0) -> tuple[str, int]:
        version = version or self.latest
        if version not in self.versions:
            raise VaultError(400, "invalid key version")
        nonce = os.urandom(12)
        sealed = AESGCM(self.versions[version]).encrypt(nonce, plaintext, None)
        return f"vault:v{version}:" + base64.b64encode(nonce + sealed).decode(), version

    def decrypt(self, ciphertext: str) -> bytes:
        try:
            tag, version_text, body = ciphertext.split(":", 2)
            version = int(version_text.removeprefix("v"))
            raw = base64.b64decode(body, validate=True)
        except ValueError:
            raise VaultError(400, "invalid ciphertext: no prefix") from None
        if tag != "vault" or version not in self.versions:
            raise VaultError(400, "invalid key version")
        if version < self.min_decryption_version:
            raise VaultError(400, "ciphertext or signature version is disallowed by policy (too old)")
        try:
            return AESGCM(self.versions[version]).decrypt(raw[:12], raw[12:], None)
        except InvalidTag:
            raise VaultError(400, "cipher: message authentication failed") from None


def _unix() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp())


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Vault:
    url: str = ""
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    kv: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # "mount/path" -> versions
    keys: dict[str, TransitKey] = field(default_factory=dict)  # transit key name -> key
    denied: set[tuple[str, str]] = field(default_factory=set)  # (method or "*", path prefix after /v1/)
    racing: dict[str, dict[str, Any]] = field(default_factory=dict)  # "mount/path" -> another writer's data
    calls: list[str] = field(default_factory=list)  # "POST transit/decrypt/NAME", ...
    lock: threading.Lock = field(default_factory=threading.Lock)

    # --- set-up helpers for tests (an operator's `vault write`, outside the portal) ---------------
    def create_key(self, name: str) -> TransitKey:
        self.keys[name] = TransitKey()
        return self.keys[name]

    def put(self, path: str, data: dict[str, Any], *, mount: str = "secret") -> int:
        return self._kv_write(f"{mount}/{path}", {"data": data})["version"]

    def latest(self, path: str, *, mount: str = "secret") -> dict[str, Any]:
        return dict(self.kv[f"{mount}/{path}"][-1]["data"])

    def deny(self, prefix: str, method: str = "*") -> None:
        """The token's policy no longer allows `method` (every one: "*") on paths under `prefix`."""
        self.denied.add((method, prefix))

    def race(self, path: str, data: dict[str, Any], *, mount: str = "secret") -> None:
        """Another client writes `data` to the KV secret just before the next write to it lands."""
        self.racing[f"{mount}/{path}"] = data

    # --- the API ------------------------------------------------------------------------------------
    def handle(self, method: str, path: str, token: str, body: dict[str, Any]) -> tuple[int, Any]:
        if not path.startswith("/v1/"):
            return 404, {"errors": []}
        path = path[len("/v1/") :].split("?")[0].strip("/")
        if token != self.token or any(m in ("*", method) and path.startswith(p) for m, p in self.denied):
            return 403, {"errors": [DENIED]}
        self.calls.append(f"{method} {path}")
        parts = path.split("/")
        try:
            with self.lock:
                if parts[0] == "transit":
                    return self._transit(method, parts[1:], body)
                if len(parts) > 2 and parts[1] in ("data", "metadata"):
                    return self._kv(method, parts[1], f"{parts[0]}/{'/'.join(parts[2:])}", body)
        except VaultError as exc:
            return exc.status, {"errors": exc.errors}
        return 404, {"errors": [f"no handler for route '{path}'. route entry not found."]}

    def _kv(self, method: str, kind: str, key: str, body: dict[str, Any]) -> tuple[int, Any]:
        versions = self.kv.get(key)
        if method == "POST" and kind == "data":
            if key in self.racing:
                self._kv_write(key, {"data": self.racing.pop(key)})
            return 200, _wrap(self._kv_write(key, body))
        if not versions:
            return 404, {"errors": []}
        if kind == "metadata":
            meta = {
                "cas_required": False,
                "created_time": versions[0]["metadata"]["created_time"],
                "current_version": len(versions),
                "custom_metadata": None,
                "delete_version_after": "0s",
                "max_versions": 0,
                "oldest_version": 0,
                "updated_time": versions[-1]["metadata"]["created_time"],
                "versions": {str(i + 1): v["metadata"] for i, v in enumerate(versions)},
            }
            return 200, _wrap(meta)
        return 200, _wrap({"data": versions[-1]["data"], "metadata": versions[-1]["metadata"]})

    def _kv_write(self, key: str, body: dict[str, Any]) -> dict[str, Any]:
        versions = self.kv.setdefault(key, [])
        cas = (body.get("options") or {}).get("cas")
        if cas is not None and int(cas) != len(versions):
            raise VaultError(400, "check-and-set parameter did not match the current version")
        metadata = {
            "created_time": _now(),
            "custom_metadata": None,
            "deletion_time": "",
            "destroyed": False,
            "version": len(versions) + 1,
        }
        versions.append({"data": dict(body.get("data") or {}), "metadata": metadata})
        return metadata

    def _transit(self, method: str, parts: list[str], body: dict[str, Any]) -> tuple[int, Any]:
        match method, parts:
            case "GET", ["keys", name]:
                if name not in self.keys:
                    return 404, {"errors": []}
                key = self.keys[name]
                return 200, _wrap(
                    {
                        "name": name,
                        "type": "aes256-gcm96",
                        "keys": {str(v): t for v, t in key.created.items()},
                        "latest_version": key.latest,
                        "min_decryption_version": key.min_decryption_version,
                        "min_encryption_version": 0,
                        "deletion_allowed": False,
                        "derived": False,
                        "exportable": False,
                        "supports_encryption": True,
                        "supports_decryption": True,
                        "supports_derivation": True,
                        "supports_signing": False,
                    }
                )
            case "POST", ["keys", name, "rotate"]:
                key = self._key(name)
                key.versions[key.latest + 1] = AESGCM.generate_key(bit_length=256)
                key.created[key.latest] = _unix()
                return 204, None
            case "POST", ["keys", name, "config"]:
                key = self._key(name)
                wanted = int(body.get("min_decryption_version", key.min_decryption_version))
                if wanted > key.latest:
                    raise VaultError(400, "cannot set min decryption version greater than latest version")
                key.min_decryption_version = max(wanted, 1)
                return 204, None
            case "POST", ["datakey", kind, name] if kind in ("plaintext", "wrapped"):
                data_key = os.urandom(int(body.get("bits") or 256) // 8)
                ciphertext, version = self._key(name, encrypt=True).encrypt(data_key)
                answer = {"ciphertext": ciphertext, "key_version": version}
                if kind == "plaintext":
                    answer["plaintext"] = base64.b64encode(data_key).decode()
                return 200, _wrap(answer)
            case "POST", ["decrypt", name]:
                plaintext = self._key(name, encrypt=True).decrypt(str(body.get("ciphertext", "")))
                return 200, _wrap({"plaintext": base64.b64encode(plaintext).decode()})
            case "POST", ["rewrap", name]:
                key = self._key(name, encrypt=True)
                plaintext = key.decrypt(str(body.get("ciphertext", "")))
                ciphertext, version = key.encrypt(plaintext, int(body.get("key_version") or 0))
                return 200, _wrap({"ciphertext": ciphertext, "key_version": version})
        return 404, {"errors": [f"no handler for route 'transit/{'/'.join(parts)}'. route entry not found."]}

    def _key(self, name: str, *, encrypt: bool = False) -> TransitKey:
        if name not in self.keys:
            # Vault: 400 for encryption operations on a missing key, 404 on its key endpoints.
            raise VaultError(400, "encryption key not found") if encrypt else VaultError(404)
        return self.keys[name]


def _wrap(data: Any) -> dict[str, Any]:
    """Vault's response envelope around an endpoint's `data`."""
    return {
        "request_id": str(uuid.uuid4()),
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": data,
        "wrap_info": None,
        "warnings": None,
        "auth": None,
    }


def _handler(vault: Vault) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = None
            if not isinstance(body, dict):
                status, answer = 400, {"errors": ["failed to parse JSON input"]}
            else:
                status, answer = vault.handle(self.command, self.path, self.headers.get("X-Vault-Token", ""), body)
            out = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            if out:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def vault_server() -> Iterator[Vault]:
    """A fresh stand-in Vault on a free port (see the module's docstring)."""
    vault = Vault()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(vault))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    vault.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield vault
    server.shutdown()
    server.server_close()
