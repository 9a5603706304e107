"""Documented promises, each checked against the in-process broker and store on virtual time.

Every test here fails when the promise it names is broken (tests/PROMISES.md lists
them with the change to the library each one catches).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from aioproducer import Backoff, Message, Producer, ProducerStats
from aioproducer._connection import message_properties
from aioproducer._context import Context, supervise
from aioproducer._link import Link, Result
from tests.fakes import (
    FakeBroker,
    FakeLink,
    FakeLinkProducer,
    FakeStore,
    Mode,
    StoreFault,
    VirtualClockLoop,
)
from tests.net import silent_server

NOWHERE = "amqp://guest:guest@127.0.0.1:1/"


class RecordingLink(FakeLink):
    """A FakeLink that notes (virtual time, message id, channel) of every publish."""

    def __init__(self, broker: FakeBroker, log: list[tuple[float, str, str]]) -> None:
        super().__init__(broker)
        self.log = log

    async def publish(
        self,
        channel: Any,
        message: Message,
        *,
        mandatory: bool,
        persistent: bool,
        timeout: float,
    ) -> Result:
        self.log.append((asyncio.get_running_loop().time(), message.message_id, str(channel)))
        return await super().publish(
            channel, message, mandatory=mandatory, persistent=persistent, timeout=timeout
        )


class RecordingProducer(FakeLinkProducer):
    publishes: list[tuple[float, str, str]]

    def _make_link(self, context: Context) -> Link:
        return RecordingLink(self.broker, self.publishes)


class Rig:
    """A producer on a FakeBroker and a FakeStore, driven on a virtual clock."""

    def __init__(
        self,
        loop: VirtualClockLoop,
        tmp_path: Path,
        broker: FakeBroker | None = None,
        **options: Any,
    ) -> None:
        self.loop = loop
        self.store = FakeStore(loop.wall)
        settings: dict[str, Any] = {
            "store": self.store,
            "spill_after": 5.0,
            "confirm_timeout": 3.0,
            "replay_interval": 0.1,
            "fallback_dir": tmp_path,
            **options,
        }
        self.producer = RecordingProducer(NOWHERE, **settings)
        self.broker = self.producer.broker = broker or FakeBroker()
        self.producer.publishes = []
        self.producer._wall = loop.wall
        loop.run(self.producer.start())

    @property
    def stats(self) -> ProducerStats:
        return self.producer.stats()

    def publish(self, body: Any = b"x", **kwargs: Any) -> str:
        return str(self.loop.run(self.producer.publish(body, routing_key="q", **kwargs)))

    def burst(self, count: int) -> list[str]:
        """Publish ``count`` messages in one step: all are buffered before any is sent."""

        async def publish_all() -> list[str]:
            return [self.producer.publish_nowait({"n": n}, routing_key="q") for n in range(count)]

        return list(self.loop.run(publish_all()))

    def delivered(self) -> list[str]:
        return [d.message_id for d in self.broker.deliveries]

    def close(self) -> None:
        self.loop.run(self.producer.close(1.0), within=10.0)


def gaps(times: list[float]) -> list[float]:
    """The time between each two in a row, to the millisecond."""
    return [round(later - earlier, 3) for earlier, later in itertools.pairwise(times)]


def test_messages_reach_the_broker_in_publish_order_while_it_is_healthy(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path, max_in_flight=7)
    ids = rig.burst(50) + [rig.publish({"n": n}) for n in range(5)] + rig.burst(50)
    loop.drive(within=1.0)
    assert rig.delivered() == ids
    assert rig.stats.confirmed == 105
    rig.close()


def test_a_nacked_message_is_held_back_stored_with_its_error_and_delivered_later(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(
        loop,
        tmp_path,
        retry_backoff=Backoff(1.0, cap=1.0, jitter=0),
        store_backoff=Backoff(0.1, cap=0.1, jitter=0),
    )
    fine = rig.publish()
    nacked = "n" * 32
    rig.broker.poison[nacked] = Mode.NACK
    # While the store is down, the held-back message waits in memory, counted as held.
    rig.store.set_fault(StoreFault.DOWN)
    rig.publish(message_id=nacked)
    loop.drive(within=0.5)
    assert rig.stats.held == 1
    rig.store.set_fault(StoreFault.UP)
    loop.drive(within=0.5)
    stats = rig.stats
    assert stats.held == 0
    assert stats.nacked >= 1 and stats.confirmed == 1
    assert rig.delivered() == [fine]
    stored = rig.store.records[nacked].message
    assert stored.attempts >= 1
    assert stored.last_error is not None and "nack" in stored.last_error
    del rig.broker.poison[nacked]
    loop.drive(within=5.0)
    assert rig.delivered() == [fine, nacked]
    assert not rig.store.records
    rig.close()


def test_a_406_holds_back_only_its_culprit_after_two_breaks_in_a_row(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path, spill_after=60.0, retry_backoff=Backoff(30.0, cap=30.0))
    rig.broker.mode = Mode.SLOW
    rig.broker.confirm_delay = 0.01
    before = [rig.publish({"n": n}) for n in range(10)]
    culprit = "c" * 32
    rig.broker.poison[culprit] = Mode.CHANNEL_ERROR
    rig.publish({"bad": 1}, message_id=culprit)
    after = [rig.publish({"n": n}) for n in range(10)]
    loop.drive(within=5.0)
    assert set(rig.delivered()) == {*before, *after}
    assert rig.stats.channel_errors >= 2
    # Held back: the store has it, with the broker's reason, due after the backoff.
    assert rig.stats.held == 1 or culprit in rig.store.records
    record = rig.store.records[culprit].message
    assert record.attempts == 1
    assert record.last_error is not None and "PRECONDITION_FAILED" in record.last_error
    rig.close()


class BreakRecordingBroker(FakeBroker):
    """Notes the ids of the publishes each channel error failed, by channel."""

    broken: list[tuple[str, list[str]]]

    def _break_channel(self, channel: str, result: Result) -> None:
        failed = [p.message.message_id for p in self.pending if p.channel == channel]
        self.broken.append((channel, failed))
        super()._break_channel(channel, result)


def test_replay_publishes_on_its_own_channel_so_a_failing_stored_message_spares_live_traffic(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    broker = BreakRecordingBroker()
    broker.broken = []
    rig = Rig(loop, tmp_path, broker, spill_after=1.0, retry_backoff=Backoff(0.5, cap=0.5))
    poisoned = "p" * 32
    broker.poison[poisoned] = Mode.CHANNEL_ERROR_NAMED
    rig.publish({"bad": 1}, message_id=poisoned)
    loop.drive(within=3.0)
    assert poisoned in rig.store.records
    # Live traffic with slow confirms, while replay keeps breaking its own channel.
    broker.mode, broker.confirm_delay = Mode.SLOW, 2.0
    live = [rig.publish({"n": n}) for n in range(20)]
    loop.drive(within=6.0)
    replay_breaks = [ids for channel, ids in broker.broken if channel == "replay"]
    assert replay_breaks, "replay never published the stored message"
    assert not set(live) & {i for _, ids in broker.broken for i in ids}
    assert all(channel != "live" for channel, ids in broker.broken if poisoned in ids)
    assert set(live) <= set(rig.delivered())
    rig.close()


def test_a_held_message_is_retried_on_the_retry_backoff_schedule(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(
        loop,
        tmp_path,
        spill_after=60.0,
        lease=30.0,
        replay_interval=0.05,
        retry_backoff=Backoff(1.0, cap=8.0, jitter=0),
    )
    returned = "r" * 32
    rig.broker.poison[returned] = Mode.RETURN
    rig.publish(message_id=returned)
    loop.drive(within=40.0)
    times = [t for t, message_id, _ in rig.producer.publishes if message_id == returned]
    between = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(between) >= 5
    # Due again after 1, 2, 4, 8, 8 s (the cap); replay looks every 0.05 s.
    for gap, delay in zip(between, [1.0, 2.0, 4.0, 8.0, 8.0], strict=False):
        assert delay - 1e-6 <= gap <= delay + 0.2, (between, delay)
    assert rig.store.records[returned].message.attempts == len(times)
    assert rig.stats.returned == len(times)
    rig.close()


def test_a_store_that_goes_down_and_comes_back_is_told_in_stats(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aioproducer.producer")
    rig = Rig(loop, tmp_path, spill_after=1.0, store_backoff=Backoff(0.2, cap=0.5))
    assert rig.stats.store_ok is True
    rig.broker.up = False
    for _ in range(2):
        rig.store.set_fault(StoreFault.DOWN)
        ids = {rig.publish({"n": n}) for n in range(5)}
        loop.drive(within=5.0)
        stats = rig.stats
        assert stats.store_ok is False
        assert stats.store_errors >= 2, "the store is retried with backoff"
        assert stats.last_error == "store: the fake store is down"
        assert stats.buffered == 5
        rig.store.set_fault(StoreFault.UP)
        loop.drive(within=2.0)
        stats = rig.stats
        assert stats.store_ok is True
        assert stats.buffered == 0
        assert ids <= set(rig.store.records)
    assert rig.stats.spilled == 10
    # Told once when it starts failing (not at every retry), and once when it is back.
    owner = rig.producer.owner
    told = [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name == "aioproducer.producer" and ": store " in r.getMessage()
    ]
    assert (
        told
        == [
            (
                logging.WARNING,
                f"producer {owner}: store FakeStore() failing: the fake store is down",
            ),
            (logging.INFO, f"producer {owner}: store FakeStore() is back"),
        ]
        * 2
    )
    rig.broker.set_up()
    rig.close()


def test_each_failure_is_counted_once_by_its_kind(loop: VirtualClockLoop, tmp_path: Path) -> None:
    rig = Rig(loop, tmp_path, retry_backoff=Backoff(60.0, cap=60.0, jitter=0))
    for mode, count in ((Mode.NACK, 3), (Mode.RETURN, 2)):
        rig.broker.mode = mode
        rig.burst(count)
        loop.drive(within=1.0)
    stats = rig.stats
    assert (stats.nacked, stats.returned, stats.failed, stats.retried) == (3, 2, 0, 0)
    rig.close()


def test_last_error_is_masked_and_cut_to_300_characters(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path)
    assert rig.stats.last_error is None
    context = rig.producer._context
    assert context is not None
    context.record_error("x" * 300)
    assert rig.stats.last_error == "x" * 300
    context.record_error("y" * 301)
    assert rig.stats.last_error == "y" * 297 + "..."
    context.record_error("connecting to amqp://app:s3cret@rabbit:5672/ failed")
    assert rig.stats.last_error == "connecting to amqp://app:***@rabbit:5672/ failed"
    rig.close()


def test_without_mandatory_an_unroutable_message_is_confirmed_not_returned(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path, mandatory=False)
    rig.broker.mode = Mode.RETURN
    ids = [rig.publish() for _ in range(3)]
    loop.drive(within=1.0)
    assert rig.stats.returned == 0
    assert rig.stats.confirmed == 3
    assert rig.delivered() == ids
    rig.close()


def test_with_mandatory_by_default_an_unroutable_message_comes_back(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path)
    rig.broker.mode = Mode.RETURN
    rig.publish()
    loop.drive(within=1.0)
    assert rig.stats.returned >= 1
    assert rig.stats.confirmed == 0
    rig.close()


def test_max_in_flight_bounds_the_publishes_awaiting_confirms(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path, max_in_flight=4, spill_after=60.0)
    rig.broker.mode = Mode.SLOW  # confirms only on release()
    for n in range(20):
        rig.publish({"n": n})
    loop.drive(within=1.0)
    assert len(rig.broker.pending) == 4
    assert rig.stats.in_flight == 4
    rig.broker.release()
    loop.drive(within=1.0)
    assert len(rig.broker.pending) == 4
    assert len(rig.broker.deliveries) == 4
    rig.broker.mode = Mode.ACK
    rig.broker.release()
    loop.drive(within=1.0)
    assert len(rig.broker.deliveries) == 20
    rig.close()


def test_a_publish_with_no_confirm_gives_up_after_confirm_timeout_and_is_stored(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    """A half-open connection: nothing ever comes back."""
    rig = Rig(loop, tmp_path, spill_after=1.0, confirm_timeout=4.0, lease=10.0)
    rig.broker.mode = Mode.SLOW  # never confirmed
    message_id = rig.publish()
    loop.drive(within=3.0)
    # At its deadline the message in flight is copied to the store, not published again.
    assert message_id in rig.store.records
    assert rig.stats.retried == 0 and rig.stats.in_flight == 1
    loop.drive(within=1.5)
    # After confirm_timeout the publish is given up.
    assert rig.stats.retried == 1
    assert rig.stats.in_flight == 0
    rig.broker.mode = Mode.ACK
    rig.broker.release()
    rig.close()


def test_above_high_water_the_oldest_messages_are_stored_before_their_deadline(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path, max_buffer=10, high_water=0.5, spill_after=60.0)
    rig.broker.up = False
    ids = [rig.publish({"n": n}) for n in range(8)]
    loop.drive(within=1.0)
    # 10 * 0.5 = 5 stay in memory; the 3 oldest go to the store long before 60 s.
    assert set(rig.store.records) == set(ids[:3])
    assert rig.stats.buffered == 5
    rig.broker.set_up()
    rig.close()


def test_the_high_water_mark_is_at_least_one_message(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    # 2 * 0.3 rounds down to none: one message stays in memory, the older is stored.
    rig = Rig(loop, tmp_path, max_buffer=2, high_water=0.3, spill_after=60.0)
    rig.broker.up = False
    ids = [rig.publish({"n": n}) for n in range(2)]
    loop.drive(within=1.0)
    assert set(rig.store.records) == {ids[0]}
    assert rig.stats.buffered == 1
    rig.broker.set_up()
    rig.close()


def test_generated_message_ids_are_32_lowercase_hex_digits(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path)
    ids = {rig.publish() for _ in range(20)}
    assert len(ids) == 20
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    rig.close()


def test_persistent_sets_the_delivery_mode_live_and_on_replay(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    seen: list[tuple[str, bool]] = []

    class ModeLink(FakeLink):
        async def publish(self, channel: Any, message: Message, **kwargs: Any) -> Result:
            seen.append((str(channel), kwargs["persistent"]))
            return await super().publish(channel, message, **kwargs)

    class ModeProducer(FakeLinkProducer):
        def _make_link(self, context: Context) -> Link:
            return ModeLink(self.broker)

    for persistent in (True, False):
        producer = ModeProducer(
            NOWHERE,
            store=FakeStore(loop.wall),
            persistent=persistent,
            spill_after=0.5,
            replay_interval=0.1,
            fallback_dir=tmp_path,
        )
        producer.broker = broker = FakeBroker()
        producer._wall = loop.wall
        loop.run(producer.start())
        loop.run(producer.publish(b"x", routing_key="q"))
        loop.drive(within=1.0)
        # One more while the broker is away: stored, then replayed.
        broker.set_down(took=False)
        loop.run(producer.publish(b"y", routing_key="q"))
        loop.drive(within=1.0)
        broker.set_up()
        loop.drive(within=1.0)
        assert len(broker.deliveries) == 2
        loop.run(producer.close(1.0), within=5.0)
    assert seen == [("live", True), ("replay", True), ("live", False), ("replay", False)]


def test_a_replay_with_no_confirm_gives_up_after_confirm_timeout(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path, spill_after=0.5, confirm_timeout=4.0, lease=60.0)
    rig.broker.set_down(took=False)
    ids = rig.burst(3)
    loop.drive(within=1.0)
    rig.broker.mode, rig.broker.confirm_delay = Mode.SLOW, None  # never confirmed
    rig.broker.set_up()
    loop.drive(within=3.5)
    assert len(rig.broker.pending) == 3 and rig.stats.retried == 0
    loop.drive(within=1.0)
    # Given up at 4 s, as a live publish is; still stored, released to be tried again.
    assert rig.stats.retried == 3
    assert set(ids) <= set(rig.store.records)
    assert {r.lease_owner for r in rig.store.records.values()} == {None}
    rig.close()


def test_the_delivery_mode_follows_persistent_on_the_wire() -> None:
    message = Message(
        message_id="m" * 32,
        body=b"x",
        exchange="",
        routing_key="q",
        content_type="application/octet-stream",
        timestamp=1_700_000_000.0,
    )
    assert message_properties(message, persistent=True).delivery_mode == 2
    assert message_properties(message, persistent=False).delivery_mode == 1


class CallRecordingStore(FakeStore):
    """Notes (virtual time, limit) of every claim and the time of every put."""

    claims: list[tuple[float, int]]
    puts: list[float]

    async def claim(self, owner: str, *, limit: int, lease: float) -> list[Message]:
        self.claims.append((asyncio.get_running_loop().time(), limit))
        return await super().claim(owner, limit=limit, lease=lease)

    async def put(self, messages: Sequence[Message]) -> None:
        self.puts.append(asyncio.get_running_loop().time())
        await super().put(messages)


def recording_store(loop: VirtualClockLoop) -> CallRecordingStore:
    store = CallRecordingStore(loop.wall)
    store.claims, store.puts = [], []
    return store


def test_replay_claims_replay_batch_at_a_time_and_looks_every_replay_interval(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    store = recording_store(loop)
    rig = Rig(loop, tmp_path, store=store, replay_batch=7, replay_interval=2.5)
    loop.drive(within=10.0)
    # An empty store: one look every replay_interval.
    looks = [t for t, _ in store.claims]
    assert len(looks) >= 3
    for earlier, later in itertools.pairwise(looks):
        assert 2.5 - 1e-6 <= later - earlier <= 2.6, looks
    assert {limit for _, limit in store.claims} == {7}
    rig.close()


def test_a_failing_store_is_retried_on_the_store_backoff_schedule(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    store = recording_store(loop)
    rig = Rig(
        loop,
        tmp_path,
        store=store,
        spill_after=1.0,
        store_backoff=Backoff(0.5, cap=4.0, jitter=0),
    )
    rig.broker.up = False
    store.set_fault(StoreFault.DOWN)
    rig.publish()
    loop.drive(within=20.0)
    between = [later - earlier for earlier, later in itertools.pairwise(store.puts)]
    assert len(between) >= 5
    # 0.5 s doubling to the 4 s cap, between the attempts to write the message.
    for gap, delay in zip(between, [0.5, 1.0, 2.0, 4.0, 4.0], strict=False):
        assert delay - 1e-6 <= gap <= delay + 0.1, between
    store.set_fault(StoreFault.UP)
    rig.broker.set_up()
    rig.close()


# -- the real connection, against local sockets: no broker needed -----------------------


async def test_reconnect_backoff_sets_the_delay_between_connection_attempts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aio_pika.robust_connection")
    producer = Producer(
        NOWHERE,
        reconnect_backoff=Backoff(0.37, cap=0.37, jitter=0),
        fallback_dir=tmp_path,
        store=FakeStore(lambda: 0.0),
    )
    await producer.start()
    try:
        for _ in range(200):
            if any("Reconnecting after" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.05)
        lines = [r.getMessage() for r in caplog.records if "Reconnecting after" in r.getMessage()]
        assert lines, "no failed connection attempt was logged"
        # The robust connection waits as the policy says (0.37 s; the default is 0.1 s).
        assert all("Reconnecting after 0.37 seconds" in line for line in lines)
    finally:
        await producer.close(timeout=1)


async def test_connect_timeout_bounds_a_connection_attempt_that_gets_no_answer(
    tmp_path: Path,
) -> None:
    """A server that accepts TCP and never speaks AMQP: each attempt gives up in time."""
    async with silent_server() as silent:
        producer = Producer(
            f"amqp://guest:guest@127.0.0.1:{silent.port}/",
            connect_timeout=0.3,
            reconnect_backoff=Backoff(0.05, cap=0.05),
            fallback_dir=tmp_path,
            store=FakeStore(lambda: 0.0),
        )
        await producer.start()
        try:
            # The default connect_timeout (10 s) would allow one attempt in this bound.
            for _ in range(200):
                if len(silent.accepted) >= 3:
                    break
                await asyncio.sleep(0.05)
            assert len(silent.accepted) >= 3, "attempts did not give up after connect_timeout"
            assert producer.stats().connections == 0
        finally:
            await producer.close(timeout=1)


def test_the_log_lines_docs_logging_md_describes(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aioproducer")
    caplog.set_level(logging.DEBUG, logger="aioproducer.producer")
    rig = Rig(
        loop,
        tmp_path,
        name="web-1",
        spill_after=1.0,
        confirm_timeout=2.0,
        max_attempts=1,
        store_backoff=Backoff(0.2, cap=0.5),
    )
    # One confirmed while all is well.
    rig.publish()
    loop.drive(within=0.5)
    # An outage: messages spill, then replay once the broker is back.
    rig.broker.set_down(took=False)
    rig.burst(3)
    loop.drive(within=3.0)
    rig.broker.set_up()
    loop.drive(within=3.0)
    # A store that fails, then comes back.
    rig.broker.set_down(took=False)
    rig.store.set_fault(StoreFault.DOWN)
    rig.burst(2)
    loop.drive(within=3.0)
    rig.store.set_fault(StoreFault.UP)
    loop.drive(within=3.0)
    rig.broker.set_up()
    loop.drive(within=3.0)
    # A message that fails for itself once, with max_attempts=1.
    rig.broker.poison["d" * 32] = Mode.NACK
    rig.publish(message_id="d" * 32)
    loop.drive(within=1.0)
    # A confirm that never comes; then close with a message left in memory.
    rig.broker.mode = Mode.SLOW
    rig.publish()
    loop.drive(within=2.5)
    rig.broker.set_down(took=False)
    rig.publish()
    rig.close()
    lines = {(r.name, r.levelname, r.getMessage()) for r in caplog.records}

    def logged(logger: str, level: str, pattern: str) -> bool:
        return any(
            name == logger and lvl == level and re.search(pattern, text)
            for name, lvl, text in lines
        )

    expected = [
        ("aioproducer.producer", "INFO", r"^producer web-1 started \(store FakeStore\(\)\)$"),
        ("aioproducer.spill", "INFO", r"spilling to FakeStore\(\): messages unconfirmed after 1s"),
        ("aioproducer.spill", "INFO", r"stopped spilling, 3 stored"),
        ("aioproducer.replay", "INFO", r"replaying stored messages"),
        ("aioproducer.replay", "INFO", r"replay done, \d+ confirmed"),
        (
            "aioproducer.producer",
            "WARNING",
            r"^producer web-1: store FakeStore\(\) failing: the fake store is down$",
        ),
        ("aioproducer.producer", "INFO", r"^producer web-1: store FakeStore\(\) is back$"),
        (
            "aioproducer.producer",
            "WARNING",
            r"^producer web-1: message d{32} failed 1 times \(nacked: nacked by the broker\); "
            r"keeping it as dead$",
        ),
        ("aioproducer.producer", "DEBUG", r"^producer web-1: message [0-9a-f]{32} confirmed$"),
        (
            "aioproducer.producer",
            "DEBUG",
            r"^producer web-1: holding back message d{32} \(attempt 1, nacked: nacked by the "
            r"broker\); retry in \d+\.\ds$",
        ),
        (
            "aioproducer.producer",
            "WARNING",
            r"^producer web-1: no confirm for message [0-9a-f]{32} in time; pausing publishes$",
        ),
        ("aioproducer.producer", "INFO", r"^producer web-1 closing: \d+ messages left in memory$"),
        ("aioproducer.spill", "INFO", r"stored \d+ messages on close"),
        ("aioproducer.producer", "INFO", r"^producer web-1 closed$"),
    ]
    missing = [e for e in expected if not logged(*e)]
    assert not missing, (missing, sorted(lines))


@pytest.mark.crashing_task
def test_a_background_task_that_raises_is_logged_and_restarted_on_the_store_backoff(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rig = Rig(loop, tmp_path, store_backoff=Backoff(0.5, cap=2.0, jitter=0))
    context = rig.producer._context
    assert context is not None
    starts: list[float] = []
    # Three quick failures, then 30 s of clean running before a failure, then one more.
    runs_for = [0.0, 0.0, 0.0, 30.0, 0.0]
    secret = "card=" + "4111" * 4

    async def run() -> None:
        starts.append(loop.time())
        if not runs_for:
            return
        await asyncio.sleep(runs_for.pop(0))
        raise RuntimeError(secret)

    loop.run(supervise("probe", run, context), within=60.0)
    # Restarted after 0.5, 1 and 2 s; after 30 clean seconds the backoff starts again.
    assert gaps(starts) == [0.5, 1.0, 2.0, 30.5, 1.0]
    owner = rig.producer.owner
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert [e.splitlines()[0] for e in errors] == [
        f"producer {owner}: probe task failed; restarting it in {delay}s"
        for delay in ("0.5", "1.0", "2.0", "0.5", "1.0")
    ]
    # The traceback names the exception's type and where it was raised, not its text.
    assert all(e.splitlines()[1] == "Traceback (most recent call last):" for e in errors)
    assert all(e.splitlines()[-1] == "RuntimeError" for e in errors)
    assert not any(secret in e for e in errors)
    assert rig.stats.last_error == "probe task failed: RuntimeError"
    rig.close()


async def test_a_context_made_without_a_producer_keeps_wall_clock_time(tmp_path: Path) -> None:
    """The standalone replay worker's due times and leases are on the host's wall clock."""
    settings = Producer(NOWHERE, store=FakeStore(time.time), fallback_dir=tmp_path)._settings
    context = Context(settings, FakeStore(time.time), "replay-worker")
    before = time.time()
    wall = context.wall()
    assert before <= wall <= time.time()
