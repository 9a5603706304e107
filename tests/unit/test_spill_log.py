"""The spiller's lines docs/logging.md lists: each stored batch, failed writes and deletes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from aioproducer import Backoff, StoreUnavailable
from aioproducer._fallback import read_messages
from tests.fakes import FakeStore, Mode, StoreFault, VirtualClockLoop
from tests.unit.test_promises import Rig


def spill_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "aioproducer.spill" and r.levelno == level
    ]


def test_each_stored_batch_and_each_failed_write_is_told(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aioproducer.spill")
    rig = Rig(loop, tmp_path, spill_after=1.0, store_backoff=Backoff(0.5, cap=1.0, jitter=0))
    rig.broker.set_down(took=False)
    rig.store.set_fault(StoreFault.DOWN)
    ids = rig.burst(3)
    loop.drive(within=2.5)
    rig.store.set_fault(StoreFault.UP)
    loop.drive(within=2.0)
    assert set(ids) <= set(rig.store.records)
    owner = rig.producer.owner
    warnings = spill_lines(caplog, logging.WARNING)
    assert warnings[:3] == [
        f"producer {owner}: storing 3 messages failed (the fake store is down); retry in 0.5s",
        f"producer {owner}: storing 3 messages failed (the fake store is down); retry in 1.0s",
        f"producer {owner}: storing 3 messages failed (the fake store is down); retry in 1.0s",
    ]
    [stored] = spill_lines(caplog, logging.DEBUG)
    head, _, listed = stored.partition(": stored 3 messages: ")
    assert head == f"producer {owner}"
    assert sorted(listed.split(" ")) == sorted(ids)
    rig.broker.set_up()
    rig.close()


class DeleteFailingStore(FakeStore):
    async def ack(self, message_ids: Sequence[str]) -> None:
        if message_ids:
            raise StoreUnavailable("the fake store cannot delete")


def test_a_copy_made_redundant_by_its_confirm_is_deleted_or_the_failure_told(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for store in (FakeStore(loop.wall), DeleteFailingStore(loop.wall)):
        caplog.clear()
        rig = Rig(loop, tmp_path, store=store, spill_after=0.5, confirm_timeout=3.0)
        # Stored at 0.5 s while in flight; confirmed at 1 s: the copy is redundant.
        rig.broker.mode, rig.broker.confirm_delay = Mode.SLOW, 1.0
        message_id = rig.publish()
        loop.drive(within=2.0)
        assert rig.stats.confirmed == 1
        warnings = spill_lines(caplog, logging.WARNING)
        if isinstance(store, DeleteFailingStore):
            # Left in the store, it is replayed: a duplicate, never a loss.
            assert message_id in store.records
            assert warnings == [
                f"producer {rig.producer.owner}: deleting 1 confirmed copies failed "
                "(the fake store cannot delete)"
            ]
            assert rig.stats.store_errors == 1
            assert rig.stats.last_error == "store: the fake store cannot delete"
        else:
            assert message_id not in store.records
            assert warnings == []
        rig.broker.mode = Mode.ACK
        rig.close()


def filed_line(rig: Rig, tmp_path: Path, reason: str, count: int) -> str:
    [path] = sorted(tmp_path.glob("aioproducer-unsent-*.jsonl"))
    return (
        f"producer {rig.producer.owner}: store failed on close ({reason}); {count} messages "
        f"written to {path}: import them with 'python -m aioproducer import {path}'"
    )


def test_a_close_with_the_store_down_says_why_it_wrote_a_file(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(loop, tmp_path, spill_after=60.0)
    rig.broker.set_down(took=False)
    rig.burst(2)
    loop.drive(within=0.1)
    rig.store.set_fault(StoreFault.DOWN)
    rig.close()
    assert spill_lines(caplog, logging.ERROR) == [
        filed_line(rig, tmp_path, "the fake store is down", 2)
    ]
    assert rig.stats.last_error == "store: the fake store is down"


def test_a_close_task_cancelled_while_storing_files_the_rest_and_says_so(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As when asyncio.run() ends and cancels every task still running, close's own."""
    rig = Rig(loop, tmp_path, spill_after=60.0)
    rig.broker.set_down(took=False)
    ids = rig.burst(2)
    loop.drive(within=0.1)
    rig.store.set_fault(StoreFault.HANGING)
    closing = loop.create_task(rig.producer.close(30.0))
    # Past the drain (28 s of the 30), while the store does not answer.
    loop.drive(within=29.0)
    closer = rig.producer._closer
    assert closer is not None
    closer.cancel()
    loop.drive(within=1.0)
    assert closing.done() and closer.cancelled()
    assert spill_lines(caplog, logging.ERROR) == [
        filed_line(rig, tmp_path, "close was cancelled", 2)
    ]
    [path] = sorted(tmp_path.glob("aioproducer-unsent-*.jsonl"))
    assert {m.message_id for m in read_messages(path)} == set(ids)
    rig.store.set_fault(StoreFault.UP)


