"""SQLiteStore: the embedded store, one file, safe for several processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import aiosqlite

from .._exceptions import StoreError, StoreRejected, StoreUnavailable
from .._message import (
    Message,
    decode_headers,
    decode_properties,
    encode_headers,
    encode_properties,
)
from ._base import Backlog, KeyCount
from ._errors import short, translating

log = logging.getLogger("aioproducer.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    message_id   TEXT PRIMARY KEY,
    body         BLOB NOT NULL,
    exchange     TEXT NOT NULL,
    routing_key  TEXT NOT NULL,
    content_type TEXT NOT NULL,
    headers      TEXT,
    timestamp    REAL NOT NULL,
    attempts     INTEGER NOT NULL,
    last_error   TEXT,
    due_at       REAL NOT NULL,
    lease_owner  TEXT,
    lease_until  REAL NOT NULL DEFAULT 0,
    dead         INTEGER NOT NULL DEFAULT 0,
    lease_token  TEXT,
    properties   TEXT
);
"""

#: Columns added since the first schema, as ``ALTER TABLE ... ADD COLUMN`` clauses:
#: a file written by an older version gains them when it is opened.
_ADDED_COLUMNS = {
    "dead": "dead INTEGER NOT NULL DEFAULT 0",
    "lease_token": "lease_token TEXT",
    "properties": "properties TEXT",
}

#: The claim walks this index in claim order from the first message and stops after
#: ``limit`` matches: messages not due yet sort after every due one and are never
#: read, dead ones are not in it, and leases are checked from the index alone.
_INDEXES = """
DROP INDEX IF EXISTS messages_by_timestamp;
CREATE INDEX IF NOT EXISTS messages_claim
    ON messages (due_at, timestamp, lease_until, dead) WHERE dead = 0;
"""

_COLUMNS = (
    "message_id, body, exchange, routing_key, content_type, headers, "
    "timestamp, attempts, last_error, due_at, dead, properties"
)

_CLAIM = f"""
UPDATE messages SET lease_owner = ?, lease_until = ?, lease_token = ?
WHERE rowid IN (
    SELECT rowid FROM messages INDEXED BY messages_claim
    WHERE dead = 0 AND due_at <= ? AND lease_until <= ?
    ORDER BY due_at, timestamp LIMIT ?
)
RETURNING {_COLUMNS}
"""

_BACKLOG = """
SELECT COUNT(*),
       COALESCE(SUM(dead != 0), 0),
       COALESCE(SUM(dead = 0 AND lease_until > :now), 0),
       COALESCE(SUM(dead = 0 AND lease_until <= :now AND due_at > :now), 0),
       MIN(timestamp)
FROM messages
"""


