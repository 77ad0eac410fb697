"""The docs' shell walk-throughs run as written against a live `make run` (tests/docs/walkthrough.py).

A fresh stack (`scripts/devstack.py run`, EMBEDDED=1: its own PostgreSQL with the demo warehouse,
Redis, web server and Celery worker, in a temporary state directory) serves the blocks of README.md,
docs/api.md and docs/discovery.md; each file's blocks run in order in one `bash -e`, from the project root, in the
environment of a reader's second terminal (none of pytest's database settings: the blocks load the
stack's own with `eval "$(... devstack.py env)"`). Every command must succeed, every output the doc
shows after `→` must match, and no other command may answer with an API error.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docs import walkthrough
from tests.processes import Output, free_port

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
START_TIMEOUT = 180
SCRIPT_TIMEOUT = 300
# What pytest's process has that a reader's terminal would not.
PYTEST_ONLY = {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE", "AUDIT_ANCHOR_FILE"}


@pytest.fixture(scope="module")
def reader_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A running `make run` (embedded services, demo data, web, worker) and the environment of a
    reader's second terminal beside it (DEVSTACK_DIR says where this stack keeps its state)."""
    state_dir = tmp_path_factory.mktemp("docs-stack")
    env = {key: value for key, value in os.environ.items() if key not in PYTEST_ONLY}
    env.update(
        EMBEDDED="1",
        PORT=str(free_port()),
        DEMO_PASSWORD=secrets.token_urlsafe(16),
        DEVSTACK_DIR=str(state_dir),
        PYTHONUNBUFFERED="1",
    )
    proc = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "python"), "scripts/devstack.py", "run"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    output = Output(proc.stdout)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not output.contains("Ctrl-C stops"):
            assert proc.poll() is None, f"make run exited with {proc.returncode}:\n{output.tail()}"
            assert time.monotonic() < deadline, f"make run not up after {START_TIMEOUT} s:\n{output.tail()}"
            time.sleep(0.2)
        # The banner tells the reader how to load the stack's variables in another shell.
        assert output.contains('Shell:     eval "$(DEVSTACK_DIR='), output.tail()
        reader = {key: value for key, value in env.items() if key not in {"EMBEDDED", "PORT", "DEMO_PASSWORD"}}
        yield reader
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _runnable(path: Path) -> list[walkthrough.Block]:
    return [block for block in walkthrough.shell_blocks(path) if block.not_run is None]


@pytest.mark.slow  # a whole stack: embedded PostgreSQL and Redis, migrate, demo data, web and worker
@pytest.mark.parametrize("doc", ["docs/api.md", "README.md", "docs/discovery.md"])
def test_the_walk_through_runs_as_written(doc: str, reader_env: dict[str, str], tmp_path: Path) -> None:
    blocks = _runnable(ROOT / doc)
    assert blocks, f"{doc} has no shell block to run"
    commands = [command for block in blocks for command in walkthrough.commands(block)]
    result = subprocess.run(
        ["bash", "-e", "-c", walkthrough.script(commands, tmp_path)],
        cwd=ROOT,
        env=reader_env,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
        check=False,
    )

    def shown(number: int) -> str:
        out = tmp_path / f"{number}.out"
        err = tmp_path / f"{number}.err"
        return (
            f"{doc}:{commands[number].line}: {commands[number].text}\n"
            f"--- stdout\n{out.read_text() if out.exists() else ''}\n"
            f"--- stderr (last lines)\n{''.join((err.read_text() if err.exists() else '').splitlines(True)[-15:])}"
        )

    ran = len(commands)
    if result.returncode != 0:
        ran = int((tmp_path / "current").read_text())
    # The first difference from the doc, in the doc's order: a wrong output above a failing command
    # is usually its cause.
    for number, command in enumerate(commands[:ran]):
        output = (tmp_path / f"{number}.out").read_text()
        if command.expected is not None:
            problem = walkthrough.mismatch(command.expected, output)
        else:
            error = walkthrough.api_error(output)
            problem = f"the doc shows no output, the API answered an error: {error}" if error else None
        assert problem is None, f"{problem}\n{shown(number)}"
    if result.returncode != 0:
        pytest.fail(f"exit code {result.returncode} at\n{shown(ran)}\n{result.stderr[-2000:]}")


def test_every_shell_block_of_the_docs_is_run_or_says_why_not() -> None:
    """A block is run by the test above unless a `<!-- not-run: reason -->` marker says why not;
    only the files that test runs may hold runnable blocks, and a marker needs a reason."""
    runnable = {
        path.relative_to(ROOT).as_posix()
        for path in DOCS
        for block in walkthrough.shell_blocks(path)
        if block.not_run is None
    }
    assert runnable == {"docs/api.md", "README.md", "docs/discovery.md"}
    for path in DOCS:
        for block in walkthrough.shell_blocks(path):
            assert block.not_run is None or block.not_run.strip(), f"{block.where}: a not-run marker without a reason"
            if block.not_run is None:
                assert walkthrough.commands(block), f"{block.where}: a shell block with no command"
