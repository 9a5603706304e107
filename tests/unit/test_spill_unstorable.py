"""A message the store refused is not offered to it again, dead or not."""

from __future__ import annotations

from aioproducer import Message
from aioproducer._buffer import Buffer


def refused_then_dead() -> tuple[Buffer, Message]:
    buffer = Buffer(capacity=4, high_water=4)
    message = Message("m", b"x", "", "q", "text/plain", timestamp=1_000.0, deadline=1.0)
    buffer.add(message)
    [taken] = buffer.take_for_spill(now=5.0, limit=10)
    message.unstorable = True
    buffer.unspill([taken])
    [sent] = buffer.take(now=5.0, limit=10)
    # Its last attempt failed: it is kept for the store only.
    sent.dead = True
    buffer.hold(sent, not_before=6.0)
    return buffer, message


def test_a_dead_message_the_store_refused_is_not_offered_again() -> None:
    buffer, _ = refused_then_dead()
    assert buffer.take_for_spill(now=10.0, limit=10) == []
    assert buffer.held == 1


def test_it_still_goes_to_the_final_store_on_close() -> None:
    buffer, message = refused_then_dead()
    assert buffer.take_all() == [message]
