"""Progress of a long piece of work, reported from deep inside it without passing a callback down.

A catalog sync samples relations in `governance.catalog.introspect`, a reconcile compares principals
chunk by chunk in `governance.services.reconcile`: the code that knows how far it got is several
calls below the service that records an operation's progress. That service installs a reporter
for the duration of the run (`reporting`); the work calls `report(done, total, stage)` at its
natural steps, which costs nothing when nobody listens (a scheduled sync, a management command,
the tests). This module imports nothing of the portal, so that any layer may call it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

Reporter = Callable[[int, int, str], None]

_reporter: ContextVar[Reporter | None] = ContextVar("governance_progress_reporter", default=None)


@contextmanager
def reporting(reporter: Reporter) -> Iterator[None]:
    """Send the `report()` calls made inside the block (in this thread) to `reporter`."""
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        _reporter.reset(token)


def report(done: int, total: int, stage: str) -> None:
    """`done` of `total` steps of `stage` are done (total 0: not known yet)."""
    reporter = _reporter.get()
    if reporter is not None:
        reporter(done, total, stage)
