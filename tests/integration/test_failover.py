"""Several broker addresses against the real broker: dead ones are passed over, and a
lost connection moves to the next address. (The three-node cluster is in
test_cluster.py; these use the system broker, behind TCP proxies, as the live nodes.)"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from aioproducer import Producer, SQLiteStore
from aioproducer._config import mask
from aioproducer._connection import AmqpLink
from aioproducer._context import Context
from aioproducer._link import Link
from tests.broker import wait_for_ids
from tests.integration.conftest import FAST, proxied_url
from tests.proxy import TcpProxy
from tests.waiting import run_without_suspending, store_is_empty, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.fault]

#: Ports nothing listens on: connecting is refused at once.
DEAD = ["amqp://guest:secret@127.0.0.1:1/", "amqp://guest:secret@127.0.0.1:2/"]


class InOrder(Producer):
    """A producer that tries its addresses in the order given (no shuffle)."""

    def _make_link(self, context: Context) -> Link:
        return AmqpLink(
            self._settings.urls,
            backoff=self._settings.reconnect_backoff,
            connect_timeout=self._settings.connect_timeout,
            on_error=context.record_error,
            shuffle=lambda addresses: None,
        )


@pytest.fixture
async def in_order(tmp_path: Path) -> AsyncIterator[list[InOrder]]:
    made: list[InOrder] = []
    yield made
    for producer in made:
        await producer.close(timeout=5)


def make(made: list[InOrder], urls: Sequence[str], tmp_path: Path) -> InOrder:
    options: dict[str, Any] = {**FAST, "fallback_dir": tmp_path}
    producer = InOrder(urls, store=SQLiteStore(tmp_path / "spill.db"), **options)
    made.append(producer)
    return producer


async def test_dead_addresses_are_passed_over_to_a_live_one(
    in_order: list[InOrder],
    tmp_path: Path,
    amqp: aio_pika.abc.AbstractRobustConnection,
    queue: str,
    amqp_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = make(in_order, [*DEAD, amqp_url], tmp_path)
    with caplog.at_level(logging.DEBUG, logger="aioproducer.connection"):
        await producer.start()
        ids = {run_without_suspending(producer.publish(b"x", routing_key=queue)) for _ in range(50)}
        await wait_for_ids(amqp, queue, ids, timeout=30)
    assert producer.stats().broker == mask(amqp_url)
    assert f"trying {mask(DEAD[1])} next" in caplog.text
    assert "secret" not in caplog.text


async def test_a_lost_connection_moves_to_the_next_address(
    in_order: list[InOrder],
    tmp_path: Path,
    amqp: aio_pika.abc.AbstractRobustConnection,
    queue: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = TcpProxy(), TcpProxy()
    await first.start()
    await second.start()
    try:
        urls = [proxied_url(first), proxied_url(second)]
        shown = [mask(url) for url in urls]
        producer = make(in_order, urls, tmp_path)
        await producer.start()
        await wait_until(lambda: producer.stats().broker == shown[0], what="the first address")
        ids = {
            run_without_suspending(producer.publish(b"x", routing_key=queue)) for _ in range(200)
        }
        with caplog.at_level(logging.INFO, logger="aioproducer.connection"):
            # The connection to the first "node" is reset: the next attempt goes to the
            # second one, though the first would still take a connection.
            assert first.cut() == 1
            await wait_until(lambda: producer.stats().broker == shown[1], what="a move")
            ids |= {
                run_without_suspending(producer.publish(b"y", routing_key=queue))
                for _ in range(200)
            }
            await wait_for_ids(amqp, queue, ids, timeout=30)
        await wait_until(store_is_empty(producer.store), what="store drained")
        assert f"moving to {shown[1]}" in caplog.text
        assert f"connected to {shown[1]} (moved from {shown[0]})" in caplog.text
    finally:
        await first.close()
        await second.close()
