"""The store backends the contract suite runs against, and the MongoDB stand-in.

MongoDB: a real server when ``AIOPRODUCER_TEST_MONGO_URL`` is set (each test gets a
database of its own, dropped afterwards), otherwise mongomock-motor's in-memory
stand-in. Test ids and the report header say which one ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aioproducer._stores._base import Store
from aioproducer._stores._mongo import MongoStore
from aioproducer._stores._sqlite import SQLiteStore

Clock = Callable[[], float]
#: How another process opens the same store: ("sqlite", path) or ("mongo", url, db, coll).
StoreSpec = tuple[str, ...]

MONGO_URL = os.environ.get("AIOPRODUCER_TEST_MONGO_URL") or None
MONGO_REAL = "mongo-real"
MONGO_STANDIN = "mongo-standin(mongomock-motor)"
MONGO_BACKEND = MONGO_REAL if MONGO_URL else MONGO_STANDIN
#: Client options for a real server: fail fast when it is not there.
MONGO_CLIENT_KWARGS: dict[str, Any] = {"serverSelectionTimeoutMS": 5000}


def mongo_backend_line() -> str:
    """One line for the pytest report header: which MongoDB the store tests use."""
    if MONGO_URL:
        return f"mongo store tests: {MONGO_REAL} (AIOPRODUCER_TEST_MONGO_URL is set)"
    return (
        f"mongo store tests: {MONGO_STANDIN}, in-memory; "
        "set AIOPRODUCER_TEST_MONGO_URL to run them against a real server"
    )


class FakeClock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    """One store backend, empty when handed out; stores made from it share its data."""

    name: str
    clock: Clock
    factory: Callable[[Clock], Store]
    #: How another process opens the same store; None where that is impossible.
    spec: StoreSpec | None = None
    #: The collection under a MongoDB store (stand-in or real), for inspection.
    collection: Any = None
    opened: list[Store] = field(default_factory=list)

    def make(self, clock: Clock | None = None) -> Store:
        """A new store instance on the same data, closed when the backend closes."""
        store = self.factory(clock or self.clock)
        self.opened.append(store)
        return store

    async def close_all(self) -> None:
        for store in self.opened:
            await store.close()


@contextlib.asynccontextmanager
async def open_sqlite_backend(path: Path, clock: Clock) -> AsyncIterator[Backend]:
    backend = Backend(
        "sqlite", clock, lambda c: SQLiteStore(path, clock=c), spec=("sqlite", str(path))
    )
    try:
        yield backend
    finally:
        await backend.close_all()


def open_mongo_backend(clock: Clock) -> contextlib.AbstractAsyncContextManager[Backend]:
    """The MongoDB backend: a fresh database on the real server, or a fresh stand-in."""
    return _standin_backend(clock) if MONGO_URL is None else _real_backend(MONGO_URL, clock)


@contextlib.asynccontextmanager
async def _standin_backend(clock: Clock) -> AsyncIterator[Backend]:
    from mongomock_motor import AsyncMongoMockClient

    client: Any = AsyncMongoMockClient()
    collection = StandInCollection(client["aioproducer_test"][f"spill_{os.urandom(4).hex()}"])
    backend = Backend(
        MONGO_STANDIN, clock, lambda c: MongoStore(collection, clock=c), collection=collection
    )
    try:
        yield backend
    finally:
        await backend.close_all()


@contextlib.asynccontextmanager
async def _real_backend(url: str, clock: Clock) -> AsyncIterator[Backend]:
    from pymongo import AsyncMongoClient

    database = f"aioproducer_test_{os.urandom(6).hex()}"
    admin: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url, **MONGO_CLIENT_KWARGS)
    backend = Backend(
        MONGO_REAL,
        clock,
        lambda c: MongoStore.from_url(url, database, "spill", clock=c, **MONGO_CLIENT_KWARGS),
        spec=("mongo", url, database, "spill"),
        collection=admin[database]["spill"],
    )
    try:
        yield backend
    finally:
        try:
            await backend.close_all()
            await admin.drop_database(database)
        finally:
            await admin.close()


class StandInCollection:
    """mongomock-motor's collection, filling the gaps MongoStore would fall into.

    The store is written for PyMongo's ``AsyncCollection``; the stand-in differs in
    three ways, bridged here so none of it leaks into the store:

    - ``with_options`` returns a plain synchronous mongomock collection: here it
      returns this wrapper, and records the options so tests can check them;
    - ``bulk_write`` fails on PyMongo 4.20's ``UpdateOne`` (mongomock does not know
      its ``sort`` argument): here ``UpdateOne`` requests run as ``update_one``;
    - no call ever suspends, so concurrent claims could never interleave: here every
      operation first yields to the event loop, as a network round trip would.
    """

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self.options: dict[str, Any] = {}

    @property
    def full_name(self) -> str:
        return str(self._collection.full_name)

    @property
    def raw(self) -> Any:
        """The mongomock-motor collection underneath, for inspecting documents."""
        return self._collection

    def with_options(self, **options: Any) -> StandInCollection:
        self.options = options
        return self

    async def create_index(self, keys: Any, /, *, name: str) -> object:
        await asyncio.sleep(0)
        return await self._collection.create_index(keys, name=name)

    async def insert_many(
        self, documents: Iterable[dict[str, Any]], /, *, ordered: bool = True
    ) -> object:
        await asyncio.sleep(0)
        return await self._collection.insert_many(list(documents), ordered=ordered)

    async def update_many(self, filter: Mapping[str, Any], update: Mapping[str, Any], /) -> object:
        await asyncio.sleep(0)
        return await self._collection.update_many(filter, update)

    async def bulk_write(self, requests: Sequence[Any], /, *, ordered: bool = True) -> object:
        from pymongo import UpdateOne

        await asyncio.sleep(0)
        for request in requests:
            if not isinstance(request, UpdateOne):
                raise NotImplementedError(f"stand-in bulk_write: {type(request).__name__}")
            # PyMongo keeps an UpdateOne's filter and update in private slots.
            await self._collection.update_one(request._filter, request._doc)
        return None

    async def delete_many(self, filter: Mapping[str, Any], /) -> object:
        await asyncio.sleep(0)
        return await self._collection.delete_many(filter)

    async def count_documents(self, filter: Mapping[str, Any], /) -> int:
        await asyncio.sleep(0)
        return int(await self._collection.count_documents(filter))

    def find(
        self,
        filter: Mapping[str, Any],
        projection: Mapping[str, Any] | None = None,
        /,
        *,
        sort: Any = None,
        limit: int = 0,
    ) -> _StandInCursor:
        return _StandInCursor(self._collection.find(filter, projection, sort=sort, limit=limit))


class _StandInCursor:
    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def to_list(self, length: int | None = None, /) -> Awaitable[list[Any]]:
        return self._to_list(length)

    async def _to_list(self, length: int | None) -> list[Any]:
        await asyncio.sleep(0)
        return list(await self._cursor.to_list(length))
