"""Benchmarks reuse the test fixtures: a real target database, a real worker, real Redis.

`make bench` runs them at full size; `make test` runs them once at small size (BENCH_SMOKE=1, see
bench/sizes.py). Every benchmark carries the `bench` marker, besides the lanes tests/conftest.py
gives by fixture (its collection hook comes with the star import).
"""

import pytest

from tests.conftest import *  # noqa: F403
from tests.provisioning.conftest import *  # noqa: F403


def pytest_itemcollected(item: pytest.Item) -> None:
    item.add_marker(pytest.mark.bench)
