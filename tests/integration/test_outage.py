"""The broker stopped under load: publish() never waits, overdue messages are stored,
and once the broker is back every message arrives and the store ends empty."""

from __future__ import annotations

import pytest

from aioproducer import SQLiteStore
from tests.broker import broker_stopped, connection, wait_for_ids
from tests.integration.conftest import ProducerFactory
from tests.load import steady_load
from tests.waiting import run_without_suspending, store_is_empty, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.fault]


# Bounds: waits 30+30+60+60+90+60, the broker's stop and start 180.
@pytest.mark.timeout(540)
async def test_broker_stopped_while_publishing_loses_nothing(
    make_producer: ProducerFactory, queue: str
) -> None:
    producer = make_producer(spill_after=1.0)
    store = producer.store
    assert isinstance(store, SQLiteStore)
    await producer.start()
    await wait_until(lambda: producer.stats().connected, what="first connection")
    async with steady_load(producer, queue) as load:
        await wait_until(
            lambda: producer.stats().confirmed >= 100, what="confirms before the outage"
        )
        async with broker_stopped():
            load.marking = True
            sent_before_outage = len(load.ids)
            await wait_until(
                lambda: producer.stats().spilled >= 300, timeout=60, what="messages spilled"
            )
            backlog_while_down = await store.count()
            load.marking = False
        await wait_until(lambda: producer.stats().connections >= 2, timeout=60, what="reconnection")
    async with connection() as conn:
        await wait_for_ids(conn, queue, set(load.ids), timeout=90)
    await wait_until(store_is_empty(store), timeout=60, what="store drained")
    stats = producer.stats()

    assert backlog_while_down > 0
    assert stats.spilled >= 300
    assert stats.replayed >= backlog_while_down
    assert stats.confirmed + stats.replayed >= len(load.ids)
    print(
        f"\noutage figures: sent={len(load.ids)} (before outage {sent_before_outage}, "
        f"while down {len(load.marked)}) spilled={stats.spilled} "
        f"replayed={stats.replayed} confirmed_directly={stats.confirmed} lost=0 "
        f"longest_publish_while_down={max(load.marked) * 1e6:.0f}us "
        f"retried={stats.retried}"
    )


# Bounds: waits 30+60+30, the broker's stop and start 180.
@pytest.mark.timeout(330)
async def test_start_with_the_broker_down_then_deliver_when_it_comes_up(
    make_producer: ProducerFactory, queue: str
) -> None:
    producer = make_producer(spill_after=0.5)
    async with broker_stopped():
        await producer.start()
        ids = {
            run_without_suspending(producer.publish({"n": n}, routing_key=queue))
            for n in range(200)
        }
        await wait_until(lambda: producer.stats().spilled == 200, what="all spilled")
        assert not producer.stats().connected
    async with connection() as conn:
        await wait_for_ids(conn, queue, ids, timeout=60)
    await wait_until(lambda: producer.stats().replayed == 200, what="all replayed")