class SQLiteStore:
    """Messages kept in one SQLite file (WAL mode, synchronous writes).

    Several producers, in one process or several, may share the file: claims are
    single ``UPDATE ... RETURNING`` statements, which SQLite runs atomically under
    its write lock. The file, and its ``-wal`` and ``-shm`` companions, are readable
    by their owner only (mode 0600) when the store creates them: they hold message
    bodies. ``clock`` gives wall-clock seconds (injected in tests).
    """

    #: SQLite's default ``SQLITE_MAX_LENGTH`` (10**9 bytes, which bounds a whole row),
    #: less room for the rest of the row: ids, names, the error text, properties (short
    #: strings, at most six times their size as escaped JSON) and headers (at most
    #: 64 KiB on the AMQP wire, at most six times that as escaped JSON).
    max_body_size = 1_000_000_000 - 512 * 1024

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = os.fspath(path)
        self._busy_timeout = busy_timeout
        self._clock = clock
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    async def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            # Checked first: aiosqlite's failed connect leaves a thread behind.
            await asyncio.to_thread(_create_private, self.path)
            db = await aiosqlite.connect(self.path, timeout=self._busy_timeout)
            try:
                await db.execute("PRAGMA journal_mode=WAL")
                await db.execute("PRAGMA synchronous=FULL")
                await db.executescript(_SCHEMA)
                async with db.execute("PRAGMA table_info(messages)") as cursor:
                    present = {row[1] for row in await cursor.fetchall()}
                for name, clause in _ADDED_COLUMNS.items():
                    if name not in present:
                        await db.execute(f"ALTER TABLE messages ADD COLUMN {clause}")
                        log.info("added column %s to %s", name, self.path)
                await db.executescript(_INDEXES)
                await db.commit()
            except BaseException:
                await db.close()
                raise
            self._db = db
            log.debug("opened %s", self.path)
        return self._db

    @contextlib.asynccontextmanager
    async def _transaction(self, operation: str) -> AsyncIterator[aiosqlite.Connection]:
        """One operation at a time on the shared connection, committed at the end.

        Every exception becomes a :class:`StoreError` naming ``operation``.
        """
        with translating(operation, self._translate):
            async with self._lock:
                db = await self._conn()
                try:
                    yield db
                    await db.commit()
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        await db.rollback()
                    raise

    def _translate(self, exc: Exception, operation: str) -> StoreError:
        """The StoreError for ``exc``: its class and SQLite's code, never a value."""
        where = f"SQLite {operation} on {short(self.path, 120)} failed"
        if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError | sqlite3.InterfaceError):
            return StoreRejected(f"{where}: refused: {_describe(exc)}")
        if isinstance(exc, UnicodeError | OverflowError):
            # Their text quotes the value: name the class only.
            return StoreRejected(f"{where}: refused: {type(exc).__name__}")
        if isinstance(exc, sqlite3.Error | OSError):
            return StoreUnavailable(f"{where}: unavailable: {_describe(exc)}")
        return StoreError(f"{where}: {type(exc).__name__}")

    async def put(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        async with self._transaction("put") as db:
            rows = [
                (
                    m.message_id,
                    m.body,
                    m.exchange,
                    m.routing_key,
                    m.content_type,
                    encode_headers(m.headers),
                    m.timestamp,
                    m.attempts,
                    m.last_error,
                    m.due_at,
                    int(m.dead),
                    encode_properties(m.properties),
                )
                for m in messages
            ]
            await db.executemany(
                f"INSERT INTO messages ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT (message_id) DO UPDATE SET "
                "attempts = MAX(messages.attempts, excluded.attempts), "
                "last_error = excluded.last_error, due_at = excluded.due_at, "
                "dead = MAX(messages.dead, excluded.dead) "
                "WHERE excluded.attempts > messages.attempts OR excluded.dead > messages.dead",
                rows,
            )

    async def claim(self, owner: str, *, limit: int, lease: float) -> list[Message]:
        """Lease up to ``limit`` due messages to ``owner``: earliest due first, then
        oldest accepted. Messages not due yet are never read."""
        if limit <= 0:
            return []
        now = self._clock()
        token = uuid.uuid4().hex
        async with self._transaction("claim") as db:
            args = (owner, now + lease, token, now, now, limit)
            async with db.execute(_CLAIM, args) as cursor:
                rows = await cursor.fetchall()
            messages = [_from_row(row, token) for row in rows]
        messages.sort(key=lambda m: (m.due_at, m.timestamp))
        return messages

    async def ack(self, message_ids: Sequence[str]) -> None:
        if not message_ids:
            return
        async with self._transaction("ack") as db:
            await db.executemany(
                "DELETE FROM messages WHERE message_id = ?", [(i,) for i in message_ids]
            )

    async def release(self, owner: str, messages: Sequence[Message]) -> None:
        if not messages:
            return
        async with self._transaction("release") as db:
            rows = [
                (
                    m.attempts,
                    m.last_error,
                    m.due_at,
                    int(m.dead),
                    m.message_id,
                    owner,
                    m.lease_token,
                )
                for m in messages
                if m.lease_token is not None
            ]
            await db.executemany(
                "UPDATE messages SET attempts = MAX(attempts, ?), last_error = ?, due_at = ?, "
                "dead = MAX(dead, ?), "
                "lease_owner = NULL, lease_until = 0, lease_token = NULL "
                "WHERE message_id = ? AND lease_owner = ? AND lease_token = ?",
                rows,
            )

    async def count(self) -> int:
        async with self._transaction("count") as db:
            async with db.execute("SELECT COUNT(*) FROM messages") as cursor:
                row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    async def backlog(self) -> Backlog:
        now = self._clock()
        async with self._transaction("backlog") as db:
            async with db.execute(_BACKLOG, {"now": now}) as cursor:
                row = await cursor.fetchone()
        assert row is not None
        total, dead, leased, held, oldest = row
        return Backlog(
            total=total,
            due=total - dead - leased - held,
            leased=leased,
            held=held,
            dead=dead,
            oldest=oldest,
        )

    async def scan(self, *, dead: bool | None = None, batch: int = 500) -> AsyncIterator[Message]:
        where = "" if dead is None else f"AND dead = {int(dead)} "
        last = ""
        while True:
            async with self._transaction("scan") as db:
                async with db.execute(
                    f"SELECT {_COLUMNS} FROM messages WHERE message_id > ? {where}"
                    "ORDER BY message_id LIMIT ?",
                    (last, batch),
                ) as cursor:
                    rows = list(await cursor.fetchall())
            for row in rows:
                yield _from_row(row, None)
            if len(rows) < batch:
                return
            last = rows[-1][0]

    async def get(self, message_id: str) -> Message | None:
        async with self._transaction("get") as db:
            async with db.execute(
                f"SELECT {_COLUMNS} FROM messages WHERE message_id = ?", (message_id,)
            ) as cursor:
                row = await cursor.fetchone()
        return None if row is None else _from_row(row, None)

    async def by_key(self) -> list[KeyCount]:
        async with self._transaction("by_key") as db:
            async with db.execute(
                "SELECT exchange, routing_key, COUNT(*), COALESCE(SUM(dead != 0), 0) "
                "FROM messages GROUP BY exchange, routing_key "
                "ORDER BY COUNT(*) DESC, exchange, routing_key"
            ) as cursor:
                rows = await cursor.fetchall()
        return [KeyCount(e, k, total, dead) for e, k, total, dead in rows]

    async def requeue(
        self,
        message_ids: Sequence[str],
        *,
        exchange: str | None = None,
        routing_key: str | None = None,
    ) -> int:
        if not message_ids:
            return 0
        now = self._clock()
        async with self._transaction("requeue") as db:
            changed = 0
            for message_id in message_ids:
                cursor = await db.execute(
                    "UPDATE messages SET dead = 0, attempts = 0, due_at = ?, "
                    "exchange = COALESCE(?, exchange), routing_key = COALESCE(?, routing_key), "
                    "lease_owner = NULL, lease_until = 0, lease_token = NULL "
                    "WHERE message_id = ? AND dead != 0",
                    (now, exchange, routing_key, message_id),
                )
                changed += max(0, cursor.rowcount)
                await cursor.close()
        return changed

    async def purge_dead(self, message_ids: Sequence[str] | None = None) -> int:
        async with self._transaction("purge_dead") as db:
            if message_ids is None:
                cursor = await db.execute("DELETE FROM messages WHERE dead != 0")
                changed = max(0, cursor.rowcount)
                await cursor.close()
                return changed
            changed = 0
            for message_id in message_ids:
                cursor = await db.execute(
                    "DELETE FROM messages WHERE message_id = ? AND dead != 0", (message_id,)
                )
                changed += max(0, cursor.rowcount)
                await cursor.close()
            return changed

    async def close(self) -> None:
        async with self._lock:
            db, self._db = self._db, None
            if db is not None:
                with translating("close", self._translate):
                    await db.close()


def _create_private(path: str) -> None:
    """Create the database file readable by its owner only, unless it exists.

    SQLite gives the ``-wal`` and ``-shm`` files the mode of the database file.
    Raises FileNotFoundError when the directory is missing.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no directory {folder!r} for the SQLite store")
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _describe(exc: BaseException) -> str:
    """Class, SQLite error code and the first words of the message of ``exc``."""
    name = type(exc).__name__
    code = getattr(exc, "sqlite_errorname", None)
    if code:
        name = f"{name} {code}"
    text = str(exc)
    return f"{name}: {short(text, 100)}" if text else name


def _from_row(row: Any, token: str | None) -> Message:
    (
        message_id,
        body,
        exchange,
        routing_key,
        content_type,
        headers,
        timestamp,
        attempts,
        last_error,
        due_at,
        dead,
        properties,
    ) = row
    return Message(
        message_id=message_id,
        body=bytes(body),
        exchange=exchange,
        routing_key=routing_key,
        content_type=content_type,
        headers=decode_headers(headers),
        timestamp=timestamp,
        attempts=attempts,
        last_error=last_error,
        due_at=due_at,
        dead=bool(dead),
        lease_token=token,
        properties=decode_properties(properties),
    )
