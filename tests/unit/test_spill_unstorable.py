"""A message the store refused: kept in memory, not offered again, filed on close; and close()."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from aioproducer import Backoff, Message, StoreRejected, StoreUnavailable
from aioproducer._buffer import Buffer
from aioproducer._fallback import read_messages
from aioproducer._producer import CLOSE_MARGIN, STORE_ON_CLOSE
from tests.fakes import FakeStore, StoreFault, VirtualClockLoop
from tests.unit.test_promises import Rig


def refused_then_dead() -> tuple[Buffer, Message]:
    buffer = Buffer(capacity=4, high_water=4)
    message = Message("m", b"x", "", "q", "text/plain", timestamp=1_000.0, deadline=1.0)
    buffer.add(message)
    [taken] = buffer.take_for_spill(now=5.0, limit=10)
    message.unstorable = True
    buffer.unspill([taken])
    [sent] = buffer.take(now=5.0, limit=10)
    # Its last attempt failed: it is kept for the store only.
    sent.dead = True
    buffer.hold(sent, not_before=6.0)
    return buffer, message


def test_a_dead_message_the_store_refused_is_not_offered_again() -> None:
    buffer, _ = refused_then_dead()
    assert buffer.take_for_spill(now=10.0, limit=10) == []
    assert buffer.held == 1


def test_it_still_goes_to_the_final_store_on_close() -> None:
    buffer, message = refused_then_dead()
    assert buffer.take_all() == [message]


# -- the whole producer: the refused message found by halves, kept, then filed on close ---


class PutRecordingStore(FakeStore):
    """Notes the ids of every batch offered to the store, refused or not."""

    puts: list[list[str]]

    async def put(self, messages: Sequence[Message]) -> None:
        self.puts.append([m.message_id for m in messages])
        await super().put(messages)


def refusing_rig(loop: VirtualClockLoop, tmp_path: Path) -> tuple[Rig, PutRecordingStore]:
    store = PutRecordingStore(loop.wall)
    store.puts = []
    rig = Rig(
        loop,
        tmp_path,
        store=store,
        spill_after=1.0,
        store_backoff=Backoff(0.5, cap=0.5, jitter=0),
        retry_backoff=Backoff(0.5, cap=0.5, jitter=0),
    )
    rig.broker.set_down(took=False)
    return rig, store


def test_the_refused_message_is_isolated_by_halves_and_the_rest_is_stored(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aioproducer.spill")
    rig, store = refusing_rig(loop, tmp_path)
    ids = rig.burst(8)
    culprit = store.reject = ids[5]
    loop.drive(within=3.0)
    # 8 refused; 0-3 stored; 4-7 refused; 4-5 refused; 4 stored; 5 refused alone; 6-7 stored.
    assert store.puts == [ids, ids[:4], ids[4:], ids[4:6], [ids[4]], [culprit], ids[6:]]
    assert set(store.records) == set(ids) - {culprit}
    stats = rig.stats
    assert (stats.unstorable, stats.spilled, stats.buffered) == (1, 7, 1)
    assert stats.store_ok
    refused = [
        r for r in caplog.records if r.name == "aioproducer.spill" and r.levelno == logging.ERROR
    ]
    assert [r.getMessage() for r in refused] == [
        f"producer {rig.producer.owner}: the store refused message {culprit} "
        "(store refused it: the fake store refuses this message); it stays in memory "
        "and goes to the fallback file on close"
    ]
    # Kept in memory, it is not offered to the store again.
    loop.drive(within=5.0)
    assert culprit not in {i for batch in store.puts[7:] for i in batch}
    assert rig.stats.buffered == 1
    # On close only it goes to the file, with why the store would not take it.
    rig.close()
    [path] = sorted(tmp_path.glob("aioproducer-unsent-*.jsonl"))
    [filed] = read_messages(path)
    assert filed.message_id == culprit
    assert filed.last_error == "store refused it: the fake store refuses this message"
    assert rig.stats.exported == 1
    assert (
        f"producer {rig.producer.owner}: store failed on close (the store refused them); "
        f"1 messages written to {path}: import them with 'python -m aioproducer import {path}'"
    ) in [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]


def test_the_refused_message_is_published_again_once_the_broker_is_back(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig, store = refusing_rig(loop, tmp_path)
    ids = rig.burst(3)
    store.reject = ids[1]
    loop.drive(within=3.0)
    assert rig.stats.unstorable == 1
    rig.broker.set_up()
    loop.drive(within=3.0)
    assert ids[1] in rig.delivered()
    assert rig.stats.buffered == 0
    rig.close()
    assert not list(tmp_path.glob("aioproducer-unsent-*.jsonl"))


def test_messages_neither_stored_nor_filed_on_close_are_told_at_critical(
    loop: VirtualClockLoop,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = tmp_path / "fallback"
    folder.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "no-such-folder"))
    rig, store = refusing_rig(loop, folder)
    ids = rig.burst(2)
    store.reject = ids[0]
    loop.drive(within=3.0)
    folder.rmdir()
    rig.close()
    assert rig.stats.exported == 0
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert critical == [
        f"producer {rig.producer.owner}: 1 messages could be neither stored "
        "(the store refused them) nor written to a file"
    ]


class WordyStore(FakeStore):
    """Refuses the message it names with a long text, as a store's own error may be."""

    async def put(self, messages: Sequence[Message]) -> None:
        if any(m.message_id == self.reject for m in messages):
            raise StoreRejected("why " * 100)
        await super().put(messages)


