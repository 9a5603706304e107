"""A producer killed with SIGKILL while it holds a replay lease: what it had stored is not
lost; once the lease expires another producer replays every message."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import aio_pika
import pytest

from aioproducer import Message, SQLiteStore
from tests.broker import wait_for_ids
from tests.integration.conftest import ProducerFactory, proxied_url
from tests.proxy import TcpProxy
from tests.waiting import store_is_empty, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.fault]

#: The producer that will be killed: it replays the store through the proxy.
CHILD = """
import asyncio, sys
from aioproducer import Producer, SQLiteStore

async def main() -> None:
    producer = Producer(
        sys.argv[1], store=SQLiteStore(sys.argv[2]), fallback_dir=sys.argv[3], name="doomed",
        lease=4.0, confirm_timeout=3.0, replay_interval=0.1, replay_batch=500,
    )
    await producer.start()
    await asyncio.Event().wait()

asyncio.run(main())
"""

LEASE = 4.0


# Bounds: claimed 60, lease expiry within the delivery 60, drained 30, the child's start.
@pytest.mark.timeout(240)
async def test_a_killed_producers_lease_expires_and_another_replays_everything(
    make_producer: ProducerFactory,
    proxy: TcpProxy,
    amqp: aio_pika.abc.AbstractRobustConnection,
    queue: str,
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.db"
    backlog = SQLiteStore(path)
    messages = [
        Message(
            message_id=f"crash-{n:04d}",
            body=b'{"n": %d}' % n,
            exchange="",
            routing_key=queue,
            content_type="application/json",
            timestamp=1_700_000_000.0 + n,
        )
        for n in range(300)
    ]
    await backlog.put(messages)
    ids = {m.message_id for m in messages}

    # The child claims a batch and publishes it; its first publish freezes the path, so
    # it holds the lease, waiting for confirms, when it dies.
    proxy.freeze_on_publish = True
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, proxied_url(proxy), str(path), str(tmp_path)
    )
    try:

        async def claimed() -> bool:
            return proxy.publishes > 0 and (await backlog.backlog()).leased > 0

        await wait_until(claimed, timeout=60, what="the child's claim")
    finally:
        child.send_signal(signal.SIGKILL)
        assert await child.wait() == -signal.SIGKILL
    leased = (await backlog.backlog()).leased
    assert leased > 0
    assert await backlog.count() == len(ids), "nothing left the store without a confirm"
    await backlog.close()

    # Another producer shares the store: it gets the leased messages once the lease expires.
    heir = make_producer(store=SQLiteStore(path), name="heir", lease=LEASE, confirm_timeout=2.0)
    await heir.start()
    got = await wait_for_ids(amqp, queue, ids, timeout=60)
    await wait_until(store_is_empty(heir.store), what="store drained")
    assert {m.message_id for m in got} == ids
    assert heir.stats().replayed == len(ids)
