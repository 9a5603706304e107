"""The virtual-clock loop of the unit tests: time moves to each timer, and a task that
never waits is named."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

import pytest

from tests.fakes import SpinError, VirtualClockLoop


def test_a_timer_a_hair_ahead_is_reached_not_fired_early(loop: VirtualClockLoop) -> None:
    # Less than the loop's clock resolution ahead: asyncio runs such a timer at once when
    # something else is ready too (here wait_for's own task), before the time it names.
    loop.run(asyncio.sleep(0.7975329312747927), within=1.0)
    ahead = loop.time() + 1e-12
    never = asyncio.Event()

    async def wait_until_ahead() -> int:
        for turn in itertools.count():
            if loop.time() >= ahead:
                return turn
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(never.wait(), ahead - loop.time())
        raise AssertionError("unreachable")

    assert loop.run(wait_until_ahead(), within=1.0) == 1
    assert loop.time() == ahead


def test_a_task_that_never_waits_is_named(loop: VirtualClockLoop) -> None:
    async def spin() -> None:
        for _ in itertools.count():
            await asyncio.sleep(0)

    task = loop.create_task(spin(), name="spinner")
    with pytest.raises(SpinError, match=r"task spinner: test_a_task_that_never_waits"):
        loop.drive(within=1.0)
    task.cancel()
    loop.drive()
