"""probe() against RabbitMQ: a broker that lets the client in, and one that refuses it."""

from __future__ import annotations

import asyncio

import pytest

from aioproducer._connection import probe
from tests.broker import AMQP_URL

pytestmark = [pytest.mark.broker]


async def test_a_reachable_broker_is_none_and_an_amqp_refusal_is_told() -> None:
    assert await asyncio.wait_for(probe(AMQP_URL, timeout=5), 30) is None
    # The broker closes the connection in the handshake (no such vhost): an AMQP error,
    # not a socket error.
    url = AMQP_URL.rstrip("/") + "/no-such-vhost"
    reason = await asyncio.wait_for(probe(url, timeout=5), 30)
    assert reason is not None
    assert reason.startswith(f"{url.replace(':guest@', ':***@')}: <InvalidFrameError: "), reason
