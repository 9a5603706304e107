"""probe(), the reachability check of ``python -m aioproducer status``: why an address
cannot be reached, password masked, within its timeout."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from aioproducer._connection import probe


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A port that accepts connections and never says a word, like a frozen broker."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_address_that_never_answers_is_told_after_the_timeout(silent_port: int) -> None:
    url = f"amqp://ops:s3cret@127.0.0.1:{silent_port}/"
    # Bounded by the test as well: a probe without its own bound would wait for good.
    reason = await asyncio.wait_for(probe(url, timeout=0.2), 10)
    assert reason == f"no answer from amqp://ops:***@127.0.0.1:{silent_port}/ within 0.2s"


async def test_a_refused_address_is_told_with_the_error_and_no_password() -> None:
    port = closed_port()
    reason = await asyncio.wait_for(probe(f"amqp://ops:s3cret@127.0.0.1:{port}/", timeout=5), 10)
    assert reason == (
        f'amqp://ops:***@127.0.0.1:{port}/: <AMQPConnectionError: (111, "Connect call failed '
        f"('127.0.0.1', {port})\")>"
    )
