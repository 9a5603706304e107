"""The store backends the contract suite runs against.

MongoDB: nx-27017, a MongoDB wire-protocol server on SQLite started by the tests
(see ``nx.py``), so that the real PyMongo driver path runs on a bare machine; and a
real MongoDB server as well when ``AIOPRODUCER_TEST_MONGO_URL`` is set. Each test
gets a database of its own, dropped afterwards. Test ids and the report header say
which ran.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aioproducer._stores._base import Store
from aioproducer._stores._mongo import MongoStore
from aioproducer._stores._sqlite import SQLiteStore

from .nx import NX_NAME, nx_executable

Clock = Callable[[], float]
#: How another process opens the same store: ("sqlite", path) or
#: ("mongo", url, database, collection, "server-clock" | "host-clock").
StoreSpec = tuple[str, ...]

MONGO_URL = os.environ.get("AIOPRODUCER_TEST_MONGO_URL") or None
MONGO_REAL = "mongo-real"
MONGO_NX = NX_NAME
#: The MongoDB backends of the contract suite, by test id.
MONGO_BACKENDS = [MONGO_NX, *([MONGO_REAL] if MONGO_URL else [])]
#: Why tests of leases on the server's clock cannot run on nx-27017.
NO_PIPELINES = f"{MONGO_NX} cannot run update pipelines ($$NOW): server-clock leases need MongoDB"


def mongo_backend_line() -> str:
    """One line for the pytest report header: which MongoDB the store tests use."""
    nx = (
        f"{MONGO_NX}, a MongoDB wire-protocol server on SQLite (not MongoDB)"
        if nx_executable()
        else f"{MONGO_NX} not installed (pip install nx-27017): its tests are skipped"
    )
    if MONGO_URL:
        return f"mongo store tests: {nx}; and {MONGO_REAL} (AIOPRODUCER_TEST_MONGO_URL)"
    return f"mongo store tests: {nx}; set AIOPRODUCER_TEST_MONGO_URL to add a real server"


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
    #: How another process opens the same store.
    spec: StoreSpec | None = None
    #: The driver collection under a MongoDB store, for inspection.
    collection: Any = None
    #: The MongoDB URL, database and collection name.
    url: str = ""
    database: str = ""
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


@contextlib.asynccontextmanager
async def open_mongo_backend(name: str, url: str, clock: Clock) -> AsyncIterator[Backend]:
    """A fresh database on the server at ``url``, its stores on ``clock`` for leases."""
    from pymongo import AsyncMongoClient

    database = f"aioproducer_test_{os.urandom(6).hex()}"
    admin: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        url, serverSelectionTimeoutMS=5000, timeoutMS=30_000
    )
    backend = Backend(
        name,
        clock,
        lambda c: MongoStore.from_url(url, database, "spill", clock=c),
        spec=("mongo", url, database, "spill", "host-clock"),
        collection=admin[database]["spill"],
        url=url,
        database=database,
    )
    try:
        yield backend
    finally:
        try:
            await backend.close_all()
            await admin.drop_database(database)
        finally:
            await admin.close()
