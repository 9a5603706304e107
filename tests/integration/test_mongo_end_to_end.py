"""A producer on a MongoDB store: the broker stops, messages spill to MongoDB, and
once the broker is back every one of them is replayed and the collection ends empty.

MongoDB is the real server when ``AIOPRODUCER_TEST_MONGO_URL`` is set, otherwise the
mongomock-motor stand-in (see ``tests/stores/backends.py``); the test id says which.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from aioproducer._stores._mongo import MongoStore
from tests.broker import broker_stopped, connection, wait_for_ids
from tests.integration.conftest import ProducerFactory
from tests.stores.backends import MONGO_BACKEND, Backend, open_mongo_backend
from tests.waiting import run_without_suspending, store_is_empty, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.fault]


@pytest.fixture(params=[MONGO_BACKEND])
async def mongo(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """A fresh MongoDB collection; ask for it before ``make_producer`` so the
    producers close (and write what they hold) before the collection goes away."""
    async with open_mongo_backend(time.time) as backend:
        yield backend


async def test_outage_spills_to_mongo_and_replays_everything(
    mongo: Backend, make_producer: ProducerFactory, queue: str
) -> None:
    store = mongo.make()
    assert isinstance(store, MongoStore)
    producer = make_producer(store=store, spill_after=0.5)
    await producer.start()
    await wait_until(lambda: producer.stats().connected, what="first connection")

    async with broker_stopped():
        ids = {
            run_without_suspending(producer.publish({"n": n}, routing_key=queue))
            for n in range(300)
        }
        await wait_until(
            lambda: producer.stats().spilled >= len(ids), timeout=60, what="all spilled"
        )
        assert await store.count() == len(ids)

    async with connection() as conn:
        await wait_for_ids(conn, queue, ids, timeout=90)
    await wait_until(store_is_empty(store), timeout=60, what="collection drained")
    stats = producer.stats()
    assert stats.spilled == len(ids)
    assert stats.replayed == len(ids)
    assert stats.exported == 0


async def test_two_producers_share_one_collection_and_replay_its_backlog(
    mongo: Backend, make_producer: ProducerFactory, queue: str
) -> None:
    first = make_producer(store=mongo.make(), spill_after=3600)
    async with broker_stopped():
        await first.start()
        ids = {await first.publish({"n": n}, routing_key=queue) for n in range(400)}
        await first.close(timeout=0.5)  # nothing delivered: everything goes to MongoDB
        assert first.stats().spilled == len(ids)
        assert await mongo.make().count() == len(ids)

    a = make_producer(store=mongo.make())
    b = make_producer(store=mongo.make())
    await a.start()
    await b.start()
    async with connection() as conn:
        await wait_for_ids(conn, queue, ids, timeout=90)
    await wait_until(store_is_empty(a.store), timeout=60, what="collection drained")
    assert a.stats().replayed + b.stats().replayed >= len(ids)
