"""SCRAM-SHA-256 password verifiers, computed on the portal side.

Why: `CREATE ROLE ... PASSWORD 'plaintext'` sends the password to the target in clear, where it can
end up in the server log (`log_statement = ddl`), in `pg_stat_statements`, or in an error context
line. PostgreSQL (10+) accepts a ready-made SCRAM verifier in the same place and stores it as is, so
the plaintext never leaves the portal. The verifier itself is still treated as a secret (it allows an
offline guessing attack) and is redacted from every rendered plan and error message.

The format is the one PostgreSQL stores in `pg_authid.rolpassword` (RFC 5802 / RFC 7677):
``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``, all base64.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

ITERATIONS = 4096  # PostgreSQL's default scram_iterations
PREFIX = "SCRAM-SHA-256$"


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    # PostgreSQL applies SASLprep before hashing; for printable ASCII, SASLprep is the identity. The
    # portal generates JIT passwords itself, so refusing anything else is simpler than reimplementing
    # SASLprep (and never silently produces a verifier the server would not match).
    if not password or not password.isascii() or not password.isprintable():
        raise ValueError("the password must be non-empty printable ASCII")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("ascii"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return stored_key, server_key


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def scram_sha256_verifier(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The verifier PostgreSQL would store for `password` (a fresh random salt unless given)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    stored_key, server_key = _keys(password, salt, iterations)
    return PREFIX + str(iterations) + ":" + _b64(salt) + "$" + _b64(stored_key) + ":" + _b64(server_key)


def scram_sha256_matches(password: str, verifier: str) -> bool:
    """True when `verifier` (e.g. read from pg_authid.rolpassword) was made from `password`."""
    if not verifier.startswith(PREFIX):
        return False
    try:
        head, keys = verifier[len(PREFIX) :].split("$", 1)
        iterations_text, salt_b64 = head.split(":", 1)
        stored_b64, server_b64 = keys.split(":", 1)
        salt = base64.b64decode(salt_b64, validate=True)
        iterations = int(iterations_text)
    except ValueError:
        return False
    stored_key, server_key = _keys(password, salt, iterations)
    return hmac.compare_digest(_b64(stored_key), stored_b64) and hmac.compare_digest(_b64(server_key), server_b64)
