"""MongoStore beyond the shared contract: documents, indexes, options, the claim race."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import ReadPreference, WriteConcern

from aioproducer._exceptions import StoreError
from aioproducer._stores._mongo import (
    CLAIM_INDEX_KEYS,
    CLAIM_INDEX_NAME,
    MongoCollection,
    MongoCursor,
    MongoStore,
)

from .backends import MONGO_CLIENT_KWARGS, MONGO_URL, Backend, FakeClock, StandInCollection
from .conftest import Messages

LEASE = 30.0


def test_from_url_does_no_io_and_needs_no_event_loop() -> None:
    store = MongoStore.from_url("mongodb://127.0.0.1:1/", "db", "coll")
    assert repr(store) == "MongoStore('db.coll')"
    assert store.write_concern == WriteConcern(w="majority", j=True)


def test_from_url_checks_the_url_at_once() -> None:
    with pytest.raises(StoreError, match="configuration"):
        MongoStore.from_url("http://127.0.0.1/")


def test_from_url_without_pymongo_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pymongo", None)
    with pytest.raises(ImportError, match=r"aioproducer\[mongo\]"):
        MongoStore.from_url("mongodb://127.0.0.1/")


def test_the_package_imports_without_pymongo() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["pymongo"] = None  # as if the mongo extra were not installed
        sys.modules["bson"] = None
        import aioproducer
        from aioproducer._stores._mongo import MongoStore
        try:
            MongoStore.from_url("mongodb://127.0.0.1/")
        except ImportError as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'aioproducer[mongo]'" in done.stdout


async def test_write_concern_and_read_preference() -> None:
    from mongomock_motor import AsyncMongoMockClient

    client: Any = AsyncMongoMockClient()
    default = StandInCollection(client["db"]["default"])
    custom = StandInCollection(client["db"]["custom"])
    stores = [MongoStore(default), MongoStore(custom, write_concern=WriteConcern(w=1))]
    for store in stores:
        await store.count()
        await store.close()
    assert default.options == {
        "read_preference": ReadPreference.PRIMARY,
        "write_concern": WriteConcern(w="majority", j=True),
    }
    assert custom.options["write_concern"] == WriteConcern(w=1)


async def test_claim_index_is_created_on_first_use(mongo_backend: Backend) -> None:
    store = mongo_backend.make()
    await store.count()
    await store.close()
    await store.count()  # reopening creates it again: a no-op
    indexes = await _raw(mongo_backend).index_information()
    assert indexes[CLAIM_INDEX_NAME]["key"] == CLAIM_INDEX_KEYS


async def test_document_layout(mongo_backend: Backend, clock: FakeClock) -> None:
    store = mongo_backend.make()
    message = Messages(clock)(body=b"\x00\xff", headers={"k": b"v"}, timestamp=1_700_000_000.25)
    await store.put([message])
    raw = _raw(mongo_backend)

    doc = await raw.find_one({"_id": message.message_id})
    assert doc == {
        "_id": message.message_id,
        "body": b"\x00\xff",
        "exchange": "",
        "routing_key": "orders",
        "content_type": "application/octet-stream",
        "headers": '{"$d":{"k":{"$b":"dg=="}}}',
        "timestamp": 1_700_000_000.25,
        "accepted_at": datetime.fromtimestamp(1_700_000_000.25, UTC).replace(tzinfo=None),
        "attempts": 0,
        "last_error": None,
        "due_at": 0.0,
        "lease_owner": None,
        "lease_until": 0.0,
        "claim_token": None,
    }

    (claimed,) = await store.claim("owner-1", limit=1, lease=LEASE)
    doc = await raw.find_one({"_id": message.message_id})
    assert doc["lease_owner"] == "owner-1"
    assert doc["lease_until"] == clock.now + LEASE
    assert isinstance(doc["claim_token"], str)

    await store.release("owner-1", [claimed])
    doc = await raw.find_one({"_id": message.message_id})
    assert (doc["lease_owner"], doc["lease_until"], doc["claim_token"]) == (None, 0.0, None)


async def test_closing_a_store_leaves_the_callers_client_open(
    mongo_backend: Backend, clock: FakeClock
) -> None:
    collection: MongoCollection = mongo_backend.collection
    store = MongoStore(collection, clock=clock)
    await store.put(Messages(clock).many(2))
    await store.close()
    assert await collection.count_documents({}) == 2  # the client still works
    assert await store.count() == 2
    await store.close()


@pytest.mark.parametrize("taken", [2, 5])
async def test_candidates_taken_between_find_and_update_are_not_claimed_twice(
    mongo_backend: Backend, taken: int, clock: FakeClock
) -> None:
    """Another claim runs between this claim's find and its update (the race window)."""
    batch = Messages(clock).many(5)
    other = mongo_backend.make()
    await other.put(batch)
    got_by_other: list[str] = []

    async def other_claims() -> None:
        got_by_other.extend(m.message_id for m in await other.claim("b", limit=taken, lease=LEASE))

    racing = _BeforeUpdate(mongo_backend.collection, other_claims)
    store = MongoStore(racing, clock=clock)
    got = [m.message_id for m in await store.claim("a", limit=5, lease=LEASE)]
    await store.close()

    all_ids = [m.message_id for m in batch]
    assert got_by_other == all_ids[:taken]
    assert got == all_ids[taken:]


