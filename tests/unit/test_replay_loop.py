"""The replay loop: what it tells, how it backs off, how it settles and hands back."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from aioproducer import Backoff, Message, StoreUnavailable
from aioproducer._link import Outcome, Result
from aioproducer._producer import CLOSE_MARGIN
from tests.fakes import FakeStore, Mode, StoreFault, VirtualClockLoop
from tests.fakes import _release_one as release_one
from tests.unit.test_promises import Rig, gaps


def outage(rig: Rig, loop: VirtualClockLoop, count: int) -> list[str]:
    """The broker gone while ``count`` messages are published: all of them are stored."""
    rig.broker.set_down(took=False)
    ids = rig.burst(count)
    loop.drive(within=2.0)
    store = rig.producer.store
    assert isinstance(store, FakeStore)
    assert set(ids) <= set(store.records)
    return ids


def test_each_replay_is_told_with_its_own_count(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aioproducer.replay")
    rig = Rig(loop, tmp_path, spill_after=0.5, replay_interval=0.05, replay_batch=1)
    first = outage(rig, loop, 3)
    rig.broker.set_up()
    loop.drive(within=2.0)
    second = outage(rig, loop, 2)
    rig.broker.set_up()
    loop.drive(within=2.0)
    # A long one: a confirm a second, one message a batch.
    third = outage(rig, loop, 13)
    rig.broker.mode, rig.broker.confirm_delay = Mode.SLOW, 1.0
    rig.broker.set_up()
    loop.drive(within=20.0)
    assert set(rig.delivered()) == {*first, *second, *third}
    rig.close()
    owner = rig.producer.owner
    info = [
        r.getMessage()
        for r in caplog.records
        if r.name == "aioproducer.replay" and r.levelno == logging.INFO
    ]
    assert info == [
        f"producer {owner}: replaying stored messages",
        f"producer {owner}: replay done, 3 confirmed",
        f"producer {owner}: replaying stored messages",
        f"producer {owner}: replay done, 2 confirmed",
        f"producer {owner}: replaying stored messages",
        f"producer {owner}: replaying, 10 confirmed so far",
        f"producer {owner}: replay done, 13 confirmed",
    ]
    debug = [
        r.getMessage()
        for r in caplog.records
        if r.name == "aioproducer.replay" and r.levelno == logging.DEBUG
    ]
    for message_id in [*first, *second, *third]:
        assert f"producer {owner}: replayed and confirmed {message_id}" in debug
    batches = [
        line
        for line in debug
        if re.fullmatch(rf"producer {owner}: replaying \d+ stored messages", line)
    ]
    assert batches == [f"producer {owner}: replaying 1 stored messages"] * 18


class ClaimRecordingStore(FakeStore):
    claims: list[float]

    async def claim(self, owner: str, *, limit: int, lease: float) -> list[Message]:
        self.claims.append(asyncio.get_running_loop().time())
        return await super().claim(owner, limit=limit, lease=lease)


def test_a_failing_claim_is_retried_on_the_store_backoff_schedule_and_told(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ClaimRecordingStore(loop.wall)
    store.claims = []
    # Down from the start, then down again after working for a while.
    store.set_fault(StoreFault.DOWN)
    rig = Rig(
        loop,
        tmp_path,
        store=store,
        replay_interval=0.25,
        store_backoff=Backoff(0.5, cap=2.0, jitter=0),
    )
    for again in (False, True):
        # Down: claims back off 0.5 s doubling to the cap, from the start each time.
        if again:
            store.set_fault(StoreFault.DOWN)
            store.claims.clear()
        loop.drive(within=6.0)
        assert gaps(store.claims) == [0.5, 1.0, 2.0, 2.0]
        assert not rig.stats.store_ok
        assert rig.stats.last_error == "store: the fake store is down"
        # Back: once the pending pause ends, one look every replay_interval.
        store.set_fault(StoreFault.UP)
        store.claims.clear()
        loop.drive(within=4.0)
        assert len(store.claims) >= 5
        assert set(gaps(store.claims)) == {0.25}
    rig.close()
    owner = rig.producer.owner
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "aioproducer.replay" and r.levelno == logging.WARNING
    ]
    assert f"producer {owner}: claim failed (the fake store is down); retry in 0.5s" in warnings
    assert f"producer {owner}: claim failed (the fake store is down); retry in 2.0s" in warnings


class AckFailingStore(ClaimRecordingStore):
    """Claims work; deleting confirmed messages fails while ``ack_down`` is set."""

    ack_down = False
    acks: list[float]

    async def ack(self, message_ids: Sequence[str]) -> None:
        if self.ack_down and message_ids:
            self.acks.append(asyncio.get_running_loop().time())
            raise StoreUnavailable("the fake store cannot delete")
        await super().ack(message_ids)


def test_settling_a_replay_is_tried_five_times_then_left_to_the_leases(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = AckFailingStore(loop.wall)
    store.claims, store.acks = [], []
    rig = Rig(
        loop,
        tmp_path,
        store=store,
        spill_after=0.5,
        lease=30.0,
        replay_interval=0.05,
        store_backoff=Backoff(0.5, cap=2.0, jitter=0),
    )
    ids = outage(rig, loop, 3)
    store.ack_down = True
    rig.broker.poison[ids[2]] = Mode.NACK
    rig.broker.set_up()
    loop.drive(within=10.0)
    # Two confirmed, one nacked, but all still stored: five tries to delete the two
    # (and release the third), with the store backoff between them.
    assert gaps(store.acks) == [0.5, 1.0, 2.0, 2.0]
    assert set(ids) <= set(store.records)
    assert rig.stats.store_errors == 5
    assert rig.stats.last_error == "store: the fake store cannot delete"
    owner = rig.producer.owner
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "aioproducer.replay"]
    failed = (
        logging.WARNING,
        f"producer {owner}: settling 3 replayed messages in the store failed "
        "(the fake store cannot delete)",
    )
    assert lines.count(failed) == 5
    assert (
        logging.ERROR,
        f"producer {owner}: could not settle replayed messages; leases will expire",
    ) in lines
    # Once the leases expire they are replayed again, and deleted this time.
    store.ack_down = False
    del rig.broker.poison[ids[2]]
    loop.drive(within=30.0)
    assert not set(ids) & set(store.records)
    assert rig.delivered().count(ids[0]) == 2
    rig.close()


def test_a_replay_cut_by_close_deletes_what_was_confirmed_and_hands_back_the_rest(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path, spill_after=0.5, lease=60.0, replay_batch=10)
    ids = outage(rig, loop, 4)
    # Back, but confirming nothing by itself: the replay of all four waits.
    rig.broker.mode, rig.broker.confirm_delay = Mode.SLOW, None
    rig.broker.set_up()
    loop.drive(within=0.5)
    assert len(rig.broker.pending) == 4
    assert {r.lease_owner for r in rig.store.records.values()} == {rig.producer.owner}
    confirmed = rig.broker.pending[0].message.message_id
    release_one(rig.broker, rig.broker.pending[0])
    loop.drive()
    closed_at = loop.wall()
    rig.close()
    assert set(rig.store.records) == set(ids) - {confirmed}
    for record in rig.store.records.values():
        # Handed back, due at once: not left to wait out a 60 s lease.
        assert record.lease_owner is None
        assert record.message.due_at <= closed_at


def test_a_replay_caught_by_lost_connections_pauses_on_the_reconnect_backoff(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(
        loop,
        tmp_path,
        spill_after=0.5,
        replay_interval=0.05,
        reconnect_backoff=Backoff(1.0, cap=8.0, jitter=0),
        retry_backoff=Backoff(30.0, cap=30.0, jitter=0),
    )

    def replay_losing(message_id: str, losses: int) -> list[float]:
        """Replay ``message_id``, dropping the connection under it ``losses`` times."""
        rig.broker.mode, rig.broker.confirm_delay = Mode.SLOW, None

        def replays() -> list[float]:
            return [t for t, i, channel in rig.producer.publishes if i == message_id]

        for lost in range(losses):
            rig.broker.set_up()
            # Until the next replay of it is out (well before its confirm_timeout, 3 s)...
            for _ in range(100):
                loop.drive(within=0.1)
                if len(replays()) > lost:
                    break
            assert len(replays()) == lost + 1
            # ...then the connection drops with it unconfirmed: not the message's fault.
            rig.broker.set_down(took=False)
        rig.broker.mode = Mode.ACK
        rig.broker.set_up()
        loop.drive(within=10.0)
        assert message_id not in rig.store.records
        return gaps(replays())

    # Due again after 1, 2, 4 s (give or take a step): the pause grows while it fails...
    [first] = outage(rig, loop, 1)
    found = replay_losing(first, 3)
    assert len(found) == 3
    for gap, pause in zip(found, [1.0, 2.0, 4.0], strict=True):
        assert pause <= gap <= pause + 0.15, found
    # ...and starts again from its base once a replay went well.
    [second] = outage(rig, loop, 1)
    [gap] = replay_losing(second, 1)
    assert 1.0 <= gap <= 1.15
    assert rig.stats.replayed == 2
    rig.close()


def test_after_a_batch_that_went_well_replay_claims_replay_batch_again(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aioproducer.replay")
    rig = Rig(loop, tmp_path, spill_after=0.5, replay_batch=10)
    ids = outage(rig, loop, 25)
    rig.broker.set_up()
    loop.drive(within=2.0)
    assert rig.stats.replayed == 25
    owner = rig.producer.owner
    batches = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.DEBUG
        and re.fullmatch(r".*: replaying \d+ stored messages", r.getMessage())
    ]
    assert batches == [f"producer {owner}: replaying {n} stored messages" for n in (10, 10, 5)]
    # One line of confirmed ids a batch, the ids apart by single spaces.
    prefix = f"producer {owner}: replayed and confirmed "
    confirmed = [
        r.getMessage().removeprefix(prefix).split(" ")
        for r in caplog.records
        if r.getMessage().startswith(prefix)
    ]
    assert [len(ids) for ids in confirmed] == [10, 10, 5]
    assert sorted(itertools.chain(*confirmed)) == sorted(ids)
    rig.close()


@pytest.mark.parametrize("fault", [StoreFault.DOWN, StoreFault.HANGING])
def test_a_replay_cut_by_close_with_the_store_failing_leaves_its_messages_to_the_leases(
    loop: VirtualClockLoop, tmp_path: Path, fault: StoreFault
) -> None:
    rig = Rig(loop, tmp_path, spill_after=0.5, lease=60.0)
    ids = outage(rig, loop, 3)
    rig.broker.mode, rig.broker.confirm_delay = Mode.SLOW, None
    rig.broker.set_up()
    loop.drive(within=0.5)
    assert len(rig.broker.pending) == 3
    rig.store.set_fault(fault)
    started = loop.time()
    loop.run(rig.producer.close(1.0), within=10.0)
    # close() keeps its bound, raises nothing and leaves no task of the producer
    # running (replay gives up handing its claim back); the messages stay stored.
    assert loop.time() - started <= 1.0 + CLOSE_MARGIN
    assert not asyncio.all_tasks(loop)
    assert set(ids) <= set(rig.store.records)
    rig.store.set_fault(StoreFault.UP)


class SettleHangsOnce(FakeStore):
    """A store whose first ack after :attr:`armed` is set waits until it is cancelled."""

    armed = False

    async def ack(self, message_ids: Sequence[str]) -> None:
        if self.armed:
            self.armed = False
            await asyncio.Event().wait()
        await super().ack(message_ids)


def test_a_close_while_a_replay_is_settled_still_deletes_and_hands_back(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    store = SettleHangsOnce(loop.wall)
    rig = Rig(
        loop,
        tmp_path,
        store=store,
        spill_after=0.5,
        lease=60.0,
        retry_backoff=Backoff(30.0, cap=30.0, jitter=0),
    )
    ids = outage(rig, loop, 3)
    rig.broker.mode, rig.broker.confirm_delay = Mode.SLOW, None
    rig.broker.set_up()
    loop.drive(within=0.5)
    assert len(rig.broker.pending) == 3
    # Two confirmed, one nacked: the replay settles them in the store, which hangs.
    store.armed = True
    first, second, third = rig.broker.pending
    release_one(rig.broker, first)
    release_one(rig.broker, second)
    rig.broker.pending.remove(third)
    third.confirm.set_result(Result(Outcome.NACKED, "nacked by the broker"))
    loop.drive(within=0.1)
    assert not store.armed and set(ids) <= set(store.records)
    closed_at = loop.wall()
    rig.close()
    # close() cancelled the hung settle; one quick try did what it was to do.
    nacked = third.message.message_id
    assert set(store.records) == {nacked}
    record = store.records[nacked]
    assert record.lease_owner is None
    assert record.message.attempts == 1
    assert record.message.due_at >= closed_at + 29.0
