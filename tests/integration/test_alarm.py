"""The broker's memory alarm blocks publishers: publish() keeps accepting, nothing is lost,
and not one frame is written to the blocked connection."""

from __future__ import annotations

import pytest

from tests.broker import connection, memory_alarm, wait_for_ids
from tests.integration.conftest import ProducerFactory, proxied_url
from tests.load import steady_load
from tests.proxy import TcpProxy
from tests.waiting import store_is_empty, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.fault]


# Bounds: flush 30, blocked 30, spills 30 + 30, unblocked 30, delivery 60, drained 30,
# the alarm's rabbitmqctl calls (60 each at most) and the producers' close.
@pytest.mark.timeout(420)
async def test_memory_alarm_blocks_nothing_and_loses_nothing(
    make_producer: ProducerFactory, queue: str, proxy: TcpProxy
) -> None:
    producer = make_producer(proxied_url(proxy), spill_after=0.5)
    await producer.start()
    await wait_until(lambda: producer.stats().connected, what="connection")
    ids = {await producer.publish({"before": n}, routing_key=queue) for n in range(100)}
    assert await producer.flush(timeout=30)
    assert proxy.publishes >= 100

    async with memory_alarm(), steady_load(producer, queue) as load:
        # The broker blocks a connection when it next publishes.
        await wait_until(lambda: producer.stats().blocked, what="Connection.Blocked")
        blocked_at = len(load.ids)
        # Messages accepted since wait in memory and spill on their deadline; by then
        # every frame written before the block arrived has passed the proxy.
        await wait_until(lambda: producer.stats().spilled > 0, what="spill while blocked")
        written = proxy.publishes
        spilled = producer.stats().spilled
        await wait_until(
            lambda: producer.stats().spilled >= spilled + 100, what="more spills while blocked"
        )
        assert producer.stats().blocked
        assert proxy.publishes == written, "frames were written to the blocked connection"
        assert len(load.ids) > blocked_at, "publish() kept accepting while blocked"
    ids.update(load.ids)

    await wait_until(lambda: not producer.stats().blocked, what="Connection.Unblocked")
    async with connection() as conn:
        await wait_for_ids(conn, queue, ids, timeout=60)
    await wait_until(store_is_empty(producer.store), what="store drained")
    assert proxy.publishes > written
