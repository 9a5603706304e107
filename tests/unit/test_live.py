"""The live publisher: how it settles each result, pauses, refills its window, and
cuts its writes; on the virtual clock, against the fake broker."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from aioproducer import Backoff, Message
from aioproducer._link import Result
from aioproducer._live import WRITE_BYTES, LivePublisher, _by_bytes
from tests.fakes import Mode, StoreFault, VirtualClockLoop
from tests.fakes import _release_one as release_one
from tests.unit.test_promises import Rig


def sized(*lengths: int) -> list[Message]:
    return [
        Message(f"m{i}", b"x" * n, "", "q", "application/octet-stream", timestamp=0.0)
        for i, n in enumerate(lengths)
    ]


def ids(parts: list[list[Message]]) -> list[list[str]]:
    return [[m.message_id for m in part] for part in parts]


def test_a_batch_is_cut_into_writes_of_at_most_the_limit_in_body_bytes() -> None:
    assert _by_bytes([], 10) == []
    # Exactly the limit stays together; one byte more starts the next write.
    assert ids(_by_bytes(sized(4, 6, 1), 10)) == [["m0", "m1"], ["m2"]]
    assert ids(_by_bytes(sized(4, 5, 1, 9, 1), 10)) == [["m0", "m1", "m2"], ["m3", "m4"]]
    # A message larger than the limit goes alone; empty bodies count nothing.
    assert ids(_by_bytes(sized(3, 25, 0, 0, 10, 2), 10)) == [
        ["m0"],
        ["m1"],
        ["m2", "m3", "m4"],
        ["m5"],
    ]
    assert ids(_by_bytes(sized(*[1] * 12), 10)) == [[f"m{i}" for i in range(10)], ["m10", "m11"]]
    assert WRITE_BYTES == 512 * 1024


def publish_times(rig: Rig, message_id: str) -> list[float]:
    return [t for t, i, channel in rig.producer.publishes if i == message_id and channel == "live"]


def test_a_named_missing_exchange_holds_back_its_message_at_the_first_break(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path, spill_after=60.0, retry_backoff=Backoff(30.0, cap=30.0))
    gone = "g" * 32
    rig.broker.poison[gone] = Mode.CHANNEL_ERROR_NAMED
    rig.publish(message_id=gone)
    loop.drive(within=2.0)
    assert len(publish_times(rig, gone)) == 1
    # Held back (and so stored at once) with an attempt counted.
    assert rig.stats.channel_errors == 1
    assert rig.store.records[gone].message.attempts == 1
    rig.close()


def test_an_unnamed_channel_error_holds_back_a_message_after_its_second_break_in_a_row(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(
        loop,
        tmp_path,
        spill_after=60.0,
        retry_backoff=Backoff(30.0, cap=30.0),
        reconnect_backoff=Backoff(0.5, cap=2.0, jitter=0),
    )
    culprit = "c" * 32
    rig.broker.poison[culprit] = Mode.CHANNEL_ERROR
    rig.publish(message_id=culprit)
    loop.drive(within=2.0)
    # Broken once: published again at once; broken twice: held back.
    assert len(publish_times(rig, culprit)) == 2
    assert rig.stats.channel_errors == 2
    assert rig.store.records[culprit].message.attempts == 1
    # Breaks in a row only: a missing confirm in between starts the count again.
    other = "d" * 32
    rig.broker.script[other] = [Mode.CHANNEL_ERROR, Mode.SLOW] + [Mode.CHANNEL_ERROR] * 2
    rig.publish(message_id=other)
    loop.drive(within=10.0)
    assert len(publish_times(rig, other)) == 4
    assert rig.stats.channel_errors == 5 and rig.stats.retried == 1
    assert rig.store.records[other].message.attempts == 1
    rig.close()


def test_after_a_lost_connection_live_publishing_waits_the_first_reconnect_delay(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path, spill_after=60.0, reconnect_backoff=Backoff(0.5, cap=2.0, jitter=0))
    rig.broker.mode = Mode.SLOW
    [message_id] = rig.burst(1)
    loop.drive(within=0.1)
    rig.broker.set_down(took=False)
    lost_at = loop.time()
    rig.broker.mode = Mode.ACK
    rig.broker.set_up()  # back at once: the publisher still waits 0.5 s
    loop.drive(within=2.0)
    _, again = publish_times(rig, message_id)
    assert again - lost_at == pytest.approx(0.5, abs=0.01)
    assert rig.delivered() == [message_id]
    rig.close()


def test_after_a_missing_confirm_live_publishing_pauses_for_the_reconnect_cap(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aioproducer.producer")
    rig = Rig(
        loop,
        tmp_path,
        spill_after=60.0,
        confirm_timeout=1.0,
        reconnect_backoff=Backoff(0.5, cap=4.0, jitter=0),
    )
    rig.broker.mode = Mode.SLOW  # no confirm comes
    [first, second] = rig.burst(2)
    loop.drive(within=1.5)
    given_up_at = 1.0
    rig.broker.mode = Mode.ACK
    loop.drive(within=6.0)
    # Both given up after 1 s, published again only once the 4 s pause ended; the
    # stall is told once.
    for message_id in (first, second):
        sent = publish_times(rig, message_id)
        assert len(sent) == 2 and sent[1] - sent[0] == pytest.approx(given_up_at + 4.0, abs=0.01)
    warnings = [r.getMessage() for r in caplog.records if "no confirm" in r.getMessage()]
    assert len(warnings) == 1
    rig.close()


@pytest.mark.parametrize(
    ("max_in_flight", "eighth"), [(16, 2), (20, 2), (8, 1), (4, 1)], ids=["16", "20", "8", "4"]
)
def test_the_window_is_refilled_once_an_eighth_of_it_is_free(
    loop: VirtualClockLoop, tmp_path: Path, max_in_flight: int, eighth: int
) -> None:
    """An eighth of ``max_in_flight`` rounded down, one at least."""
    rig = Rig(loop, tmp_path, spill_after=60.0, max_in_flight=max_in_flight)
    rig.broker.mode = Mode.SLOW
    rig.burst(3 * max_in_flight)
    loop.drive(within=0.1)
    assert len(rig.broker.pending) == max_in_flight
    # Fewer confirms than an eighth free slots that are not refilled one by one.
    for freed in range(1, eighth):
        release_one(rig.broker, rig.broker.pending[0])
        loop.drive(within=0.1)
        assert len(rig.broker.pending) == max_in_flight - freed
    release_one(rig.broker, rig.broker.pending[0])
    loop.drive(within=0.1)
    assert len(rig.broker.pending) == max_in_flight
    rig.close()


def test_a_result_that_cannot_be_settled_is_logged_and_its_message_published_again(
    loop: VirtualClockLoop,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.ERROR, logger="aioproducer.producer")
    settle = LivePublisher._settle
    broken: list[str] = []
    secret = "card=" + "4111" * 4

    def settle_failing_once(self: LivePublisher, message: Message, result: Result) -> None:
        if not broken:
            broken.append(message.message_id)
            raise RuntimeError(secret)
        settle(self, message, result)

    monkeypatch.setattr(LivePublisher, "_settle", settle_failing_once)
    rig = Rig(loop, tmp_path, spill_after=60.0)
    message_id = rig.publish()
    loop.drive(within=2.0)
    assert broken == [message_id]
    # Still in flight when settling failed: published again, and confirmed this time.
    assert len(publish_times(rig, message_id)) == 2
    assert rig.stats.confirmed == 1
    [line] = [r.getMessage() for r in caplog.records]
    first, *trace = line.splitlines()
    assert first == f"producer {rig.producer.owner}: settling {message_id} failed"
    assert trace[0] == "Traceback (most recent call last):" and trace[-1] == "RuntimeError"
    assert secret not in line
    rig.close()


def test_a_message_held_in_memory_is_published_again_when_its_hold_ends(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(
        loop,
        tmp_path,
        spill_after=60.0,
        retry_backoff=Backoff(0.3, cap=0.3, jitter=0),
        store_backoff=Backoff(60.0, cap=60.0, jitter=0),
    )
    loop.drive(within=100.0)  # well into the producer's life, where the clock is large
    rig.store.set_fault(StoreFault.DOWN)  # held back, and kept in memory
    held = "h" * 32
    rig.broker.script[held] = [Mode.NACK]
    rig.publish(message_id=held)
    loop.drive(within=2.0)
    first, again = publish_times(rig, held)
    assert again - first == pytest.approx(0.3, abs=0.01)
    assert rig.delivered() == [held]
    rig.store.set_fault(StoreFault.UP)
    rig.close()


def test_finished_writes_are_let_go(loop: VirtualClockLoop, tmp_path: Path) -> None:
    """The publisher keeps the writes still in flight (to abandon on stop), not the rest."""
    rig = Rig(loop, tmp_path, spill_after=60.0)
    for _ in range(50):
        rig.burst(3)
        loop.drive(within=0.1)
    assert rig.stats.confirmed == 150
    live = rig.producer._live
    assert live is not None and len(live._sent) <= 1
    rig.close()


def test_a_message_published_as_the_broker_returns_goes_out_at_once(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    """The publisher waited for the channel with messages to send; they were stored
    meanwhile. It finds nothing to take when the broker is back, and goes on at once."""
    rig = Rig(loop, tmp_path, spill_after=0.5)
    rig.broker.set_down(took=False)
    stored = rig.burst(3)
    loop.drive(within=2.0)
    assert set(stored) <= set(rig.store.records)
    rig.broker.set_up()
    back_at = loop.time()
    fresh = rig.publish()
    loop.drive(within=3.0)
    [sent_at] = publish_times(rig, fresh)
    assert sent_at - back_at < 0.1
    rig.close()
