"""SQLiteStore beyond the shared contract: file modes, old files, the claim's index."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from aioproducer._message import Properties
from aioproducer._stores._sqlite import SQLiteStore

from .backends import FakeClock
from .conftest import Messages

#: The schema the first version of the store wrote.
OLD_SCHEMA = """
CREATE TABLE messages (
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
CREATE INDEX messages_by_timestamp ON messages (timestamp);
INSERT INTO messages VALUES ('old-1', x'0102', '', 'orders', 'application/json', NULL,
                             1699999000.0, 2, 'nack', 0, NULL, 0);
"""


async def test_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        store = SQLiteStore(tmp_path / "spill.db")
        await store.put(Messages(FakeClock()).many(3))
        modes = await asyncio.to_thread(_modes, tmp_path)
        assert modes == {"spill.db": 0o600, "spill.db-wal": 0o600, "spill.db-shm": 0o600}
        await store.close()
    finally:
        os.umask(previous)


def _modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}


async def test_an_existing_files_mode_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "spill.db"
    sqlite3.connect(path).close()
    path.chmod(0o640)
    store = SQLiteStore(path)
    await store.count()
    await store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def _added(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "aioproducer.store" and r.levelno == logging.INFO
    ]


async def test_a_file_of_the_first_schema_opens_and_gains_the_new_columns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aioproducer.store")
    path = tmp_path / "spill.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(OLD_SCHEMA)
    clock = FakeClock()
    store = SQLiteStore(path, clock=clock)
    (old,) = await store.claim("a", limit=10, lease=30.0)
    assert _added(caplog) == [
        f"added column {name} to {path}" for name in ("dead", "lease_token", "properties")
    ]
    assert (old.message_id, old.body, old.attempts, old.last_error, old.dead) == (
        "old-1", b"\x01\x02", 2, "nack", False,
    )  # fmt: skip
    old.dead = True
    await store.release("a", [old])
    assert (await store.backlog()).dead == 1
    await store.close()
    again = SQLiteStore(path, clock=clock)
    assert (await again.backlog()).dead == 1  # and opens again
    await again.close()


async def test_the_claim_never_reads_messages_not_due_yet(tmp_path: Path) -> None:
    """The plan: a search of the claim index bounded by ``due_at``, no table scan
    and no sort; rows not yet due sort after every due one."""
    path = tmp_path / "spill.db"
    store = SQLiteStore(path)
    await store.count()
    await store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        plan = " | ".join(
            row[3]
            for row in db.execute(
                "EXPLAIN QUERY PLAN SELECT rowid FROM messages INDEXED BY messages_claim "
                "WHERE dead = 0 AND due_at <= ? AND lease_until <= ? "
                "ORDER BY due_at, timestamp LIMIT ?",
                (1.0, 1.0, 10),
            )
        )
    db.close()
    assert "USING COVERING INDEX messages_claim (due_at<?)" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


async def test_a_file_from_before_properties_opens_and_keeps_them_from_then_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aioproducer.store")
    """A file of the schema that had dead and lease_token but no properties column."""
    path = tmp_path / "spill.db"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
        db.execute("ALTER TABLE messages ADD COLUMN dead INTEGER NOT NULL DEFAULT 0")
        db.execute("ALTER TABLE messages ADD COLUMN lease_token TEXT")
    db.close()
    clock = FakeClock()
    store = SQLiteStore(path, clock=clock)
    old = await store.get("old-1")
    assert old is not None and (old.body, old.properties) == (b"\x01\x02", None)
    assert _added(caplog) == [f"added column properties to {path}"]
    new = Messages(clock)(properties=Properties(priority=7, reply_to="r", persistent=False))
    await store.put([new])
    await store.close()
    again = SQLiteStore(path, clock=clock)
    got = await again.get(new.message_id)
    assert got is not None and got.properties == new.properties
    await again.close()


async def test_every_connection_writes_durably(
    tmp_path: Path, messages: Messages, caplog: pytest.LogCaptureFixture
) -> None:
    """WAL mode and synchronous=FULL: a write that returned survives a power loss."""
    caplog.set_level(logging.DEBUG, logger="aioproducer.store")
    path = tmp_path / "s.db"
    for _ in range(2):  # the first connection, and one after close() reopens the file
        store = SQLiteStore(path)
        try:
            await store.put([messages()])
            db = await store._conn()
            async with db.execute("PRAGMA journal_mode") as cursor:
                journal = await cursor.fetchone()
            async with db.execute("PRAGMA synchronous") as cursor:
                synchronous = await cursor.fetchone()
        finally:
            await store.close()
        assert journal == ("wal",)
        assert synchronous == (2,)  # FULL
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG] == [
        f"opened {path}"
    ] * 2
    with sqlite3.connect(path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_a_locked_file_is_waited_for_busy_timeout_seconds(tmp_path: Path) -> None:
    """The connection waits ``busy_timeout`` for another writer's lock, then fails."""
    for given, expected_ms in ((None, 10_000), (0.25, 250), (3.0, 3_000)):
        store = (
            SQLiteStore(tmp_path / "s.db")
            if given is None
            else SQLiteStore(tmp_path / "s.db", busy_timeout=given)
        )
        try:
            db = await store._conn()
            async with db.execute("PRAGMA busy_timeout") as cursor:
                assert await cursor.fetchone() == (expected_ms,)
        finally:
            await store.close()
