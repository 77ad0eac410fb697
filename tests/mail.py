"""A real SMTP server for the tests (aiosmtpd, on a free port of 127.0.0.1, in a thread of the test
process): the portal's email backend talks SMTP to it as to any mail server, and the tests read what
it received. One per test session (tests/conftest.py: `smtp_server`, `mailbox`); the worker process
the tests start sends to it too (tests/provisioning/conftest.py: Worker.env).

`stall_at("DATA")` makes the server hold its answer to the next message's DATA (having received the
message, as a server that accepted it but whose 250 never reached the client) or to its RCPT (before
the message), until `release()`: the moment a test kills the worker that is sending."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.processes import free_port


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def body(self, subtype: str = "plain") -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        return part.get_content() if part is not None else ""


class _Handler:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.stall: str | None = None
        self.stalled = threading.Event()
        self.released = threading.Event()
        self.lock = threading.Lock()

    async def _maybe_stall(self, stage: str) -> None:
        with self.lock:
            if self.stall != stage:
                return
            self.stall = None  # only the next message
        self.stalled.set()
        while not self.released.is_set():
            await asyncio.sleep(0.02)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        await self._maybe_stall("RCPT")
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        await self._maybe_stall("DATA")
        return "250 Message accepted for delivery"


class MailServer:
    def __init__(self) -> None:
        self.handler = _Handler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.release()
        self.controller.stop()

    @property
    def received(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.received)

    def clear(self) -> None:
        with self.handler.lock:
            self.handler.received.clear()
            self.handler.stall = None
        self.handler.stalled.clear()
        self.handler.released.clear()

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address in r.recipients]

    def stall_at(self, stage: str) -> None:
        """Hold the answer to the next message's RCPT or DATA until `release()`."""
        assert stage in ("RCPT", "DATA")
        self.handler.released.clear()
        self.handler.stalled.clear()
        with self.handler.lock:
            self.handler.stall = stage

    def wait_stalled(self, timeout: float = 20) -> None:
        if not self.handler.stalled.wait(timeout):
            raise AssertionError(f"no message reached the stall within {timeout} s")

    def release(self) -> None:
        self.handler.released.set()

    def wait_for(self, count: int, timeout: float = 20, address: str | None = None) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.to(address) if address else self.received
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"expected {count} message(s), got {len(self.to(address) if address else self.received)}")


_server: MailServer | None = None


def start() -> MailServer:
    global _server
    if _server is None:
        _server = MailServer()
        _server.start()
    return _server


def current() -> MailServer | None:
    return _server


def stop() -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None
