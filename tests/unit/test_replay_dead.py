"""A replayed message is reported dead only once the store has kept it as dead."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from aioproducer import Message, StoreUnavailable
from aioproducer._message import State
from tests.fakes import FakeBroker, FakeLinkProducer, FakeStore, Mode, VirtualClockLoop


class NoRelease(FakeStore):
    """A store that claims and deletes, but whose every release fails."""

    async def release(self, owner: str, messages: Sequence[Message]) -> None:
        raise StoreUnavailable("release failed")


def test_a_dead_message_the_store_could_not_mark_stays_stored(tmp_path: Path) -> None:
    loop = VirtualClockLoop()
    try:
        store = NoRelease(loop.wall)
        stored = Message("m", b"x", "", "q", "text/plain", timestamp=loop.wall())
        loop.run(store.put([stored]))
        producer = FakeLinkProducer(
            "amqp://guest:guest@127.0.0.1:1/",
            store=store,
            max_attempts=1,
            lease=30.0,
            confirm_timeout=3.0,
            fallback_dir=tmp_path,
        )
        producer.broker = FakeBroker(poison={"m": Mode.NACK})
        moves: list[tuple[str, State]] = []
        producer._observer = lambda message, state: moves.append((message.message_id, state))
        producer._wall = loop.wall
        loop.run(producer.start())
        # Claimed, nacked (its last attempt), and the release that marks it dead fails.
        loop.drive(within=20.0)
        assert ("m", State.DEAD) not in moves
        assert producer.stats().dead == 0
        assert not store.records["m"].message.dead
        loop.run(producer.close(0.0), within=5.0)
    finally:
        loop.close()


def test_each_replayed_message_kept_as_dead_is_counted_and_reported(tmp_path: Path) -> None:
    loop = VirtualClockLoop()
    try:
        store = FakeStore(loop.wall)
        ids = ["a", "b", "c"]
        loop.run(
            store.put([Message(i, b"x", "", "q", "text/plain", timestamp=loop.wall()) for i in ids])
        )
        producer = FakeLinkProducer(
            "amqp://guest:guest@127.0.0.1:1/",
            store=store,
            max_attempts=1,
            lease=30.0,
            confirm_timeout=3.0,
            replay_batch=1,
            fallback_dir=tmp_path,
        )
        producer.broker = FakeBroker(poison={i: Mode.NACK for i in ids})
        moves: list[tuple[str, State]] = []
        producer._observer = lambda message, state: moves.append((message.message_id, state))
        producer._wall = loop.wall
        loop.run(producer.start())
        # One message a batch: three batches, each with its message nacked on its last
        # attempt and kept as dead.
        loop.drive(within=20.0)
        assert producer.stats().dead == 3
        assert sorted(i for i, state in moves if state is State.DEAD) == ids
        assert all(store.records[i].message.dead for i in ids)
        loop.run(producer.close(0.0), within=5.0)
    finally:
        loop.close()
