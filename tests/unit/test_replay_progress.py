"""What replay tells: its start, its progress in a long replay, its end, per replay."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import Mode, VirtualClockLoop
from tests.unit.test_promises import Rig


@pytest.fixture
def loop() -> Iterator[VirtualClockLoop]:
    loop = VirtualClockLoop()
    try:
        yield loop
    finally:
        loop.close()


def outage(rig: Rig, loop: VirtualClockLoop, count: int) -> list[str]:
    """The broker gone while ``count`` messages are published: all of them are stored."""
    rig.broker.set_down(took=False)
    ids = rig.burst(count)
    loop.drive(within=2.0)
    assert set(ids) <= set(rig.store.records)
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
