"""A copy the store wrote while answering with an error must not outlive the message's fate."""

from __future__ import annotations

from pathlib import Path

from aioproducer._message import State
from tests.fakes import FakeBroker, FakeLinkProducer, FakeStore, Mode, StoreFault, VirtualClockLoop


def test_a_message_reported_dead_is_kept_dead_in_the_store(tmp_path: Path) -> None:
    loop = VirtualClockLoop()
    try:
        store = FakeStore(loop.wall)
        producer = FakeLinkProducer(
            "amqp://guest:guest@127.0.0.1:1/",
            store=store,
            max_attempts=2,
            spill_after=1.0,
            confirm_timeout=3.0,
            fallback_dir=tmp_path,
        )
        producer.broker = FakeBroker(mode=Mode.NACK)
        moves: list[State] = []
        producer._observer = lambda _, state: moves.append(state)
        producer._wall = loop.wall
        loop.run(producer.start())
        # Every store call does its work, then reports failure.
        store.set_fault(StoreFault.DOWN_AFTER)
        message_id = loop.run(producer.publish(b"x", routing_key="q"))
        # Nacked, held, written (the store says not), nacked again: dead.
        loop.drive(within=1.0)
        store.set_fault(StoreFault.UP)
        loop.run(producer.close(1.0), within=5.0)
        assert moves[-1] is State.DEAD
        assert store.records[message_id].message.dead
    finally:
        loop.close()
