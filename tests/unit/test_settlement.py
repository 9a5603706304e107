"""settled() and on_settled: each outcome, the timeout, and what happens when nobody listens.

The broker and the store are in-process fakes and the loop's clock is virtual:
spill deadlines and timeouts pass without real time passing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from aioproducer import (
    ProducerClosed,
    Settlement,
    UnknownMessage,
)
from aioproducer._message import Message, State
from aioproducer._settlement import RECENT_OUTCOMES, Settlements
from tests.fakes import FakeBroker, FakeLinkProducer, FakeStore, Mode, VirtualClockLoop
from tests.waiting import wait_until

Heard = list[tuple[str, Settlement]]


@pytest.fixture
def make(
    loop: VirtualClockLoop, tmp_path: Path
) -> Callable[..., tuple[FakeLinkProducer, FakeStore, Heard]]:
    def make(broker: FakeBroker, **options: Any) -> tuple[FakeLinkProducer, FakeStore, Heard]:
        store = FakeStore(loop.wall)
        heard: Heard = []
        settings: dict[str, Any] = {
            "spill_after": 1.0,
            "confirm_timeout": 10.0,
            "replay_interval": 0.5,
            "fallback_dir": tmp_path,
            "on_settled": lambda message_id, outcome: heard.append((message_id, outcome)),
            **options,
        }
        producer = FakeLinkProducer("amqp://guest:guest@127.0.0.1:1/", store=store, **settings)
        producer.broker = broker
        producer._wall = loop.wall
        return producer, store, heard

    return make


def run(
    loop: VirtualClockLoop,
    producer: FakeLinkProducer,
    scenario: Callable[[], Coroutine[Any, Any, None]],
    *,
    within: float = 60.0,
) -> None:
    async def whole() -> None:
        await producer.start()
        try:
            await scenario()
        finally:
            await producer.close(1.0)

    loop.run(whole(), within=within)


def test_a_confirmed_message(loop: VirtualClockLoop, make: Any) -> None:
    producer, store, heard = make(FakeBroker())

    async def scenario() -> None:
        message_id = await producer.publish(b"x")
        assert await producer.settled(message_id, timeout=5) is Settlement.CONFIRMED
        await producer.flush(1)
        assert heard == [(message_id, Settlement.CONFIRMED)]

    run(loop, producer, scenario)
    assert store.records == {}


def test_a_stored_message_and_its_later_replay(loop: VirtualClockLoop, make: Any) -> None:
    broker = FakeBroker(up=False)
    producer, store, heard = make(broker)

    async def scenario() -> None:
        message_id = await producer.publish(b"x")
        assert await producer.settled(message_id, timeout=5) is Settlement.STORED
        assert message_id in store.records
        broker.set_up()
        await wait_until(lambda: len(heard) == 2, timeout=30, what="the replay reported")
        assert heard == [(message_id, Settlement.STORED), (message_id, Settlement.CONFIRMED)]
        # The first settlement is what a waiter learns, also after the fact.
        assert await producer.settled(message_id) is Settlement.STORED

    run(loop, producer, scenario)


def test_a_copy_stored_while_in_flight_is_stored_then_confirmed(
    loop: VirtualClockLoop, make: Any
) -> None:
    broker = FakeBroker(mode=Mode.SLOW)  # holds every confirm until released
    producer, _store, heard = make(broker)

    async def scenario() -> None:
        message_id = await producer.publish(b"x")
        assert await producer.settled(message_id, timeout=5) is Settlement.STORED
        broker.release()
        await wait_until(lambda: len(heard) == 2, timeout=30, what="the confirm reported")
        assert heard == [(message_id, Settlement.STORED), (message_id, Settlement.CONFIRMED)]

    run(loop, producer, scenario)


def test_a_dead_message(loop: VirtualClockLoop, make: Any) -> None:
    producer, store, heard = make(FakeBroker(mode=Mode.RETURN), max_attempts=1)

    async def scenario() -> None:
        message_id = await producer.publish(b"x", routing_key="nowhere")
        assert await producer.settled(message_id, timeout=5) is Settlement.DEAD
        assert store.records[message_id].message.dead
        await producer.flush(1)
        assert heard == [(message_id, Settlement.DEAD)]

    run(loop, producer, scenario)


def test_mandatory_false_confirms_what_the_default_would_return(
    loop: VirtualClockLoop, make: Any
) -> None:
    producer, _store, _heard = make(FakeBroker(mode=Mode.RETURN), max_attempts=1)

    async def scenario() -> None:
        message_id = await producer.publish(b"x", mandatory=False)
        assert await producer.settled(message_id, timeout=5) is Settlement.CONFIRMED

    run(loop, producer, scenario)


def test_a_timeout_leaves_the_message_alone(loop: VirtualClockLoop, make: Any) -> None:
    broker = FakeBroker(up=False)
    producer, _store, _heard = make(broker, spill_after=3600.0)

    async def scenario() -> None:
        message_id = await producer.publish(b"x")
        with pytest.raises(TimeoutError):
            await producer.settled(message_id, timeout=2)
        assert producer.stats().buffered == 1
        broker.set_up()
        assert await producer.settled(message_id, timeout=5) is Settlement.CONFIRMED

    run(loop, producer, scenario)


def test_close_settles_what_waits_as_stored(loop: VirtualClockLoop, make: Any) -> None:
    producer, store, _heard = make(FakeBroker(up=False), spill_after=3600.0)

    async def scenario() -> None:
        message_id = await producer.publish(b"x")
        waiting = producer.settled(message_id)
        await producer.close(0.5)
        assert await waiting is Settlement.STORED
        assert message_id in store.records

    run(loop, producer, scenario)


def test_unknown_ids_and_a_producer_not_started(loop: VirtualClockLoop, make: Any) -> None:
    producer, _store, _heard = make(FakeBroker())
    with pytest.raises(ProducerClosed):
        producer.settled("any")

    async def scenario() -> None:
        with pytest.raises(UnknownMessage) as caught:
            producer.settled("never-published")
        assert caught.value.message_id == "never-published"
        assert isinstance(caught.value, LookupError)

    run(loop, producer, scenario)


def test_nothing_listens_per_message_unless_asked(loop: VirtualClockLoop, make: Any) -> None:
    producer, _store, _heard = make(FakeBroker(), on_settled=None)

    async def scenario() -> None:
        assert producer._context is not None
        buffer = producer._context.buffer
        await producer.publish(b"x")
        assert buffer.observer is None
        message_id = await producer.publish(b"y")
        waiting = producer.settled(message_id)
        assert buffer.observer is not None
        assert await waiting is Settlement.CONFIRMED

    run(loop, producer, scenario)


def test_a_failing_hook_is_logged_and_delivery_goes_on(
    loop: VirtualClockLoop, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    broker = FakeBroker()

    def hook(message_id: str, outcome: Settlement) -> None:
        raise RuntimeError("hook broke")

    producer, _store, _heard = make(broker, on_settled=hook)

    async def scenario() -> None:
        ids = [await producer.publish(b"x") for _ in range(5)]
        for message_id in ids:
            assert await producer.settled(message_id, timeout=5) is Settlement.CONFIRMED
        await producer.flush(1)

    with caplog.at_level(logging.ERROR, "aioproducer.producer"):
        run(loop, producer, scenario)
    assert len(broker.deliveries) == 5
    assert sum("on_settled failed" in r.getMessage() for r in caplog.records) == 5


def test_the_hook_may_publish(loop: VirtualClockLoop, make: Any) -> None:
    broker = FakeBroker()
    follow_ups: list[str] = []
    producer: FakeLinkProducer

    def hook(message_id: str, outcome: Settlement) -> None:
        if not message_id.startswith("after-"):
            follow_ups.append(producer.publish_nowait(b"f", message_id=f"after-{message_id}"))

    producer, _store, _heard = make(broker, on_settled=hook)

    async def scenario() -> None:
        first = await producer.publish(b"x", message_id="m1")
        assert await producer.settled(first, timeout=5) is Settlement.CONFIRMED
        await wait_until(lambda: bool(follow_ups), timeout=5, what="the follow-up")
        assert await producer.settled(follow_ups[0], timeout=5) is Settlement.CONFIRMED

    run(loop, producer, scenario)
    assert [d.message_id for d in broker.deliveries] == ["m1", "after-m1"]


def message(message_id: str) -> Message:
    return Message(message_id, b"x", "", "q", "text/plain", timestamp=1_700_000_000.0)


def test_a_waiter_is_woken_only_by_its_own_message(loop: VirtualClockLoop) -> None:
    async def scenario() -> None:
        settlements = Settlements("p", None)
        mine, other = message("mine"), message("other")
        waiting = settlements.wait_for(mine)
        settlements.observe(other, State.CONFIRMED)
        settlements.observe(message("mine"), State.CONFIRMED)  # the same id, not the message
        assert not waiting.done()
        settlements.observe(mine, State.STORED)
        assert waiting.result() is Settlement.STORED

    loop.run(scenario())


def test_the_hook_hears_a_stored_message_once_then_its_end(loop: VirtualClockLoop) -> None:
    heard: Heard = []

    async def scenario() -> None:
        settlements = Settlements("p", lambda i, outcome: heard.append((i, outcome)))
        copied = message("copied")
        for state in (State.STORED_IN_FLIGHT, State.STORED, State.CONFIRMED):
            settlements.observe(copied, state)
            await asyncio.sleep(0)
        stored = message("stored")
        for state in (State.STORED, State.DEAD):
            settlements.observe(stored, state)
            await asyncio.sleep(0)

    loop.run(scenario())
    assert heard == [
        ("copied", Settlement.STORED),
        ("copied", Settlement.CONFIRMED),
        ("stored", Settlement.STORED),
        ("stored", Settlement.DEAD),
    ]


def test_without_a_hook_settlements_are_told_to_waiters_only(
    loop: VirtualClockLoop, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        settlements = Settlements("p", None)
        waited = message("waited")
        waiting = settlements.wait_for(waited)
        settlements.observe(waited, State.CONFIRMED)
        settlements.observe(message("other"), State.CONFIRMED)
        await asyncio.sleep(0)
        assert waiting.result() is Settlement.CONFIRMED

    with caplog.at_level(logging.DEBUG):
        loop.run(scenario())
    assert caplog.records == []


def test_the_latest_10_000_first_settlements_are_remembered(loop: VirtualClockLoop) -> None:
    assert RECENT_OUTCOMES == 10_000

    async def scenario() -> None:
        settlements = Settlements("p", None)
        settlements.wait_for(message("m0"))
        for n in range(RECENT_OUTCOMES + 1):
            settlements.observe(message(f"m{n}"), State.CONFIRMED)
        recent = settlements.recent
        assert recent is not None and len(recent) == RECENT_OUTCOMES
        assert "m0" not in recent
        kept = list(recent)
        assert kept[0] == "m1" and kept[-1] == f"m{RECENT_OUTCOMES}"

    loop.run(scenario())
