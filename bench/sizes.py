"""How big each benchmark runs: full size for `make bench`, small for the smoke run of `make test`.

`make test` runs every benchmark once with BENCH_SMOKE=1 so that none can rot unnoticed (fixtures
that no longer match the portal's role, a renamed service, a changed plan): the same code paths,
the same correctness checks, sizes that take seconds. Their ratios are printed and never asserted
(a 2-core machine shared with other work measures nothing worth asserting at that size).
A benchmark's own environment variable, when set, wins over both (e.g. BENCH_BULK_USERS=20).
"""

from __future__ import annotations

import os

SMOKE = os.environ.get("BENCH_SMOKE", "") not in ("", "0")


def size(full: int, smoke: int, env: str | None = None) -> int:
    """`full`, or `smoke` under BENCH_SMOKE=1; the variable `env`, when set, overrides both."""
    if env and os.environ.get(env):
        return int(os.environ[env])
    return smoke if SMOKE else full


def seconds(full: float, smoke: float, env: str | None = None) -> float:
    """Like `size`, for durations."""
    if env and os.environ.get(env):
        return float(os.environ[env])
    return smoke if SMOKE else full
