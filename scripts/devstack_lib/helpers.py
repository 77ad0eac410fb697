"""Small helpers of the dev stack: the project root, errors, configuration (environment, then
``.env``), ports, URLs, secrets and paths. Standard library only."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class StackError(Exception):
    """Something the user must fix or know about; printed as one line, exit code 1."""


class Shutdown(Exception):
    """A stop signal (Ctrl-C, SIGTERM, SIGHUP) arrived: unwind and stop everything."""


def say(message: str) -> None:
    """Print one line of our own, flushed so it interleaves correctly with the children's output."""
    print(f"devstack: {message}", flush=True)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse the simple ``KEY=value`` lines of a ``.env`` file (comments, ``export``, quotes).

    Django reads ``.env`` itself (django-environ); this script reads the few values it decides on
    (DATABASE_URL, REDIS_URL, DEMO_PASSWORD, PORT, EMBEDDED) from it too, so that a URL put there is
    honoured instead of being shadowed by what this script discovers and exports.
    """
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


@dataclass(frozen=True)
class Config:
    """What this run decides from: the environment, then ``.env``."""

    state_dir: Path
    dotenv: dict[str, str]

    @classmethod
    def load(cls) -> Config:
        dotenv = read_dotenv(ROOT / ".env")
        override = os.environ.get("DEVSTACK_DIR") or dotenv.get("DEVSTACK_DIR")
        # Relative to the project, like the default, whatever the current directory.
        state_dir = (ROOT / Path(override).expanduser()).resolve() if override else ROOT / ".devstack"
        return cls(state_dir=state_dir, dotenv=dotenv)

    def get(self, name: str) -> str | None:
        """An environment variable, else a ``.env`` value; empty counts as unset."""
        return os.environ.get(name) or self.dotenv.get(name) or None

    def flag(self, name: str) -> bool:
        return (self.get(name) or "").lower() in {"1", "true", "yes", "on"}

    @property
    def embedded(self) -> bool:
        return self.flag("EMBEDDED")


# --------------------------------------------------------------------------------------------
# Small network and file helpers
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the kernel picks it), never the web port.

    The web server binds PORT only after PostgreSQL and Redis are up; without the exclusion the
    kernel may hand one of them that very port first (seen in CI: "That port is already in use").
    """
    web_port = int(os.environ.get("PORT") or 8000)
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port != web_port:
            return port


def port_is_free(port: int) -> bool:
    """Whether we could listen on 127.0.0.1:port (with SO_REUSEADDR, as runserver does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def accepts_tcp(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def redis_ping(host: str, port: int, password: str | None = None) -> bool:
    """Whether a Redis server answers PING (with AUTH first when a password is given)."""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            if password:
                sock.sendall(f"AUTH {password}\r\n".encode())
                if not sock.recv(64).startswith(b"+OK"):
                    return False
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def redact(url: str) -> str:
    """The URL without its password, for printing."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path="/" + name))


def read_or_create_secret(path: Path, nbytes: int = 18) -> str:
    """A random token kept in a 0600 file, so it stays the same across runs."""
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(nbytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def package_dir(name: str) -> Path:
    """Where an installed package lives, found without importing it (imports have side effects)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise StackError(f"the {name} package is not installed; run `make install`")
    return Path(next(iter(spec.submodule_search_locations)))


def rel(path: Path) -> str:
    """A path relative to the project when it is inside it, for shorter messages."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(ROOT))
    return str(path)


def prepare_state_dir(path: Path) -> None:
    # 0711: other users may traverse it (the embedded PostgreSQL's own user must, when we are root)
    # but not list it; the secrets inside are 0600 files.
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o711)
