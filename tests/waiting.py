"""Waiting on a condition with a bound, for tests (never a fixed sleep)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, cast

from aioproducer import Store

T = TypeVar("T")


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float = 30.0,
    what: str = "condition",
    every: float = 0.05,
) -> None:
    """Re-check ``condition`` until it holds; fail with ``what`` after ``timeout`` seconds.

    ``every`` is the pause between checks; 0 re-checks at each turn of the event
    loop, for a state that may last only a few milliseconds.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


def run_without_suspending(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end in one step; fail if it ever waited on anything.

    This is how the tests show that publish() does no I/O: a coroutine that awaited
    a socket, a lock or another task would suspend here.
    """
    try:
        coro.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coro.close()
    raise AssertionError("the coroutine suspended: it waited on I/O or another task")


def store_is_empty(store: Store) -> Callable[[], Awaitable[bool]]:
    """A condition for :func:`wait_until`: ``store`` holds no message."""

    async def check() -> bool:
        return await store.count() == 0

    return check
