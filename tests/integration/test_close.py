"""Graceful close stores what it could not deliver; another producer replays it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aio_pika
import pytest

from aioproducer import SQLiteStore, StoreError
from aioproducer._message import Message
from tests.broker import broker_stopped, connection, wait_for_ids
from tests.integration.conftest import ProducerFactory
from tests.waiting import store_is_empty, wait_until

pytestmark = pytest.mark.broker


# Bounds: waits 60 and the closes, the broker's stop and start 180.
@pytest.mark.timeout(300)
@pytest.mark.fault
async def test_close_during_an_outage_stores_everything_for_the_next_producer(
    make_producer: ProducerFactory, queue: str, spill_path: Path
) -> None:
    first = make_producer(store=SQLiteStore(spill_path), spill_after=3600)
    async with broker_stopped():
        await first.start()
        ids = {await first.publish({"n": n}, routing_key=queue) for n in range(500)}
        await first.close(timeout=0.5)
        stats = first.stats()
        assert (stats.spilled, stats.confirmed, stats.exported) == (500, 0, 0)
        store = SQLiteStore(spill_path)
        assert await store.count() == 500
        await store.close()

    second = make_producer(store=SQLiteStore(spill_path))
    await second.start()
    async with connection() as conn:
        await wait_for_ids(conn, queue, ids, timeout=60)
    await wait_until(store_is_empty(second.store), what="store drained")
    assert second.stats().replayed == 500


async def test_close_drains_to_the_broker_first(
    make_producer: ProducerFactory, amqp: aio_pika.abc.AbstractRobustConnection, queue: str
) -> None:
    producer = make_producer(spill_after=3600)
    await producer.start()
    ids = {await producer.publish({"n": n}, routing_key=queue) for n in range(2000)}
    await producer.close(timeout=30)
    await producer.close()  # idempotent
    assert producer.stats().confirmed == 2000
    assert producer.stats().spilled == 0
    await wait_for_ids(amqp, queue, ids)


# Bounds: waits 90+60.
@pytest.mark.timeout(180)
async def test_two_producers_share_one_store_and_replay_a_backlog(
    make_producer: ProducerFactory,
    amqp: aio_pika.abc.AbstractRobustConnection,
    queue: str,
    spill_path: Path,
) -> None:
    backlog = SQLiteStore(spill_path)
    messages = [
        Message(
            message_id=f"backlog-{n}",
            body=b'{"n": %d}' % n,
            exchange="",
            routing_key=queue,
            content_type="application/json",
            timestamp=1_700_000_000.0 + n,
        )
        for n in range(3000)
    ]
    await backlog.put(messages)
    await backlog.close()

    # Confirms may be slow on a loaded machine; a missing confirm republishes (a
    # documented duplicate). With these bounds any duplicate is a lease defect.
    slow_ok = {"replay_batch": 100, "confirm_timeout": 30.0, "lease": 60.0}
    one = make_producer(store=SQLiteStore(spill_path), name="one", **slow_ok)
    two = make_producer(store=SQLiteStore(spill_path), name="two", **slow_ok)
    await asyncio.gather(one.start(), two.start())
    # Drained first: every publish was confirmed, so any duplicate is in the queue now.
    await wait_until(store_is_empty(one.store), timeout=90, what="store drained")
    got = await wait_for_ids(amqp, queue, {m.message_id for m in messages}, timeout=60)

    ids = [m.message_id for m in got]
    assert len(ids) == len(set(ids)) == 3000, "a leased message was published once"
    assert one.stats().replayed + two.stats().replayed == 3000
    assert one.stats().replayed > 0 and two.stats().replayed > 0, "both took part"


class RefusingStore(SQLiteStore):
    """A store whose database is gone: every write fails."""

    async def put(self, messages: object) -> None:
        raise StoreError("the store is unreachable")


# Bounds: waits 60, the import command, the broker's stop and start 180.
@pytest.mark.timeout(330)
@pytest.mark.fault
async def test_close_with_store_and_broker_down_writes_a_file_to_import(
    make_producer: ProducerFactory, queue: str, tmp_path: Path
) -> None:
    producer = make_producer(store=RefusingStore(tmp_path / "unused.db"), spill_after=3600)
    async with broker_stopped():
        await producer.start()
        ids = {await producer.publish({"n": n}, routing_key=queue) for n in range(300)}
        await producer.close(timeout=0.5)
    assert producer.stats().exported == 300
    [exported] = await asyncio.to_thread(lambda: list(tmp_path.glob("aioproducer-unsent-*.jsonl")))

    target = tmp_path / "import.db"
    created = SQLiteStore(target)  # the command imports into an existing store only
    await created.count()
    await created.close()
    command = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aioproducer",
        "import",
        str(exported),
        "--sqlite",
        str(target),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await command.communicate()
    assert command.returncode == 0
    assert b"imported 300 messages" in out

    replayer = make_producer(store=SQLiteStore(target))
    await replayer.start()
    async with connection() as conn:
        await wait_for_ids(conn, queue, ids, timeout=60)
    await wait_until(store_is_empty(replayer.store), what="imported messages replayed")
