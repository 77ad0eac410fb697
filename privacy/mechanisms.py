"""The noise: OpenDP's Laplace measurements, calibrated from the declared bounds and the
contribution limit (docs/privacy.md#differentially-private-aggregates). Free of Django.

Neighbouring datasets differ by one privacy unit (a person, or a row), which contributes at most
`k` rows after the SQL bounding. So:

* a count changes by at most k: sensitivity k, discrete Laplace (geometric) noise on integers;
* a sum of values clamped to [lower, upper] changes by at most k * max(|lower|, |upper|): Laplace
  noise on floats (OpenDP samples it without the floating-point holes of textbook sampling);
* a histogram over fixed categories changes by at most k in L1 (each row moves one bin by one):
  discrete Laplace noise on each bin;
* a mean is a noisy sum over a noisy count, each with half of the query's epsilon.

The scale of the noise is sensitivity / epsilon; |noise| <= scale * ln(20) with 95% probability
(for Laplace, P(|X| > t) = exp(-t / scale)). Each measurement's own privacy map is asked back, so
a miscalibration fails loudly instead of releasing under-noised numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import opendp.prelude as dp

dp.enable_features("contrib")

LN20 = math.log(20)


@dataclass(frozen=True)
class Release:
    """A noisy answer and the 95% bound of its error, per released number."""

    value: Any
    error_bound: Any


def count_sensitivity(k: int) -> int:
    return k


def sum_sensitivity(*, lower: Decimal, upper: Decimal, k: int) -> float:
    return float(k * max(abs(lower), abs(upper)))


def error_bound(*, sensitivity: float, epsilon: float) -> float:
    """The 95% bound of the Laplace noise: scale * ln(20), scale = sensitivity / epsilon."""
    return sensitivity / epsilon * LN20


def _checked(measurement: Any, sensitivity: float, epsilon: float) -> Any:
    spent = measurement.map(sensitivity)
    if spent > epsilon * (1 + 1e-9):
        raise ValueError(f"the measurement would spend {spent}, more than epsilon {epsilon}")
    return measurement


def noisy_count(exact: int, *, k: int, epsilon: float) -> Release:
    sensitivity = count_sensitivity(k)
    space = dp.atom_domain(T=int), dp.absolute_distance(T=int)
    measurement = _checked(dp.m.make_laplace(*space, scale=sensitivity / epsilon), sensitivity, epsilon)
    return Release(int(measurement(int(exact))), error_bound(sensitivity=sensitivity, epsilon=epsilon))


def noisy_sum(exact: float, *, lower: Decimal, upper: Decimal, k: int, epsilon: float) -> Release:
    sensitivity = sum_sensitivity(lower=lower, upper=upper, k=k)
    space = dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float)
    measurement = _checked(dp.m.make_laplace(*space, scale=sensitivity / epsilon), sensitivity, epsilon)
    return Release(float(measurement(float(exact))), error_bound(sensitivity=sensitivity, epsilon=epsilon))


def noisy_mean(
    *, exact_sum: float, exact_count: int, lower: Decimal, upper: Decimal, k: int, epsilon: float
) -> Release:
    """Half of epsilon for the sum, half for the count (sequential composition: epsilon in all).
    The released mean is clamped to the bounds; an empty noisy count gives the bounds' midpoint."""
    total = noisy_sum(exact_sum, lower=lower, upper=upper, k=k, epsilon=epsilon / 2)
    count = noisy_count(exact_count, k=k, epsilon=epsilon / 2)
    low, high = float(lower), float(upper)
    mean = (low + high) / 2 if count.value <= 0 else min(max(total.value / count.value, low), high)
    return Release(
        {"mean": mean, "noisy_sum": total.value, "noisy_count": count.value},
        {"noisy_sum": total.error_bound, "noisy_count": count.error_bound},
    )


def noisy_histogram(exact: dict[str, int], *, categories: list[str], k: int, epsilon: float) -> Release:
    sensitivity = count_sensitivity(k)
    space = dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int)
    measurement = _checked(dp.m.make_laplace(*space, scale=sensitivity / epsilon), sensitivity, epsilon)
    noisy = measurement([int(exact.get(c, 0)) for c in categories])
    return Release(
        dict(zip(categories, (int(n) for n in noisy), strict=True)),
        error_bound(sensitivity=sensitivity, epsilon=epsilon),
    )
