"""Every failure of a store surfaces as StoreError: StoreUnavailable (retry) or
StoreRejected (isolate the message), with a short text free of bodies and headers,
and the driver's exception chained."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import pytest
from bson.errors import InvalidDocument
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConfigurationError,
    DocumentTooLarge,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteConcernError,
    WriteError,
    WTimeoutError,
)

from aioproducer._exceptions import ProducerError, StoreError, StoreRejected, StoreUnavailable
from aioproducer._message import Message
from aioproducer._stores._base import Store
from aioproducer._stores._errors import MAX_ERROR_TEXT, short, translating
from aioproducer._stores._mongo import MongoCursor, MongoStore
from aioproducer._stores._sqlite import SQLiteStore

from .backends import Backend, FakeClock
from .conftest import FIGURES, Messages

Operation = Callable[[Store, Message], Awaitable[object]]

OPERATIONS: dict[str, Operation] = {
    "put": lambda store, m: store.put([m]),
    "claim": lambda store, m: store.claim("a", limit=10, lease=30.0),
    "ack": lambda store, m: store.ack([m.message_id]),
    "release": lambda store, m: store.release("a", [m]),
    "count": lambda store, m: store.count(),
    "backlog": lambda store, m: store.backlog(),
}


async def _scan(store: Store) -> list[Message]:
    return [m async for m in store.scan()]


#: The operations tools use (the CLI's list, show, requeue and purge).
TOOL_OPERATIONS: dict[str, Operation] = {
    "scan": lambda store, m: _scan(store),
    "get": lambda store, m: store.get(m.message_id),
    "by_key": lambda store, m: store.by_key(),
    "requeue": lambda store, m: store.requeue([m.message_id], routing_key="r"),
    "purge_dead": lambda store, m: store.purge_dead([m.message_id]),
}

SECRET = "Bearer s3cr3t-t0ken-4f9a"
SECRET_BODY = b"card=4111111111111111"


def secret_message(messages: Messages, **fields: Any) -> Message:
    """A message whose body and Authorization header must never reach an error text."""
    values: dict[str, Any] = {
        "body": SECRET_BODY * 10,
        "headers": {"Authorization": SECRET},
        "lease_token": "t",
    }
    values.update(fields)
    return messages(**values)


def assert_clean(error: BaseException) -> None:
    """Short, and free of the planted body and header value."""
    text = str(error)
    FIGURES["longest StoreError text (chars)"] = max(
        FIGURES.get("longest StoreError text (chars)", 0), len(text)
    )
    assert len(text) <= MAX_ERROR_TEXT, text
    assert SECRET not in text and SECRET_BODY.decode() not in text


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


# SQLite


@pytest.mark.parametrize("how", ["missing-directory", "not-a-database"])
@pytest.mark.parametrize("operation", [*OPERATIONS, *TOOL_OPERATIONS])
async def test_sqlite_broken_file_is_unavailable(tmp_path: Path, operation: str, how: str) -> None:
    store = SQLiteStore(broken_sqlite_path(tmp_path, how))
    call = OPERATIONS.get(operation) or TOOL_OPERATIONS[operation]
    try:
        with pytest.raises(StoreUnavailable, match=rf"SQLite {operation} on .* failed") as raised:
            await call(store, Messages(FakeClock())())
        assert isinstance(raised.value, ProducerError)
        assert isinstance(raised.value.__cause__, sqlite3.Error | OSError)
        assert_clean(raised.value)
        text = str(raised.value)
        if how == "missing-directory":
            assert ": unavailable: FileNotFoundError: no directory '" in text, text
        else:
            assert text.endswith(
                ": unavailable: DatabaseError SQLITE_NOTADB: file is not a database"
            )
        await store.close()
    finally:
        await settle_aiosqlite_threads()


async def test_sqlite_locked_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "spill.db"
    store = SQLiteStore(path, busy_timeout=0.05)
    await store.count()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreUnavailable, match="locked") as raised:
            await store.put([secret_message(Messages(FakeClock()))])
        assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
        assert_clean(raised.value)
    finally:
        holder.close()
        await store.close()


@pytest.mark.parametrize(
    ("fields", "cause"),
    [
        pytest.param({"routing_key": "orders.\ud800"}, UnicodeEncodeError, id="surrogate"),
        pytest.param({"attempts": 2**70}, OverflowError, id="integer-overflow"),
    ],
)
async def test_sqlite_refuses_values_it_cannot_hold(
    tmp_path: Path, fields: dict[str, Any], cause: type[Exception]
) -> None:
    store = SQLiteStore(tmp_path / "spill.db")
    messages = Messages(FakeClock())
    with pytest.raises(StoreRejected, match=r"SQLite put on .* failed") as raised:
        await store.put([secret_message(messages), secret_message(messages, **fields)])
    assert isinstance(raised.value.__cause__, cause)
    assert_clean(raised.value)
    assert await store.count() == 0  # the batch is written whole or not at all
    await store.close()


def _coded(cls: type[sqlite3.Error], text: str, code: str | None) -> sqlite3.Error:
    error = cls(text)
    if code is not None:
        error.sqlite_errorname = code  # as sqlite3 sets it on the errors it raises
    return error


@pytest.mark.parametrize(
    ("error", "text"),
    [
        pytest.param(
            _coded(sqlite3.OperationalError, "disk I/O error", "SQLITE_IOERR_FSYNC"),
            "unavailable: OperationalError SQLITE_IOERR_FSYNC: disk I/O error",
            id="coded",
        ),
        pytest.param(
            _coded(sqlite3.IntegrityError, "NOT NULL constraint failed", None),
            "refused: IntegrityError: NOT NULL constraint failed",
            id="no-code",
        ),
        pytest.param(
            _coded(sqlite3.OperationalError, "", "SQLITE_FULL"),
            "unavailable: OperationalError SQLITE_FULL",
            id="no-text",
        ),
        pytest.param(
            _coded(sqlite3.DataError, "too big " * 20, "SQLITE_TOOBIG"),
            "refused: DataError SQLITE_TOOBIG: " + ("too big " * 20)[:97] + "...",
            id="long-text-cut-to-100",
        ),
        pytest.param(
            UnicodeEncodeError("utf-8", SECRET, 0, 1, "surrogates not allowed"),
            "refused: UnicodeEncodeError",
            id="unicode-class-only",
        ),
        pytest.param(OverflowError(SECRET), "refused: OverflowError", id="overflow-class-only"),
        pytest.param(
            ConnectionResetError(104, "reset by peer"),
            "unavailable: ConnectionResetError: [Errno 104] reset by peer",
            id="os-error",
        ),
        pytest.param(RuntimeError(SECRET), "RuntimeError", id="anything-else-class-only"),
    ],
)
def test_sqlite_error_text_is_class_code_and_the_start_of_sqlites_own(
    error: Exception, text: str
) -> None:
    path = "/var/lib/" + "spill/" * 30 + "spill.db"
    translated = SQLiteStore(path)._translate(error, "put")
    where = f"SQLite put on {path[:117]}... failed"
    assert str(translated) == f"{where}: {text}"


async def test_sqlite_close_that_fails_is_a_store_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "spill.db")
    await store.count()
    opened = store._db
    assert opened is not None

    class FailingClose:
        async def close(self) -> None:
            raise sqlite3.OperationalError("disk I/O error")

    store._db = cast(Any, FailingClose())
    with pytest.raises(StoreUnavailable) as raised:
        await store.close()
    assert str(raised.value) == (
        f"SQLite close on {store.path} failed: unavailable: OperationalError: disk I/O error"
    )
    assert store._db is None  # closed for the store's part: the next call opens anew
    await opened.close()


def test_an_excerpt_is_one_line_and_at_most_its_limit() -> None:
    assert short("a  b\n\tc ", 10) == "a b c"
    assert short("x" * 10, 10) == "x" * 10
    assert short("x" * 11, 10) == "x" * 7 + "..."


@pytest.mark.parametrize("length", [MAX_ERROR_TEXT, MAX_ERROR_TEXT + 1, 5_000])
def test_a_store_error_text_is_cut_to_its_limit(length: int) -> None:
    """Whatever a translator makes of a foreign error, at most 300 characters reach the
    caller; the original is chained."""
    text = ("refused: " + "E11000 " * 1_000)[:length]
    cause = sqlite3.IntegrityError("x")
    with (
        pytest.raises(StoreRejected) as raised,
        translating("put", lambda exc, operation: StoreRejected(text)),
    ):
        raise cause
    expected = text if length <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 3] + "..."
    assert str(raised.value) == expected
    assert raised.value.__cause__ is cause


# MongoDB: the real driver, against a server that is not there


@pytest.mark.parametrize("operation", [*OPERATIONS, *TOOL_OPERATIONS])
async def test_mongo_server_unreachable_is_unavailable(tmp_path: Path, operation: str) -> None:
    store = MongoStore.from_url(unreachable_url(tmp_path), timeoutMS=100)
    call = OPERATIONS.get(operation) or TOOL_OPERATIONS[operation]
    with pytest.raises(StoreUnavailable, match=rf"MongoDB {operation} on .* failed") as raised:
        await call(store, secret_message(Messages(FakeClock())))
    assert isinstance(raised.value.__cause__, PyMongoError)
    assert_clean(raised.value)
    await store.close()


async def test_mongo_store_retries_with_a_fresh_client_after_failing(tmp_path: Path) -> None:
    store = MongoStore.from_url(unreachable_url(tmp_path), timeoutMS=100)
    for _ in range(2):
        with pytest.raises(StoreUnavailable, match="No such file"):
            await store.count()
    await store.close()
    await store.close()


def test_a_bad_url_is_a_value_error_that_hides_the_password() -> None:
    for url in (
        "http://admin:hunter2-pw@127.0.0.1/",
        "mongodb://admin:hunter2-pw@127.0.0.1:notaport/",
        "mongodb://admin:hunter2-pw@/",
    ):
        with pytest.raises(ValueError, match="invalid MongoDB URL") as raised:
            MongoStore.from_url(url)
        assert "hunter2-pw" not in str(raised.value)
        assert raised.value.__cause__ is None  # the driver's text may quote the URL


@pytest.mark.parametrize(
    ("url", "driver_text", "text"),
    [
        pytest.param(
            "mongodb://admin:hunter2-pw@db1/",
            "cannot use mongodb://admin:hunter2-pw@db1/ as admin:hunter2-pw (hunter2-pw)",
            "cannot use mongodb://***@db1/ as *** (***)",
            id="user-and-password",
        ),
        pytest.param(
            "mongodb://admin:hunter:2@db1/",
            "password hunter:2 must be escaped",
            "password *** must be escaped",
            id="password-with-a-colon",
        ),
        pytest.param(
            "mongodb://admin@db1/", "user admin unknown", "user *** unknown", id="user-only"
        ),
        pytest.param(
            "mongodb://db1:27017/", "port:27017 refused", "port:27017 refused", id="no-user"
        ),
        pytest.param("mongodb://@db1/", "no user given", "no user given", id="empty-user"),
        pytest.param("mongodb://admin:pw@db1/", "x" * 300, "x" * 197 + "...", id="cut-to-200"),
    ],
)
def test_a_bad_url_error_text_masks_the_user_information(
    monkeypatch: pytest.MonkeyPatch, url: str, driver_text: str, text: str
) -> None:
    """Whatever the driver's text quotes (the URL, the user information, the password
    alone), the ValueError says it with the user information and the password masked,
    in at most 200 characters after its prefix."""

    def refusing(*args: Any, **kwargs: Any) -> Any:
        raise ConfigurationError(driver_text)

    monkeypatch.setattr("pymongo.AsyncMongoClient", refusing)
    with pytest.raises(ValueError) as raised:
        MongoStore.from_url(url)
    assert str(raised.value) == f"invalid MongoDB URL or option: {text}"
    assert raised.value.__cause__ is None


# MongoDB: each kind of failure, mapped by class


def _bulk_error(*codes: int, write_concern_error: bool = False) -> BulkWriteError:
    details: dict[str, Any] = {
        "writeErrors": [
            {
                "index": i,
                "code": code,
                "errmsg": f"E{code} failed on {{ headers: {{ Authorization: {SECRET!r} }} }}",
                "op": {"_id": f"m{i}", "body": SECRET_BODY, "headers": {"Authorization": SECRET}},
            }
            for i, code in enumerate(codes)
        ],
        "writeConcernErrors": [{"code": 64, "errmsg": "waiting for replication timed out"}]
        if write_concern_error
        else [],
        "nInserted": 0,
    }
    return BulkWriteError(details)


def _failure(code: int, cls: type[OperationFailure] = OperationFailure) -> OperationFailure:
    return cls(f"failed on {SECRET}", code, {"code": code, "errmsg": SECRET, "codeName": "X"})


MAPPED: list[Any] = [
    pytest.param(AutoReconnect("connection reset by peer"), StoreUnavailable, id="auto-reconnect"),
    pytest.param(NetworkTimeout("timed out"), StoreUnavailable, id="network-timeout"),
    pytest.param(ServerSelectionTimeoutError("no server"), StoreUnavailable, id="selection"),
    pytest.param(_failure(50, ExecutionTimeout), StoreUnavailable, id="execution-timeout"),
    pytest.param(_failure(64, WTimeoutError), StoreUnavailable, id="write-concern-timeout"),
    pytest.param(_failure(100, WriteConcernError), StoreUnavailable, id="write-concern"),
    pytest.param(_failure(18), StoreUnavailable, id="authentication-failed"),
    pytest.param(_failure(189), StoreUnavailable, id="primary-stepped-down"),
    pytest.param(_failure(121), StoreRejected, id="validation"),
    pytest.param(_failure(10334), StoreRejected, id="bson-object-too-large"),
    pytest.param(_failure(121, WriteError), StoreRejected, id="write-error"),
    pytest.param(DocumentTooLarge("BSON document too large"), StoreRejected, id="too-large"),
    pytest.param(InvalidDocument(f"cannot encode {SECRET}"), StoreRejected, id="invalid-doc"),
    pytest.param(KeyError("saslSupportedMechs"), StoreUnavailable, id="auth-key-error"),
    pytest.param(ConfigurationError("bad option"), StoreUnavailable, id="configuration"),
    pytest.param(ConnectionResetError(104, "reset"), StoreUnavailable, id="os-error"),
    pytest.param(RuntimeError(SECRET), StoreError, id="anything-else"),
]


@pytest.mark.parametrize(("error", "expected"), MAPPED)
@pytest.mark.parametrize("operation", OPERATIONS)
async def test_mongo_errors_are_mapped_by_class(
    operation: str, error: Exception, expected: type[StoreError]
) -> None:
    store = MongoStore(_Failing(error), clock=FakeClock())
    with pytest.raises(
        StoreError, match=rf"^MongoDB {operation} on db\.failing failed: "
    ) as raised:
        await OPERATIONS[operation](store, secret_message(Messages(FakeClock())))
    assert type(raised.value) is expected
    assert raised.value.__cause__ is error
    assert_clean(raised.value)
    await store.close()


@pytest.mark.parametrize(
    ("error", "text"),
    [
        pytest.param(
            OperationFailure(SECRET, 18, {"codeName": "AuthenticationFailed", "errmsg": SECRET}),
            "unavailable (OperationFailure, code 18 AuthenticationFailed)",
            id="code-name",
        ),
        pytest.param(
            WriteError(SECRET, 121, {"codeName": "DocumentValidationFailure"}),
            "refused (WriteError, code 121 DocumentValidationFailure)",
            id="write-error",
        ),
        pytest.param(
            WriteError(SECRET, 66, {"codeName": "ImmutableField"}),
            "refused (WriteError, code 66 ImmutableField)",
            id="write-error-any-code",
        ),
        pytest.param(
            WriteError(SECRET, 50, {"codeName": "MaxTimeMSExpired"}),
            "unavailable (WriteError, code 50 MaxTimeMSExpired)",
            id="write-error-timed-out",
        ),
        pytest.param(
            OperationFailure(SECRET, 91, {"codeName": "ShutdownInProgress" * 3}),
            "unavailable (OperationFailure, code 91 " + ("ShutdownInProgress" * 3)[:37] + "...)",
            id="code-name-cut-to-40",
        ),
        pytest.param(
            OperationFailure(SECRET, 189, None),
            "unavailable (OperationFailure, code 189)",
            id="no-details",
        ),
        pytest.param(
            OperationFailure(SECRET, 11600, {"code": 11600, "errmsg": SECRET}),
            "unavailable (OperationFailure, code 11600)",
            id="no-code-name",
        ),
        pytest.param(
            OperationFailure(SECRET, 2, {"codeName": 2}),
            "refused (OperationFailure, code 2)",
            id="code-name-not-a-string",
        ),
        pytest.param(
            ExecutionTimeout(SECRET, 50, {"codeName": "MaxTimeMSExpired"}),
            "timed out (ExecutionTimeout, code 50)",
            id="execution-timeout",
        ),
        pytest.param(
            _bulk_error(11000, 121, 2, 121),
            "refused 3 of the batch (codes 121, 2; BulkWriteError)",
            id="bulk-refused",
        ),
        pytest.param(
            _bulk_error(57, 56, 55, 52, 14, 2, 121, 121),
            "refused 8 of the batch (codes 121, 14, 2, 52, 55; BulkWriteError)",
            id="bulk-first-5-codes",
        ),
        pytest.param(
            _bulk_error(11000, write_concern_error=True),
            "write concern not satisfied (codes 64; BulkWriteError)",
            id="bulk-write-concern",
        ),
        pytest.param(
            BulkWriteError(
                {
                    "writeErrors": [],
                    "writeConcernErrors": [
                        {"code": code, "errmsg": SECRET}
                        for code in (100, 64, 79, 91, 11600, 189, 64)
                    ],
                }
            ),
            "write concern not satisfied (codes 100, 11600, 189, 64, 79; BulkWriteError)",
            id="bulk-write-concern-first-5-codes",
        ),
        pytest.param(
            AutoReconnect("connection reset by peer"),
            "unavailable (AutoReconnect: connection reset by peer)",
            id="connection-failure",
        ),
        pytest.param(
            NetworkTimeout("db1:27017: timed out " * 10),
            "unavailable (NetworkTimeout: " + ("db1:27017: timed out " * 10)[:117] + "...)",
            id="connection-failure-cut-to-120",
        ),
        pytest.param(
            InvalidDocument(f"cannot encode {SECRET}"),
            "a document cannot be stored (InvalidDocument)",
            id="invalid-document",
        ),
        pytest.param(
            DocumentTooLarge(SECRET),
            "a document cannot be stored (DocumentTooLarge)",
            id="too-large",
        ),
        pytest.param(ConfigurationError(SECRET), "unavailable (ConfigurationError)", id="pymongo"),
        pytest.param(
            ConnectionResetError(104, SECRET), "unavailable (ConnectionResetError)", id="os-error"
        ),
        pytest.param(
            KeyError(SECRET), "unavailable (KeyError, during authentication?)", id="key-error"
        ),
        pytest.param(RuntimeError(SECRET), "RuntimeError", id="anything-else"),
    ],
)
def test_mongo_error_text_is_class_code_and_code_name(error: Exception, text: str) -> None:
    translated = MongoStore(_Failing())._translate(error, "put")
    assert str(translated) == f"MongoDB put on db.failing failed: {text}"


def test_a_long_collection_name_is_cut_to_100_in_error_texts() -> None:
    name = "aioproducer." + "spill_" * 30
    store = MongoStore(_Failing(full_name=name))
    assert repr(store) == f"MongoStore({name!r})"
    translated = store._translate(AutoReconnect("reset"), "count")
    where = f"MongoDB count on {name[:97]}... failed"
    assert str(translated) == f"{where}: unavailable (AutoReconnect: reset)"


async def test_put_ignores_duplicate_keys(caplog: pytest.LogCaptureFixture) -> None:
    """A copy already stored is no error, and does not stop the rest of the batch."""
    collection = _Failing(insert_error=_bulk_error(11000, 11000))
    store = MongoStore(collection, clock=FakeClock())
    batch = Messages(FakeClock()).many(3)
    with caplog.at_level(logging.DEBUG, logger="aioproducer.store"):
        await store.put(batch)  # raises if the duplicates were taken for a failure
    lines = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert lines == [
        ("aioproducer.store", logging.DEBUG, "opened MongoDB collection db.failing"),
        ("aioproducer.store", logging.DEBUG, "put: 2 messages already stored"),
    ]
    # One unordered insert of the whole batch: the server goes on past a duplicate.
    assert collection.inserts == [([m.message_id for m in batch], False)]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(_bulk_error(11000, 121), StoreRejected, id="duplicate-and-validation"),
        pytest.param(_bulk_error(121), StoreRejected, id="validation"),
        pytest.param(
            _bulk_error(11000, write_concern_error=True), StoreUnavailable, id="write-concern"
        ),
    ],
)
async def test_put_fails_on_any_other_write_error(
    error: BulkWriteError, expected: type[StoreError]
) -> None:
    store = MongoStore(_Failing(insert_error=error), clock=FakeClock())
    with pytest.raises(expected, match=r"MongoDB put on .* failed") as raised:
        await store.put(Messages(FakeClock()).many(2))
    assert raised.value.__cause__ is error
    assert_clean(raised.value)


async def test_put_fails_on_write_concern_errors_listed_without_write_errors() -> None:
    """A bulk error whose details have no ``writeErrors`` list at all (PyMongo's always
    has one; a collection of another make may leave it out) still fails the put."""
    error = BulkWriteError({"writeConcernErrors": [{"code": 64, "errmsg": "timed out"}]})
    store = MongoStore(_Failing(insert_error=error), clock=FakeClock())
    with pytest.raises(StoreUnavailable) as raised:
        await store.put(Messages(FakeClock()).many(2))
    assert str(raised.value) == (
        "MongoDB put on db.failing failed: write concern not satisfied (codes 64; BulkWriteError)"
    )
    assert raised.value.__cause__ is error


async def test_requeue_and_purge_count_0_when_the_write_reports_no_count() -> None:
    """A collection whose writes answer without a count: nothing is claimed as done."""
    store = MongoStore(_Failing(), clock=FakeClock())
    assert await store.requeue(["m-1"]) == 0
    assert await store.purge_dead(["m-1"]) == 0
    assert await store.purge_dead() == 0
    await store.close()


async def test_a_bulk_error_of_500_messages_is_short_and_secret_free(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The driver's text for this error quotes every failed document."""
    error = _bulk_error(*([121] * 499), 11000)
    assert len(str(error)) > 100_000 and SECRET in str(error)
    store = MongoStore(_Failing(insert_error=error), clock=FakeClock())
    messages = Messages(FakeClock())
    with caplog.at_level(logging.DEBUG, logger="aioproducer"):
        with pytest.raises(StoreRejected, match="refused 499 of the batch") as raised:
            await store.put([secret_message(messages, body=b"x" * 256) for _ in range(500)])
    assert "121" in str(raised.value)
    assert_clean(raised.value)
    assert SECRET not in caplog.text


