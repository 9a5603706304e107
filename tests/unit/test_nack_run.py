"""When a channel counts as nacked for good, and how long the next one is given."""

from __future__ import annotations

import pytest

from aioproducer._connection import NACK_RUN_CAP, NackRun, nack_span


def test_a_replacement_that_changed_nothing_doubles_the_next_span_up_to_the_cap() -> None:
    assert [nack_span(n) for n in range(8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert nack_span(10_000) == NACK_RUN_CAP


@pytest.mark.parametrize(
    ("count", "elapsed", "stuck"),
    [(2, 5.0, False), (3, 0.99, False), (3, 1.0, True), (500, 1.5, True), (0, 9.0, False)],
)
def test_a_run_is_stuck_with_three_nacks_or_more_over_its_span(
    count: int, elapsed: float, stuck: bool
) -> None:
    run = NackRun("live", span=1.0)
    run.count, run.since = count, 100.0
    assert run.stuck(100.0 + elapsed) is stuck
