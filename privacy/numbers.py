"""Budgets and bounds as people write them: 10, 0.25, 5000 (never 1E+1 or 0.250000)."""

from __future__ import annotations

from decimal import Decimal


def plain(number: Decimal | int | float | str) -> str:
    return f"{Decimal(str(number)).normalize():f}"
