"""Every AMQP property arrives as given: delivered live, and stored then replayed from
SQLite and from MongoDB (nx-27017)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from aioproducer import Settlement, SQLiteStore, Store
from aioproducer._stores._mongo import MongoStore
from tests.broker import Received, connection, wait_for_ids
from tests.integration.conftest import ProducerFactory
from tests.stores.backends import MONGO_NX
from tests.stores.nx import NxServer, nx_executable
from tests.waiting import store_is_empty, wait_until

pytestmark = [pytest.mark.broker]

#: Every property, each with a value of its own (the broker's user is guest).
EVERY: dict[str, Any] = {
    "priority": 7,
    "correlation_id": "corr-é",
    "reply_to": "replies",
    "expiration": 600_000,
    "type": "order.created",
    "app_id": "shop-api",
    "user_id": "guest",
    "content_encoding": "identity",
}


def check_every_property(message: Received) -> None:
    got = (
        message.priority,
        message.correlation_id,
        message.reply_to,
        message.expiration,
        message.type,
        message.app_id,
        message.user_id,
        message.content_encoding,
    )
    assert got == (7, "corr-é", "replies", 600.0, "order.created", "shop-api", "guest", "identity")


async def test_every_property_arrives_live_and_persistent_is_per_message(
    make_producer: ProducerFactory, amqp: aio_pika.abc.AbstractRobustConnection, queue: str
) -> None:
    producer = make_producer(spill_after=30.0, persistent=False)
    await producer.start()
    durable = await producer.publish({"n": 1}, routing_key=queue, persistent=True, **EVERY)
    transient = await producer.publish({"n": 2}, routing_key=queue, **EVERY)
    plain = await producer.publish({"n": 3}, routing_key=queue)
    got = {m.message_id: m for m in await wait_for_ids(amqp, queue, {durable, transient, plain})}
    check_every_property(got[durable])
    check_every_property(got[transient])
    assert [got[i].delivery_mode for i in (durable, transient, plain)] == [2, 1, 1]
    assert (got[plain].correlation_id, got[plain].type, got[plain].expiration) == (None,) * 3
    assert producer.stats().spilled == 0


async def test_mandatory_false_lets_an_unroutable_message_be_confirmed(
    make_producer: ProducerFactory,
) -> None:
    producer = make_producer(spill_after=30.0)
    await producer.start()
    nowhere = f"no-queue-{os.urandom(4).hex()}"
    dropped = await producer.publish(b"x", routing_key=nowhere, mandatory=False)
    assert await producer.settled(dropped, timeout=30) is Settlement.CONFIRMED
    assert producer.stats().returned == 0
    # The producer's default is mandatory: returned, held back, and stored for replay.
    returned = await producer.publish(b"y", routing_key=nowhere)
    assert await producer.settled(returned, timeout=30) is Settlement.STORED
    assert producer.stats().returned == 1
    stored = await producer.store.get(returned)
    assert stored is not None and stored.attempts == 1 and stored.properties is None


@pytest.fixture
def no_broker_url() -> Iterator[str]:
    """An AMQP URL where nothing listens: a port held bound, never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"amqp://guest:guest@127.0.0.1:{sock.getsockname()[1]}/"


@pytest.fixture(scope="module")
def nx_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NxServer]:
    if nx_executable() is None:
        pytest.skip(f"{MONGO_NX}: pip install nx-27017")
    server = NxServer(tmp_path_factory.mktemp("nx-27017"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(params=["sqlite", MONGO_NX])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[], Store]]:
    """Stores over one backing: a SQLite file, or a fresh nx-27017 database."""
    made: list[Store] = []
    database = f"aioproducer_props_{os.urandom(6).hex()}"

    def make() -> Store:
        store: Store
        if request.param == "sqlite":
            store = SQLiteStore(tmp_path / "spill.db")
        else:
            url = request.getfixturevalue("nx_module").url
            store = MongoStore.from_url(url, database, "spill", clock=time.time)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


async def test_every_property_survives_the_store_and_replay(
    stores: Callable[[], Store],
    make_producer: ProducerFactory,
    no_broker_url: str,
    queue: str,
) -> None:
    cut_off = make_producer(no_broker_url, store=stores(), spill_after=0.2, persistent=False)
    await cut_off.start()
    durable = await cut_off.publish(b"a", routing_key=queue, persistent=True, **EVERY)
    transient = await cut_off.publish(b"b", routing_key=queue, persistent=False, **EVERY)
    plain = await cut_off.publish(b"c", routing_key=queue)
    for message_id in (durable, transient):
        assert await cut_off.settled(message_id, timeout=30) is Settlement.STORED
    await cut_off.close(timeout=1)
    assert cut_off.stats().spilled == 3

    # The replaying producer's own default is persistent: only an explicit False is 1.
    replayer = make_producer(store=stores())
    await replayer.start()
    async with connection() as conn:
        got = {
            m.message_id: m for m in await wait_for_ids(conn, queue, {durable, transient, plain})
        }
    check_every_property(got[durable])
    check_every_property(got[transient])
    assert [got[i].delivery_mode for i in (durable, transient, plain)] == [2, 1, 2]
    assert (got[plain].correlation_id, got[plain].user_id) == (None, None)
    await wait_until(store_is_empty(replayer.store), timeout=30, what="store drained")
