"""A failing database surfaces as StoreError, naming the operation, never as a driver error."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pymongo.errors import AutoReconnect, BulkWriteError, PyMongoError

from aioproducer._exceptions import ProducerError, StoreError
from aioproducer._message import Message
from aioproducer._stores._base import Store
from aioproducer._stores._mongo import MongoCursor, MongoStore
from aioproducer._stores._sqlite import SQLiteStore

from .backends import FakeClock
from .conftest import Messages

Operation = Callable[[Store, Message], Awaitable[object]]

OPERATIONS: dict[str, Operation] = {
    "put": lambda store, m: store.put([m]),
    "claim": lambda store, m: store.claim("a", limit=10, lease=30.0),
    "ack": lambda store, m: store.ack([m.message_id]),
    "release": lambda store, m: store.release("a", [m]),
    "count": lambda store, m: store.count(),
}


def unreachable_url(tmp_path: Path) -> str:
    """A MongoDB URL nobody answers: a Unix socket path that does not exist.

    Not a closed TCP port: PyMongo's async driver leaks the socket of a TCP connect
    that is cancelled while in progress (PYTHON-5867), which warnings-as-errors
    turns into a failure of whichever test runs when it is collected. A missing
    Unix socket fails at once, with no connect in progress to cancel.
    """
    return "mongodb://" + quote(str(tmp_path / "mongodb-27017.sock"), safe="")


def broken_sqlite_path(tmp_path: Path, how: str) -> Path:
    if how == "missing-directory":
        return tmp_path / "missing" / "spill.db"
    path = tmp_path / "spill.db"
    path.write_bytes(b"this is not an SQLite database, " * 64)
    return path


async def settle_aiosqlite_threads() -> None:
    """Wait for aiosqlite worker threads to finish.

    When ``aiosqlite.connect`` fails, aiosqlite 0.22 stops its worker thread without
    awaiting it; if the test's event loop closes first, the thread raises "Event loop
    is closed" into whichever test runs next.
    """
    for thread in threading.enumerate():
        if thread.name.endswith("(_connection_worker_thread)"):
            await asyncio.to_thread(thread.join, 10)


@pytest.mark.parametrize("how", ["missing-directory", "not-a-database"])
@pytest.mark.parametrize("operation", OPERATIONS)
async def test_sqlite_broken_file(tmp_path: Path, operation: str, how: str) -> None:
    store = SQLiteStore(broken_sqlite_path(tmp_path, how))
    try:
        with pytest.raises(StoreError, match=rf"SQLite {operation} on .* failed") as raised:
            await OPERATIONS[operation](store, Messages(FakeClock())())
        assert isinstance(raised.value, ProducerError)
        assert isinstance(raised.value.__cause__, sqlite3.Error | OSError)
        await store.close()
    finally:
        await settle_aiosqlite_threads()


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_mongo_server_unreachable(tmp_path: Path, operation: str) -> None:
    store = MongoStore.from_url(unreachable_url(tmp_path), serverSelectionTimeoutMS=50)
    with pytest.raises(StoreError, match=rf"MongoDB {operation} on .* failed") as raised:
        await OPERATIONS[operation](store, Messages(FakeClock())())
    assert isinstance(raised.value, ProducerError)
    assert isinstance(raised.value.__cause__, PyMongoError)
    await store.close()


async def test_mongo_store_retries_with_a_fresh_client_after_failing(tmp_path: Path) -> None:
    store = MongoStore.from_url(unreachable_url(tmp_path), serverSelectionTimeoutMS=50)
    for _ in range(2):
        with pytest.raises(StoreError, match="No such file"):
            await store.count()
    await store.close()
    await store.close()


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_mongo_driver_errors_are_translated(operation: str) -> None:
    store = MongoStore(_Failing(AutoReconnect("connection reset by peer")))
    with pytest.raises(StoreError, match=rf"MongoDB {operation} on .* failed") as raised:
        await OPERATIONS[operation](store, Messages(FakeClock())())
    assert isinstance(raised.value.__cause__, AutoReconnect)
    await store.close()


def _bulk_error(*codes: int, write_concern_error: bool = False) -> BulkWriteError:
    details: dict[str, Any] = {
        "writeErrors": [
            {"index": i, "code": code, "errmsg": f"E{code}"} for i, code in enumerate(codes)
        ],
        "writeConcernErrors": [{"code": 64, "errmsg": "waiting for replication timed out"}]
        if write_concern_error
        else [],
        "nInserted": 0,
    }
    return BulkWriteError(details)


async def test_put_ignores_duplicate_keys() -> None:
    store = MongoStore(_Failing(insert_error=_bulk_error(11000, 11000)))
    await store.put(Messages(FakeClock()).many(2))


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(_bulk_error(11000, 121), id="duplicate-and-validation"),
        pytest.param(_bulk_error(121), id="validation"),
        pytest.param(_bulk_error(11000, write_concern_error=True), id="write-concern"),
    ],
)
async def test_put_fails_on_any_other_write_error(error: BulkWriteError) -> None:
    store = MongoStore(_Failing(insert_error=error))
    with pytest.raises(StoreError, match=r"MongoDB put on .* failed") as raised:
        await store.put(Messages(FakeClock()).many(2))
    assert raised.value.__cause__ is error


class _Failing:
    """A collection whose operations fail with ``error`` (index creation works)."""

    def __init__(
        self, error: PyMongoError | None = None, *, insert_error: PyMongoError | None = None
    ) -> None:
        self.error = error
        self.insert_error = insert_error or error

    def with_options(self, **options: Any) -> _Failing:
        return self

    async def _fail(self) -> None:
        if self.error is not None:
            raise self.error

    async def create_index(self, keys: Any, /, *, name: str) -> object:
        return name

    async def insert_many(
        self, documents: Iterable[dict[str, Any]], /, *, ordered: bool = True
    ) -> object:
        if self.insert_error is not None:
            raise self.insert_error
        return None

    async def update_many(self, filter: Mapping[str, Any], update: Mapping[str, Any], /) -> object:
        await self._fail()
        return None

    async def bulk_write(self, requests: Sequence[Any], /, *, ordered: bool = True) -> object:
        await self._fail()
        return None

    async def delete_many(self, filter: Mapping[str, Any], /) -> object:
        await self._fail()
        return None

    async def count_documents(self, filter: Mapping[str, Any], /) -> int:
        await self._fail()
        return 0

    def find(
        self,
        filter: Mapping[str, Any],
        projection: Mapping[str, Any] | None = None,
        /,
        *,
        sort: Any = None,
        limit: int = 0,
    ) -> MongoCursor:
        return _FailingCursor(self)


class _FailingCursor:
    def __init__(self, collection: _Failing) -> None:
        self._collection = collection

    async def _to_list(self) -> list[Any]:
        await self._collection._fail()
        return []

    def to_list(self, length: int | None = None, /) -> Awaitable[list[Any]]:
        return self._to_list()
