"""The noise's calibration (privacy/mechanisms.py), without a database: the documented scale and
95% bound, OpenDP's privacy map asked back, and the mean's edge cases."""

from __future__ import annotations

import math
from decimal import Decimal

import opendp.prelude as dp
import pytest

from privacy import mechanisms


def test_the_95_percent_bound_is_sensitivity_over_epsilon_times_ln_20() -> None:
    assert mechanisms.noisy_count(100, k=3, epsilon=0.5).error_bound == pytest.approx(6 * math.log(20))
    total = mechanisms.noisy_sum(10.0, lower=Decimal(-40), upper=Decimal(25), k=2, epsilon=2.0)
    assert total.error_bound == pytest.approx(2 * 40 / 2.0 * math.log(20))  # k * max(|lower|, |upper|) / epsilon


def test_a_measurement_spending_more_than_its_epsilon_is_refused_before_it_runs() -> None:
    space = dp.atom_domain(T=int), dp.absolute_distance(T=int)
    too_little_noise = dp.m.make_laplace(*space, scale=1.0)  # spends 2 for sensitivity 2
    with pytest.raises(ValueError, match="more than epsilon"):
        mechanisms._checked(too_little_noise, 2, 1.0)


def test_the_mean_stays_within_the_bounds_and_an_empty_count_gives_the_midpoint() -> None:
    low, high = Decimal(0), Decimal(10)
    for _ in range(50):
        mean = mechanisms.noisy_mean(exact_sum=5.0, exact_count=1, lower=low, upper=high, k=1, epsilon=0.01)
        assert 0 <= mean.value["mean"] <= 10
    empty = mechanisms.noisy_mean(exact_sum=0.0, exact_count=-10_000, lower=low, upper=high, k=1, epsilon=50)
    assert empty.value["mean"] == 5


def test_a_histogram_answers_exactly_the_declared_categories() -> None:
    released = mechanisms.noisy_histogram({"EU": 5, "Mars": 1}, categories=["EU", "US"], k=1, epsilon=1.0)
    assert list(released.value) == ["EU", "US"]
