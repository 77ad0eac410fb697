"""Benchmarks reuse the test fixtures: a real target database, a real worker, real Redis."""

from tests.conftest import *  # noqa: F403
from tests.provisioning.conftest import *  # noqa: F403
