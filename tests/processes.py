"""Helpers for tests that start the stack as a child process (tests/test_devstack.py, tests/docs/)."""

from __future__ import annotations

import socket
import threading
from typing import IO


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Output:
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
