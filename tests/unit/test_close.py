"""close() is bounded, survives cancellation and a failing store, and loses nothing.

The producer points at a closed local port, so every message is still in memory
when close() runs; the store is a real SQLite file, made to hang or fail here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from aioproducer import Backoff, Message, Producer, ProducerState, SQLiteStore, StoreUnavailable
from aioproducer._fallback import read_messages, write_fallback, write_messages
from tests.waiting import wait_until

NOWHERE = "amqp://guest:guest@127.0.0.1:1/"


class HangingStore(SQLiteStore):
    """A store whose writes never answer, like a database that accepts TCP and goes silent."""

    async def put(self, messages: Sequence[Message]) -> None:
        await asyncio.Event().wait()


class BrokenStore(SQLiteStore):
    """A store that fails with an error it did not translate (a bug in a store)."""

    async def put(self, messages: Sequence[Message]) -> None:
        raise TypeError("value 'secret-body' is not supported")


class DownStore(SQLiteStore):
    async def put(self, messages: Sequence[Message]) -> None:
        raise StoreUnavailable("the database is down")


def unsent_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("aioproducer-unsent-*.jsonl"))


async def started(store: SQLiteStore, folder: Path, count: int) -> tuple[Producer, set[str]]:
    producer = Producer(NOWHERE, store=store, spill_after=3600, fallback_dir=folder)
    await producer.start()
    ids = {await producer.publish({"n": n}) for n in range(count)}
    return producer, ids


async def test_a_cancelled_close_still_stores_everything_before_it_ends(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    producer, ids = await started(store, tmp_path, 50)
    with pytest.raises(TimeoutError):
        # The drain would wait for the broker for seconds: the cancellation cuts it short.
        await asyncio.wait_for(producer.close(timeout=30), 0.05)
    assert producer.stats().state is ProducerState.CLOSED
    assert producer.stats().spilled == 50
    claimed = await store.claim("reader", limit=100, lease=60)
    assert {m.message_id for m in claimed} == ids
    await store.close()


async def test_a_close_cancelled_twice_still_completes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    producer, _ = await started(store, tmp_path, 10)
    task = asyncio.create_task(producer.close(timeout=30))
    await wait_until(lambda: producer.stats().state is ProducerState.CLOSING, what="closing")
    task.cancel()
    await wait_until(producer._abandon_drain.is_set, what="the first cancellation")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert producer.stats().state is ProducerState.CLOSED
    assert await store.count() == 10
    await store.close()


async def test_close_with_a_hung_store_returns_and_writes_the_file(tmp_path: Path) -> None:
    producer, ids = await started(HangingStore(tmp_path / "s.db"), tmp_path, 30)
    # The bound here only keeps a broken close() from hanging the suite.
    await asyncio.wait_for(producer.close(timeout=0.2), 30)
    [path] = unsent_files(tmp_path)
    assert {m.message_id for m in read_messages(path)} == ids
    assert producer.stats().exported == 30
    assert producer.stats().last_error == "store: no answer before the close deadline"


async def test_an_untranslated_store_error_is_survived_and_not_quoted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # One refused connection at start, then none for a minute: the latest error is
    # the store's, whenever its writes fail.
    producer = Producer(
        NOWHERE,
        store=BrokenStore(tmp_path / "s.db"),
        spill_after=0.01,
        fallback_dir=tmp_path,
        reconnect_backoff=Backoff(base=60.0, cap=60.0, jitter=0.0),
    )
    await producer.start()
    await wait_until(lambda: producer.stats().last_error is not None, what="a refused connection")
    ids = {await producer.publish({"n": n}) for n in range(20)}
    await wait_until(lambda: producer.stats().store_errors >= 2, what="failed writes")
    assert producer.stats().buffered == 20
    await asyncio.wait_for(producer.close(timeout=0.2), 30)
    [path] = unsent_files(tmp_path)
    assert {m.message_id for m in read_messages(path)} == ids
    assert producer.stats().last_error == "store: TypeError from the store"
    assert "secret-body" not in caplog.text


async def test_the_file_is_private_and_goes_to_the_temp_folder_if_its_own_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "fallback"
    folder.mkdir()
    spare = tmp_path / "tmp"
    spare.mkdir()
    monkeypatch.setenv("TMPDIR", str(spare))
    monkeypatch.setattr("tempfile.tempdir", None)
    producer, ids = await started(DownStore(tmp_path / "s.db"), folder, 5)
    folder.rmdir()
    with caplog.at_level(logging.ERROR, logger="aioproducer"):
        await producer.close(timeout=0.2)
    [path] = unsent_files(spare)
    assert {m.message_id for m in read_messages(path)} == ids
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "writing 5 messages to" in caplog.text


async def test_close_files_are_never_overwritten(tmp_path: Path) -> None:
    for _ in range(3):
        producer, _ = await started(DownStore(tmp_path / "s.db"), tmp_path, 2)
        await producer.close(timeout=0.1)
    files = unsent_files(tmp_path)
    assert len(files) == 3
    assert all(sum(1 for _ in read_messages(f)) == 2 for f in files)


def test_the_file_is_named_by_owner_utc_time_and_a_random_part_and_never_overwrites(
    tmp_path: Path,
) -> None:
    """docs/guarantees.md: a new file aioproducer-unsent-<owner>-<UTC time>-<random>.jsonl."""
    messages = [
        Message(
            message_id=f"m{n}",
            body=b"x",
            exchange="",
            routing_key="q",
            content_type="application/octet-stream",
            timestamp=1_700_000_000.0,
        )
        for n in range(2)
    ]
    before = time.gmtime()
    paths = [write_fallback(tmp_path, "web-1:812:a1b2c3", messages) for _ in range(3)]
    after = time.gmtime()
    assert len({p for p in paths if p is not None}) == 3
    stamps = {time.strftime("%Y%m%dT%H%M%S", t) for t in (before, after)}
    for path in paths:
        assert path is not None and path.parent == tmp_path
        found = re.fullmatch(
            r"aioproducer-unsent-web-1-812-a1b2c3-(\d{8}T\d{6})-[0-9a-f]{6}\.jsonl", path.name
        )
        assert found is not None, path.name
        assert min(stamps) <= found.group(1) <= max(stamps)
        assert [m.message_id for m in read_messages(path)] == ["m0", "m1"]
    # An existing file is never written over.
    taken = paths[0]
    assert taken is not None
    with pytest.raises(FileExistsError):
        write_messages(taken, messages[:1])
    assert [m.message_id for m in read_messages(taken)] == ["m0", "m1"]
