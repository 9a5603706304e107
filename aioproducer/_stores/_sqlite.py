"""SQLiteStore: the embedded store, one file, safe for several processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import aiosqlite

from .._exceptions import StoreError
from .._message import Message, decode_headers, encode_headers

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
    lease_until  REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_by_timestamp ON messages (timestamp);
"""

_COLUMNS = (
    "message_id, body, exchange, routing_key, content_type, headers, "
    "timestamp, attempts, last_error, due_at"
)

_CLAIM = f"""
UPDATE messages SET lease_owner = ?, lease_until = ?
WHERE message_id IN (
    SELECT message_id FROM messages
    WHERE due_at <= ? AND lease_until <= ?
    ORDER BY timestamp LIMIT ?
)
RETURNING {_COLUMNS}
"""


class SQLiteStore:
    """Messages kept in one SQLite file (WAL mode, synchronous writes).

    Several producers, in one process or several, may share the file: claims are
    single ``UPDATE ... RETURNING`` statements, which SQLite runs atomically under
    its write lock. ``clock`` gives wall-clock seconds (injected in tests).
    """

    #: SQLite's default ``SQLITE_MAX_LENGTH`` (10**9 bytes a value), less a margin.
    max_body_size = 1_000_000_000 - 256 * 1024

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
            folder = os.path.dirname(os.path.abspath(self.path))  # noqa: ASYNC240 (no I/O)
            if not await asyncio.to_thread(os.path.isdir, folder):
                # Checked here: aiosqlite's failed connect leaves a thread behind.
                raise FileNotFoundError(f"no directory {folder!r} for the SQLite store")
            db = await aiosqlite.connect(self.path, timeout=self._busy_timeout)
            try:
                await db.execute("PRAGMA journal_mode=WAL")
                await db.execute("PRAGMA synchronous=FULL")
                await db.executescript(_SCHEMA)
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

        sqlite3 and OS errors become :class:`StoreError` naming ``operation``.
        """
        async with self._lock:
            try:
                db = await self._conn()
                try:
                    yield db
                    await db.commit()
                except BaseException:
                    await db.rollback()
                    raise
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"SQLite {operation} on {self.path} failed: {exc}") from exc

    async def put(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
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
            )
            for m in messages
        ]
        async with self._transaction("put") as db:
            await db.executemany(
                f"INSERT OR IGNORE INTO messages ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", rows
            )

    async def claim(self, owner: str, *, limit: int, lease: float) -> list[Message]:
        now = self._clock()
        async with self._transaction("claim") as db:
            async with db.execute(_CLAIM, (owner, now + lease, now, now, limit)) as cursor:
                rows = await cursor.fetchall()
        messages = [_from_row(row) for row in rows]
        messages.sort(key=lambda m: m.timestamp)
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
        rows = [(m.attempts, m.last_error, m.due_at, m.message_id, owner) for m in messages]
        async with self._transaction("release") as db:
            await db.executemany(
                "UPDATE messages SET attempts = ?, last_error = ?, due_at = ?, "
                "lease_owner = NULL, lease_until = 0 "
                "WHERE message_id = ? AND lease_owner = ?",
                rows,
            )

    async def count(self) -> int:
        async with self._transaction("count") as db:
            async with db.execute("SELECT COUNT(*) FROM messages") as cursor:
                row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    async def close(self) -> None:
        async with self._lock:
            db, self._db = self._db, None
            if db is not None:
                await db.close()


def _from_row(row: Any) -> Message:
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
    )
