"""When a message the spiller stored is due for replay: held back, or still in flight."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from aioproducer import Backoff, Message
from tests.fakes import FakeStore, Mode, VirtualClockLoop
from tests.unit.test_promises import Rig


def publishes(rig: Rig, message_id: str) -> list[tuple[float, str]]:
    return [(t, channel) for t, i, channel in rig.producer.publishes if i == message_id]


def test_a_held_back_message_stored_is_replayed_when_its_backoff_ends(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(
        loop,
        tmp_path,
        spill_after=0.1,
        replay_interval=0.02,
        retry_backoff=Backoff(0.5, cap=0.5, jitter=0),
    )
    # A clock well past zero, so a due time taken from the wrong clock shows.
    loop.drive(within=20.0)
    nacked = "n" * 32
    rig.broker.poison[nacked] = Mode.NACK
    rig.publish(message_id=nacked)
    loop.drive(within=0.3)
    assert nacked in rig.store.records
    del rig.broker.poison[nacked]
    loop.drive(within=2.0)
    [(first, _), (again, channel)] = publishes(rig, nacked)
    # Stored while held back, it is due when its backoff ends: not sooner, not later.
    assert channel == "replay"
    assert 0.5 - 1e-6 <= again - first <= 0.5 + 0.05
    rig.close()


def test_a_copy_stored_in_flight_is_replayed_only_once_its_confirm_cannot_come(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path, spill_after=0.5, confirm_timeout=3.0, replay_interval=0.02)
    rig.broker.mode = Mode.SLOW
    message_id = rig.publish()
    loop.drive(within=1.0)
    assert message_id in rig.store.records
    rig.broker.mode = Mode.ACK
    loop.drive(within=5.0)
    [(first, _), (again, channel)] = publishes(rig, message_id)[:2]
    assert channel == "replay"
    # Stored at spill_after, due confirm_timeout later.
    assert 3.5 - 1e-6 <= again - first <= 3.5 + 0.05
    rig.close()


class PutRecordingStore(FakeStore):
    puts: list[list[str]]

    async def put(self, messages: Sequence[Message]) -> None:
        self.puts.append([m.message_id for m in messages])
        await super().put(messages)


@pytest.mark.parametrize(
    ("spill_after", "later", "together"),
    [(1.0, 0.09, True), (1.0, 0.11, False), (10.0, 0.45, True), (10.0, 0.55, False)],
)
def test_a_write_takes_along_what_falls_due_within_a_tenth_of_spill_after_at_most_half_a_second(
    loop: VirtualClockLoop, tmp_path: Path, spill_after: float, later: float, together: bool
) -> None:
    store = PutRecordingStore(loop.wall)
    store.puts = []
    rig = Rig(loop, tmp_path, store=store, spill_after=spill_after)
    rig.broker.set_down(took=False)
    first = rig.publish()
    loop.drive(within=later)
    second = rig.publish()
    loop.drive(within=spill_after + 1.0)
    assert store.puts == ([[first, second]] if together else [[first], [second]])
    rig.close()