# MongoDB: the real driver against nx-27017


async def test_a_document_too_large_is_rejected_through_the_driver(
    mongo_backend: Backend,
) -> None:
    """Over the largest wire message (48 MB), which the driver itself refuses:
    nx-27017 has no document size limit of its own to show the 16 MiB one."""
    store = mongo_backend.make()
    messages = Messages(FakeClock())
    too_big = secret_message(messages, body=SECRET_BODY * (49_000_000 // len(SECRET_BODY)))
    with pytest.raises(StoreRejected, match=r"MongoDB put on .* failed") as raised:
        await store.put([secret_message(messages), too_big])
    assert isinstance(raised.value.__cause__, DocumentTooLarge | BulkWriteError)
    assert_clean(raised.value)


class _Failing:
    """A collection whose operations fail with ``error`` (index creation works)."""

    def __init__(
        self,
        error: Exception | None = None,
        *,
        insert_error: Exception | None = None,
        full_name: str = "db.failing",
    ) -> None:
        self._full_name = full_name
        self.error = error
        self.insert_error = insert_error or error
        #: (ids, ordered) of every insert_many call.
        self.inserts: list[tuple[list[str], bool]] = []

    @property
    def full_name(self) -> str:
        return self._full_name

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
        self.inserts.append(([d["_id"] for d in documents], ordered))
        if self.insert_error is not None:
            raise self.insert_error
        return None

    async def find_one_and_update(
        self,
        filter: Mapping[str, Any],
        update: Any,
        /,
        *,
        sort: Any = None,
        return_document: bool = False,
    ) -> dict[str, Any] | None:
        await self._fail()
        return None

    async def bulk_write(self, requests: Sequence[Any], /, *, ordered: bool = True) -> object:
        await self._fail()
        return None

    async def delete_many(self, filter: Mapping[str, Any], /) -> object:
        await self._fail()
        return None

    async def update_many(self, filter: Mapping[str, Any], update: Mapping[str, Any], /) -> object:
        await self._fail()
        return None

    async def count_documents(self, filter: Mapping[str, Any], /) -> int:
        await self._fail()
        return 0

    async def estimated_document_count(self) -> int:
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
