"""Process supervision: the children of the stack, their sessions, stop signals and the run lock."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

from .helpers import ROOT, Shutdown, StackError, rel, say

# --------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------

_libc: ctypes.CDLL | None = None
if sys.platform == "linux":
    with contextlib.suppress(OSError):
        _libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes Linux send ``sig`` to the child when this script dies.

    Children live in their own sessions (see ``Supervisor.spawn``), so nothing reaches them if this
    script is killed with SIGKILL or crashes before its cleanup: without this they would be orphans
    holding the port. Subprocess runs ``preexec_fn`` after switching user, which matters because a
    credential change clears the parent-death signal.
    """
    if _libc is None:
        return None
    libc = _libc
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return preexec


@dataclass
class Child:
    """A process we started, and how it wants to be asked to stop."""

    name: str
    proc: subprocess.Popen[bytes]
    stop_signal: int
    stop_timeout: float
    long_running: bool


class Supervisor:
    """Starts children, watches them, and stops them all in reverse order.

    Why process groups: every child is started in a new session (``setsid``), which also makes it
    the leader of its own process group. Ctrl-C in a terminal signals the whole *foreground* group;
    if the children were in it, they would all stop at once and in any order (the worker losing its
    broker mid-shutdown, PostgreSQL going away under migrate). Instead only this script receives the
    signal and stops them in order: web and worker first, then Redis, then PostgreSQL.

    Stopping a child: its graceful signal goes to the group leader, which knows how to stop its own
    helpers (Celery stops its pool and embedded beat; the postmaster stops its backends). After a
    timeout, or once the leader is gone, the whole group gets SIGKILL, so nothing the child forked can
    outlive it. A second Ctrl-C skips the waiting.
    """

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.stop_requested: int | None = None
        self.hurry = False

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only set flags: printing from a signal handler can re-enter the stdout buffer.
        if self.stop_requested is None:
            self.stop_requested = signum
        else:
            self.hurry = True

    def check_stop(self) -> None:
        if self.stop_requested is not None:
            raise Shutdown

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake for a stop signal and notice children that died."""
        deadline = time.monotonic() + seconds
        while True:
            self.check_stop()
            self.check_children()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))

    def spawn(
        self,
        name: str,
        argv: Sequence[str | Path],
        *,
        env: dict[str, str],
        stop_signal: int = signal.SIGTERM,
        stop_timeout: float = 20.0,
        long_running: bool = True,
        log: IO[bytes] | None = None,
        run_as: pwd.struct_passwd | None = None,
    ) -> Child:
        self.check_stop()
        proc = subprocess.Popen(
            [str(a) for a in argv],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT if log is not None else None,
            start_new_session=True,
            # preexec_fn is unsafe with threads; this script has none.
            preexec_fn=_die_with_parent(stop_signal),
            user=run_as.pw_uid if run_as else None,
            group=run_as.pw_gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
        child = Child(name, proc, stop_signal, stop_timeout, long_running)
        self.children.append(child)
        return child

    def run_step(
        self,
        name: str,
        argv: Sequence[str | Path],
        *,
        env: dict[str, str],
        log: IO[bytes] | None = None,
        run_as: pwd.struct_passwd | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> int:
        """Run a command to completion (interruptible by a stop signal) and return its exit code."""
        child = self.spawn(name, argv, env=env, long_running=False, log=log, run_as=run_as, stop_signal=stop_signal)
        while (code := child.proc.poll()) is None:
            self.check_stop()
            self.check_children()
            time.sleep(0.05)
        self._stop(child)  # sweeps anything it left in its group
        self.children.remove(child)
        return code

    def check_children(self) -> None:
        for child in self.children:
            code = child.proc.poll()
            if child.long_running and code is not None:
                raise StackError(f"{child.name} exited unexpectedly ({describe_exit(code)}); stopped everything")

    def stop_all(self) -> None:
        if self.stop_requested is not None and self.children:
            say(f"{signal.Signals(self.stop_requested).name} received; stopping everything")
        for child in reversed(self.children):
            self._stop(child)
        self.children.clear()

    def _stop(self, child: Child) -> None:
        proc = child.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, child.stop_signal)
            deadline = time.monotonic() + child.stop_timeout
            while proc.poll() is None and time.monotonic() < deadline and not self.hurry:
                time.sleep(0.05)
            if proc.poll() is None:
                reason = "second signal" if self.hurry else f"still running after {child.stop_timeout:.0f} s"
                say(f"{child.name}: {reason}; sending SIGKILL")
        # The sweep: SIGKILL whatever is left in the group (the leader too, if it ignored us).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


@contextlib.contextmanager
def exclusive_lock(path: Path, what: str, supervisor: Supervisor) -> Iterator[None]:
    """Hold an flock on ``path`` for the whole run; stop every child before letting it go.

    Two runs on one state directory would fight over the same data directory. The kernel drops the
    lock when the holder dies, even by SIGKILL, so while we hold it any server still running on our
    data directory is a leftover of a killed run and is safe to stop. Our own children are stopped
    before the lock is released, so that no other run can take them for leftovers.
    """
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise StackError(
                f"another `devstack {what}` (pid {holder}) is using {rel(path.parent)}; stop it first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        supervisor.stop_all()
        handle.close()
