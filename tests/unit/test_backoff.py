"""Backoff is a pure policy: delays grow, stay capped, and jitter within bounds."""

from __future__ import annotations

from typing import Any

import pytest

from aioproducer import Backoff


def test_delays_grow_then_cap_without_jitter() -> None:
    backoff = Backoff(base=0.1, cap=1.0, factor=2.0, jitter=0.0)
    assert [backoff.delay(n) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999])
def test_jitter_spreads_within_the_fraction(draw: float) -> None:
    backoff = Backoff(base=1.0, cap=8.0, jitter=0.5, random=lambda: draw)
    assert backoff.delay(3) == pytest.approx(8.0 * (1 - 0.5 * draw))


def test_huge_attempt_numbers_stay_capped() -> None:
    assert Backoff(base=0.1, cap=1.0, jitter=0.0).delay(10_000) == 1.0


@pytest.mark.parametrize(
    "kwargs",
    [{"base": 0.0}, {"base": 2.0, "cap": 1.0}, {"factor": 0.5}, {"jitter": 1.5}],
)
def test_bad_parameters_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)


def test_the_edges_of_its_settings_are_accepted_and_past_them_refused_with_the_rule() -> None:
    # A constant delay (factor 1) and full jitter are both allowed.
    assert Backoff(1.0, cap=1.0, factor=1.0, jitter=0).delay(5) == 1.0
    assert Backoff(1.0, cap=8.0, jitter=1.0).jitter == 1.0
    for base, cap, factor in ((0.0, 30.0, 2.0), (2.0, 1.0, 2.0), (1.0, 30.0, 0.99)):
        with pytest.raises(ValueError) as raised:
            Backoff(base, cap=cap, factor=factor)
        assert str(raised.value) == "backoff needs 0 < base <= cap and factor >= 1"
    for jitter in (-0.1, 1.01):
        with pytest.raises(ValueError) as raised:
            Backoff(1.0, jitter=jitter)
        assert str(raised.value) == "jitter is a fraction from 0 to 1"
