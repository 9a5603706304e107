"""probe(), the reachability check of ``python -m aioproducer status``: why an address
cannot be reached, password masked, within its timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from aioproducer._connection import probe
from tests.net import free_port, silent_server


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A port that accepts connections and never says a word, like a frozen broker."""
    async with silent_server() as silent:
        yield silent.port


async def test_an_address_that_never_answers_is_told_after_the_timeout(silent_port: int) -> None:
    url = f"amqp://ops:s3cret@127.0.0.1:{silent_port}/"
    # Bounded by the test as well: a probe without its own bound would wait for good.
    reason = await asyncio.wait_for(probe(url, timeout=0.2), 10)
    assert reason == f"no answer from amqp://ops:***@127.0.0.1:{silent_port}/ within 0.2s"


async def test_a_refused_address_is_told_with_the_error_and_no_password() -> None:
    port = free_port()
    reason = await asyncio.wait_for(probe(f"amqp://ops:s3cret@127.0.0.1:{port}/", timeout=5), 10)
    assert reason == (
        f'amqp://ops:***@127.0.0.1:{port}/: <AMQPConnectionError: (111, "Connect call failed '
        f"('127.0.0.1', {port})\")>"
    )