def test_a_close_that_stores_what_is_left_says_how_many(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aioproducer.spill")
    rig = Rig(loop, tmp_path, spill_after=60.0)
    rig.broker.set_down(took=False)
    ids = rig.burst(2)
    loop.drive(within=0.1)
    rig.close()
    assert set(ids) <= set(rig.store.records)
    assert spill_lines(caplog, logging.INFO) == [
        f"producer {rig.producer.owner}: stored 2 messages on close"
    ]


def test_an_outage_reads_as_one_start_and_one_stop_of_spilling(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aioproducer.spill")
    rig = Rig(loop, tmp_path, spill_after=1.0)
    owner = rig.producer.owner
    for count in (3, 2):
        caplog.clear()
        rig.broker.set_down(took=False)
        # Stored half a second apart: one episode while more messages wait their turn.
        for _ in range(count):
            rig.publish()
            loop.drive(within=0.5)
        loop.drive(within=2.0)
        assert spill_lines(caplog, logging.INFO) == [
            f"producer {owner}: spilling to FakeStore(): messages unconfirmed after 1s",
            f"producer {owner}: stopped spilling, {count} stored",
        ]
        rig.broker.set_up()
        loop.drive(within=1.0)
    rig.close()


class SlowDeleteStore(FakeStore):
    """Deleting takes a while, as in a real database; confirms may come in meanwhile."""

    async def ack(self, message_ids: Sequence[str]) -> None:
        if message_ids:
            await asyncio.sleep(0.3)
        await super().ack(message_ids)


def test_copies_made_redundant_while_others_are_deleted_are_deleted_too(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    store = SlowDeleteStore(loop.wall)
    rig = Rig(loop, tmp_path, store=store, spill_after=0.5, confirm_timeout=3.0)
    # Copies stored at 0.5 and 0.7 s while in flight; confirmed at 1.0 and 1.2 s, the
    # second while the first copy is being deleted.
    rig.broker.mode, rig.broker.confirm_delay = Mode.SLOW, 1.0
    first = rig.publish()
    loop.drive(within=0.2)
    second = rig.publish()
    loop.drive(within=2.0)
    assert rig.stats.confirmed == 2
    assert not {first, second} & set(store.records)
    # And the spiller still works: a message unconfirmed past spill_after is stored.
    rig.broker.set_down(took=False)
    third = rig.publish()
    loop.drive(within=1.0)
    assert third in store.records
    rig.broker.mode = Mode.ACK
    rig.broker.set_up()
    rig.close()


def test_after_a_store_write_works_the_store_backoff_starts_again(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(loop, tmp_path, spill_after=1.0, store_backoff=Backoff(0.5, cap=4.0, jitter=0))
    rig.broker.set_down(took=False)
    delays = []
    for _ in range(2):
        caplog.clear()
        rig.store.set_fault(StoreFault.DOWN)
        rig.publish()
        loop.drive(within=3.0)
        rig.store.set_fault(StoreFault.UP)
        loop.drive(within=4.0)
        assert rig.stats.buffered == 0
        delays.append([line.rpartition(" ")[2] for line in spill_lines(caplog, logging.WARNING)])
    assert delays == [["0.5s", "1.0s", "2.0s"]] * 2
    rig.broker.set_up()
    rig.close()