def test_the_reason_a_refused_message_keeps_is_cut_to_300_characters(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    store = WordyStore(loop.wall)
    rig = Rig(loop, tmp_path, store=store, spill_after=1.0)
    rig.broker.set_down(took=False)
    store.reject = rig.publish()
    loop.drive(within=2.0)
    rig.close()
    [path] = sorted(tmp_path.glob("aioproducer-unsent-*.jsonl"))
    [filed] = read_messages(path)
    assert filed.last_error == f"store refused it: {'why ' * 100}"[:300]


def test_a_close_with_a_hung_store_keeps_its_bound_and_says_why_it_wrote_a_file(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(loop, tmp_path, spill_after=60.0)
    rig.broker.set_down(took=False)
    ids = rig.burst(3)
    loop.drive(within=0.1)
    rig.store.set_fault(StoreFault.HANGING)
    started = loop.time()
    loop.run(rig.producer.close(0.4), within=10.0)
    # The store gets at least STORE_ON_CLOSE; close() returns within its bound.
    assert STORE_ON_CLOSE <= loop.time() - started <= 0.4 + CLOSE_MARGIN
    [path] = sorted(tmp_path.glob("aioproducer-unsent-*.jsonl"))
    assert {m.message_id for m in read_messages(path)} == set(ids)
    assert (
        f"producer {rig.producer.owner}: store failed on close (no answer before the close "
        f"deadline); 3 messages written to {path}: import them with "
        f"'python -m aioproducer import {path}'"
    ) in [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    rig.store.set_fault(StoreFault.UP)


class RefusingThenHangingStore(FakeStore):
    """Refuses the message it names; any write without it never answers."""

    async def put(self, messages: Sequence[Message]) -> None:
        if any(m.message_id == self.reject for m in messages):
            raise StoreRejected("the fake store refuses this message")
        await asyncio.Event().wait()


def test_a_close_that_runs_out_of_time_after_a_refusal_says_it_ran_out_of_time(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RefusingThenHangingStore(loop.wall)
    rig = Rig(loop, tmp_path, store=store, spill_after=60.0)
    rig.broker.set_down(took=False)
    ids = rig.burst(2)
    store.reject = ids[0]
    loop.drive(within=0.1)
    rig.close()
    [path] = sorted(tmp_path.glob("aioproducer-unsent-*.jsonl"))
    assert {m.message_id for m in read_messages(path)} == set(ids)
    assert (
        f"producer {rig.producer.owner}: store failed on close (no answer before the close "
        f"deadline); 2 messages written to {path}: import them with "
        f"'python -m aioproducer import {path}'"
    ) in [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]


class RefusingThenFailingStore(FakeStore):
    """Refuses ``reject``; a write of ``failing`` alone fails (or hangs) while ``down_alone``."""

    failing = ""
    down_alone = True
    hang = False

    async def put(self, messages: Sequence[Message]) -> None:
        ids = {m.message_id for m in messages}
        if ids == {self.failing} and self.down_alone:
            if self.hang:
                await asyncio.Event().wait()
            raise StoreUnavailable("the fake store is down")
        if self.reject in ids or (self.failing in ids and len(ids) > 1 and self.down_alone):
            raise StoreRejected("the fake store refuses this message")
        await super().put(messages)


def test_a_write_failing_half_way_keeps_what_was_stored_and_refused_and_retries_the_rest(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RefusingThenFailingStore(loop.wall)
    rig = Rig(
        loop, tmp_path, store=store, spill_after=1.0, store_backoff=Backoff(0.5, cap=0.5, jitter=0)
    )
    rig.broker.set_down(took=False)
    a, refused, c, failing = (f"{n}" * 32 for n in range(4))
    store.reject, store.failing = refused, failing
    for message_id in (a, refused, c, failing):
        rig.publish(message_id=message_id)
    # Halves: [a, refused] -> a stored, refused refused; [c, failing] -> c stored, then
    # the store fails on the last one: what was stored and refused so far is settled.
    caplog.set_level(logging.WARNING, logger="aioproducer.spill")
    loop.drive(within=1.2)
    assert set(store.records) == {a, c}
    stats = rig.stats
    assert (stats.spilled, stats.unstorable, stats.buffered) == (2, 1, 2)
    assert (
        f"producer {rig.producer.owner}: storing 1 messages failed (the fake store is down); "
        "retry in 0.5s"
    ) in [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    store.down_alone = False
    loop.drive(within=2.0)
    assert set(store.records) == {a, c, failing}
    assert (rig.stats.spilled, rig.stats.buffered) == (3, 1)
    rig.close()
    [path] = sorted(tmp_path.glob("aioproducer-unsent-*.jsonl"))
    assert [m.message_id for m in read_messages(path)] == [refused]


def test_a_write_cut_by_close_half_way_keeps_what_was_stored_and_files_the_rest(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    store = RefusingThenFailingStore(loop.wall)
    store.hang = True
    rig = Rig(loop, tmp_path, store=store, spill_after=1.0)
    rig.broker.set_down(took=False)
    a, refused, c, hanging = (f"{n}" * 32 for n in range(4))
    store.reject, store.failing = refused, hanging
    for message_id in (a, refused, c, hanging):
        rig.publish(message_id=message_id)
    # a and c stored, refused refused, and the write of the last one never answers...
    loop.drive(within=1.2)
    assert set(store.records) == {a, c}
    # ...when close stops the spiller: the messages it had are stored or go to the file.
    rig.close()
    stats = rig.stats
    assert (stats.spilled, stats.unstorable, stats.exported) == (2, 1, 2)
    [path] = sorted(tmp_path.glob("aioproducer-unsent-*.jsonl"))
    assert {m.message_id for m in read_messages(path)} == {refused, hanging}