@pytest.mark.skipif(MONGO_URL is None, reason="Motor against a real server only")
async def test_a_motor_collection_works(mongo_backend: Backend, clock: FakeClock) -> None:
    from motor.motor_asyncio import AsyncIOMotorClient

    assert MONGO_URL is not None
    database = mongo_backend.collection.database.name
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(
        MONGO_URL, **MONGO_CLIENT_KWARGS
    )
    try:
        store = MongoStore(client[database]["motor"], clock=clock)
        batch = Messages(clock).many(3)
        await store.put(batch)
        await store.put(batch[:1])
        claimed = await store.claim("a", limit=10, lease=LEASE)
        assert [m.message_id for m in claimed] == [m.message_id for m in batch]
        await store.release("a", claimed[:1])
        await store.ack([m.message_id for m in claimed[1:]])
        assert await store.count() == 1
        await store.close()
    finally:
        client.close()


def _raw(backend: Backend) -> Any:
    """The driver collection under the backend, for reading documents as stored."""
    collection = backend.collection
    return collection.raw if isinstance(collection, StandInCollection) else collection


class _BeforeUpdate:
    """A collection that runs ``hook`` once, just before the first ``update_many``."""

    def __init__(self, inner: MongoCollection, hook: Callable[[], Awaitable[None]]) -> None:
        self._inner = inner
        self._hook: Callable[[], Awaitable[None]] | None = hook

    def with_options(self, **options: Any) -> _BeforeUpdate:
        racing = _BeforeUpdate(self._inner.with_options(**options), self._run_hook)
        return racing

    async def _run_hook(self) -> None:
        hook, self._hook = self._hook, None
        if hook is not None:
            await hook()

    async def update_many(self, filter: Mapping[str, Any], update: Mapping[str, Any], /) -> object:
        await self._run_hook()
        return await self._inner.update_many(filter, update)

    def create_index(self, keys: Any, /, *, name: str) -> Awaitable[object]:
        return self._inner.create_index(keys, name=name)

    def insert_many(
        self, documents: Iterable[dict[str, Any]], /, *, ordered: bool = True
    ) -> Awaitable[object]:
        return self._inner.insert_many(documents, ordered=ordered)

    def bulk_write(self, requests: Sequence[Any], /, *, ordered: bool = True) -> Awaitable[object]:
        return self._inner.bulk_write(requests, ordered=ordered)

    def delete_many(self, filter: Mapping[str, Any], /) -> Awaitable[object]:
        return self._inner.delete_many(filter)

    def count_documents(self, filter: Mapping[str, Any], /) -> Awaitable[int]:
        return self._inner.count_documents(filter)

    def find(
        self,
        filter: Mapping[str, Any],
        projection: Mapping[str, Any] | None = None,
        /,
        *,
        sort: Any = None,
        limit: int = 0,
    ) -> MongoCursor:
        return self._inner.find(filter, projection, sort=sort, limit=limit)
