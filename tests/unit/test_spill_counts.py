"""stats() counts what the spiller stored, kept as dead, and was refused, over many writes."""

from __future__ import annotations

from pathlib import Path

from aioproducer import Backoff
from tests.fakes import Mode, VirtualClockLoop
from tests.unit.test_promises import Rig


def test_stored_dead_and_refused_messages_add_up_across_writes(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(
        loop,
        tmp_path,
        spill_after=0.5,
        max_attempts=1,
        retry_backoff=Backoff(0.5, cap=0.5, jitter=0),
    )
    # Two messages that end dead, stored by two separate writes.
    for mark in "ab":
        rig.broker.poison[mark * 32] = Mode.NACK
        rig.publish(message_id=mark * 32)
        loop.drive(within=2.0)
    assert rig.stats.dead == 2
    assert {"a" * 32, "b" * 32} <= set(rig.store.records)
    # Then, with the broker gone, two writes of three messages, one refused in each.
    rig.broker.set_down(took=False)
    for _ in range(2):
        ids = rig.burst(3)
        rig.store.reject = ids[0]
        loop.drive(within=2.0)
    stats = rig.stats
    assert (stats.spilled, stats.unstorable, stats.dead) == (4, 2, 2)
    rig.close()
