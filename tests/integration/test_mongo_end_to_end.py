"""A producer on a MongoDB store: with no broker to reach, messages spill to MongoDB;
a producer that reaches the broker replays every one of them and the collection ends
empty. The broker itself is never stopped: the first producer points at a port where
nothing listens.

MongoDB is nx-27017, a MongoDB wire-protocol server started for this module, and a
real server as well when ``AIOPRODUCER_TEST_MONGO_URL`` is set; the test id says
which. nx-27017 has no update pipelines, so its stores keep leases on the host's
clock; on a real server they run on the server's clock.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from aioproducer._stores._mongo import MongoStore
from tests.broker import connection, wait_for_ids
from tests.integration.conftest import ProducerFactory
from tests.stores.backends import MONGO_BACKENDS, MONGO_NX, MONGO_URL
from tests.stores.nx import NxServer, nx_executable
from tests.waiting import run_without_suspending, store_is_empty, wait_until

pytestmark = [pytest.mark.broker]

StoreFactory = Callable[[], MongoStore]


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


@pytest.fixture(params=MONGO_BACKENDS)
async def mongo(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Stores on a fresh collection; ask for it before ``make_producer`` so the
    producers close (and write what they hold) before the collection goes away."""
    if request.param == MONGO_NX:
        url: str = request.getfixturevalue("nx_module").url
        clock: Callable[[], float] | None = time.time
    else:
        assert MONGO_URL is not None
        url, clock = MONGO_URL, None
    database = f"aioproducer_e2e_{os.urandom(6).hex()}"
    made: list[MongoStore] = []

    def make() -> MongoStore:
        store = MongoStore.from_url(url, database, "spill", clock=clock)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()
    from pymongo import AsyncMongoClient

    admin: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(url, timeoutMS=10_000)
    try:
        await admin.drop_database(database)
    finally:
        await admin.close()


@pytest.fixture
def no_broker_url() -> Iterator[str]:
    """An AMQP URL where nothing listens: a port held bound, never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"amqp://guest:guest@127.0.0.1:{sock.getsockname()[1]}/"


# Bounds: waits 60+90+60 and the server's start.
@pytest.mark.timeout(270)
async def test_spills_to_mongo_and_another_producer_replays_everything(
    mongo: StoreFactory,
    make_producer: ProducerFactory,
    no_broker_url: str,
    queue: str,
) -> None:
    store = mongo()
    cut_off = make_producer(no_broker_url, store=store, spill_after=0.5)
    await cut_off.start()
    ids = {run_without_suspending(cut_off.publish({"n": n}, routing_key=queue)) for n in range(300)}
    await wait_until(
        lambda: cut_off.stats().spilled >= len(ids), timeout=60, what="all spilled to MongoDB"
    )
    assert await store.count() == len(ids)
    await cut_off.close(timeout=1)

    replayer = make_producer(store=mongo())
    await replayer.start()
    async with connection() as conn:
        await wait_for_ids(conn, queue, ids, timeout=90)
    await wait_until(store_is_empty(store), timeout=60, what="collection drained")
    assert replayer.stats().replayed >= len(ids)
    assert cut_off.stats().exported == 0


# Bounds: waits 90+60 and the server's start.
@pytest.mark.timeout(270)
async def test_two_producers_share_one_collection_and_replay_its_backlog(
    mongo: StoreFactory, make_producer: ProducerFactory, no_broker_url: str, queue: str
) -> None:
    first = make_producer(no_broker_url, store=mongo(), spill_after=3600)
    await first.start()
    ids = {await first.publish({"n": n}, routing_key=queue) for n in range(400)}
    await first.store.count()  # opened before close(), so its time goes to the writes
    await first.close(timeout=3)  # nothing delivered: everything goes to MongoDB
    assert first.stats().spilled == len(ids)
    assert await mongo().count() == len(ids)

    a = make_producer(store=mongo())
    b = make_producer(store=mongo())
    await a.start()
    await b.start()
    async with connection() as conn:
        await wait_for_ids(conn, queue, ids, timeout=90)
    await wait_until(store_is_empty(a.store), timeout=60, what="collection drained")
    assert a.stats().replayed + b.stats().replayed >= len(ids)
