"""Benchmarks reuse the test fixtures: a real target database, a real worker, real Redis.

`make bench` runs them at full size; `make test` runs them once at small size (BENCH_SMOKE=1, see
bench/sizes.py). Every benchmark carries the `bench` marker, besides the lanes tests/conftest.py
gives by fixture (its collection hook comes with the star import).
"""

import time
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings

from bench import summary
from bench.sizes import SMOKE
from bench.workload import NamedWorker
from tests.conftest import *  # noqa: F403
from tests.provisioning.conftest import *  # noqa: F403
from tests.provisioning.conftest import Worker


def pytest_itemcollected(item: pytest.Item) -> None:
    item.add_marker(pytest.mark.bench)


_STARTED = time.time()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The provisioning figures of this run side by side, with ratios and targets (bench/summary.py)."""
    found = summary.lines(summary.written_since(_STARTED))
    if found:
        terminalreporter.section("provisioning figures (issue 15)")
        if SMOKE:
            terminalreporter.write_line("small sizes (BENCH_SMOKE): start-up costs, not the portal's figures")
        for line in found:
            terminalreporter.write_line(line)


@pytest.fixture
def production_worker(celery_worker: Worker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NamedWorker]:
    """One worker with the production sweeper settings (stuck after 120 s): the test fixture's 2 s
    would re-publish jobs that are merely waiting behind 10,000 others. The session's worker is
    paused for the duration, then restarted."""
    celery_worker.stop()
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    worker = NamedWorker(tmp_path_factory.mktemp("bulk"), "bulk", beat=True)
    try:
        worker.start()
        yield worker
    finally:
        worker.stop()
        celery_worker.start()
