"""The buffer's rules, driven with explicit (monotonic) times: no clock, no sleeping."""

from __future__ import annotations

import pytest

from aioproducer import BufferFull, InvalidMessage, Message
from aioproducer._buffer import Buffer
from aioproducer._message import State


def message(n: int, *, deadline: float = 10.0) -> Message:
    return Message(
        message_id=f"m{n}",
        body=b"x",
        exchange="",
        routing_key="q",
        content_type="application/octet-stream",
        timestamp=1_000.0 + n,
        deadline=deadline,
    )


def ids(messages: list[Message]) -> list[str]:
    return [m.message_id for m in messages]


def test_capacity_is_a_hard_bound_and_a_refusal_changes_nothing() -> None:
    buffer = Buffer(capacity=3, high_water=3)
    for n in range(3):
        buffer.add(message(n))
    with pytest.raises(BufferFull) as caught:
        buffer.add(message(3))
    assert caught.value.capacity == 3
    assert len(buffer) == 3
    assert ids(buffer.take(now=0.0, limit=10)) == ["m0", "m1", "m2"]


def test_in_flight_messages_count_against_capacity_until_settled() -> None:
    buffer = Buffer(capacity=2, high_water=2)
    buffer.add(message(0))
    buffer.add(message(1))
    [first, _] = buffer.take(now=0.0, limit=10)
    with pytest.raises(BufferFull):
        buffer.add(message(2))
    buffer.settle(first)
    buffer.add(message(2))
    assert len(buffer) == 2


def test_an_unsettled_message_id_cannot_be_reused() -> None:
    buffer = Buffer(capacity=5, high_water=5)
    buffer.add(message(0))
    with pytest.raises(InvalidMessage):
        buffer.add(message(0))
    assert len(buffer) == 1


def test_take_respects_the_limit_and_marks_in_flight() -> None:
    buffer = Buffer(capacity=10, high_water=10)
    for n in range(5):
        buffer.add(message(n))
    assert ids(buffer.take(now=0.0, limit=2)) == ["m0", "m1"]
    assert buffer.in_flight == 2
    assert len(buffer) == 5


def test_retried_messages_go_back_to_the_head_oldest_first() -> None:
    buffer = Buffer(capacity=10, high_water=10)
    for n in range(4):
        buffer.add(message(n))
    taken = buffer.take(now=0.0, limit=3)
    buffer.retry(reversed(taken))
    assert buffer.in_flight == 0
    assert ids(buffer.take(now=0.0, limit=10)) == ["m0", "m1", "m2", "m3"]


def test_only_messages_past_their_deadline_are_spilled() -> None:
    buffer = Buffer(capacity=10, high_water=10)
    buffer.add(message(0, deadline=5.0))
    buffer.add(message(1, deadline=6.0))
    buffer.add(message(2, deadline=9.0))
    assert buffer.take_for_spill(now=4.0, limit=10) == []
    assert buffer.next_deadline() == 5.0
    spilling = buffer.take_for_spill(now=6.0, limit=10)
    assert ids(spilling) == ["m0", "m1"]
    assert len(buffer) == 3, "messages being written still count until the write succeeds"
    buffer.spilled(spilling)
    assert len(buffer) == 1
    assert buffer.next_deadline() == 9.0


def test_above_high_water_the_oldest_spill_early() -> None:
    buffer = Buffer(capacity=10, high_water=4)
    for n in range(6):
        buffer.add(message(n, deadline=100.0))
    assert buffer.needs_spill.is_set()
    assert ids(buffer.take_for_spill(now=0.0, limit=10)) == ["m0", "m1"]


def test_a_refused_spill_puts_messages_back_in_order() -> None:
    buffer = Buffer(capacity=10, high_water=10)
    for n in range(3):
        buffer.add(message(n, deadline=1.0))
    spilling = buffer.take_for_spill(now=2.0, limit=10)
    buffer.unspill(spilling)
    assert len(buffer) == 3
    assert ids(buffer.take(now=2.0, limit=10)) == ["m0", "m1", "m2"]


def test_held_messages_wait_for_their_backoff_but_spill_at_once() -> None:
    buffer = Buffer(capacity=10, high_water=10)
    buffer.add(message(0))
    buffer.add(message(1))
    [bad] = buffer.take(now=0.0, limit=1)
    buffer.hold(bad, not_before=50.0)
    assert buffer.held == 1
    assert ids(buffer.take(now=1.0, limit=10)) == ["m1"], "a held message is not retried early"
    assert not buffer.ready(now=1.0)
    assert buffer.ready(now=50.0)
    assert buffer.next_held() == 50.0
    spilling = buffer.take_for_spill(now=1.0, limit=10)
    assert ids(spilling) == ["m0"], "a held message goes to the store without waiting"
    buffer.unspill(spilling)
    assert buffer.held == 1, "refused by the store, it is held again"
    assert ids(buffer.take(now=50.0, limit=10)) == ["m0"]


def test_empty_event_follows_the_unsettled_count() -> None:
    buffer = Buffer(capacity=10, high_water=10)
    assert buffer.empty.is_set()
    buffer.add(message(0))
    assert not buffer.empty.is_set()
    [m] = buffer.take(now=0.0, limit=1)
    buffer.settle(m)
    assert buffer.empty.is_set()


def test_take_all_returns_everything_not_in_flight() -> None:
    buffer = Buffer(capacity=10, high_water=10)
    for n in range(4):
        buffer.add(message(n))
    [first] = buffer.take(now=0.0, limit=1)
    buffer.hold(first, not_before=99.0)
    [second] = buffer.take(now=0.0, limit=1)
    rest = buffer.take_all()
    assert sorted(ids(rest)) == ["m0", "m2", "m3"]
    assert buffer.take_in_flight() == [second]


@pytest.mark.parametrize(("capacity", "high_water"), [(0, 1), (5, 0), (5, 6)])
def test_bad_bounds_are_refused(capacity: int, high_water: int) -> None:
    with pytest.raises(ValueError):
        Buffer(capacity=capacity, high_water=high_water)


def test_in_flight_past_its_deadline_is_copied_not_taken_back() -> None:
    buffer = Buffer(capacity=10, high_water=10)
    buffer.add(message(0, deadline=5.0))
    [slow] = buffer.take(now=0.0, limit=1)
    assert buffer.next_deadline() == 5.0, "an in-flight message still has a deadline"
    assert buffer.take_for_spill(now=4.0, limit=10) == []
    [copy] = buffer.take_for_spill(now=5.0, limit=10)
    assert copy is slow and copy.copying
    assert buffer.in_flight == 1, "it stays in flight: its confirm may still come"
    assert buffer.take_for_spill(now=6.0, limit=10) == [], "copied once only"
    assert buffer.spilled([copy]) == []
    assert len(buffer) == 0 and buffer.empty.is_set(), "the stored copy settles it"
    assert buffer.next_deadline() is None
    assert buffer.settle(slow) is True, "its confirm makes the stored copy redundant"
    assert buffer.in_flight == 0


def test_a_copy_confirmed_while_it_was_written_is_reported_redundant() -> None:
    buffer = Buffer(capacity=10, high_water=10)
    buffer.add(message(0, deadline=5.0))
    [slow] = buffer.take(now=0.0, limit=1)
    [copy] = buffer.take_for_spill(now=5.0, limit=10)
    assert buffer.settle(slow) is False, "no copy stored yet"
    assert buffer.spilled([copy]) == ["m0"]


def test_a_failed_publish_of_a_stored_message_leaves_it_to_replay() -> None:
    buffer = Buffer(capacity=10, high_water=10)
    buffer.add(message(0, deadline=5.0))
    buffer.add(message(1, deadline=5.0))
    stored, other = buffer.take(now=0.0, limit=2)
    buffer.spilled(buffer.take_for_spill(now=5.0, limit=1))
    assert stored.stored and not other.stored
    buffer.retry([stored, other])
    assert ids(buffer.take(now=5.0, limit=10)) == ["m1"], "only the unstored one comes back"


def test_a_copy_the_store_refused_is_copied_again_later() -> None:
    buffer = Buffer(capacity=10, high_water=10)
    buffer.add(message(0, deadline=5.0))
    buffer.take(now=0.0, limit=1)
    copies = buffer.take_for_spill(now=5.0, limit=10)
    buffer.unspill(copies)
    assert len(buffer) == 1 and buffer.in_flight == 1
    assert ids(buffer.take_for_spill(now=6.0, limit=10)) == ["m0"]


def test_the_byte_bound_refuses_at_once_and_frees_on_settle() -> None:
    buffer = Buffer(capacity=100, high_water=100, max_bytes=10)
    first = message(0)
    first.body = b"x" * 6
    buffer.add(first)
    second = message(1)
    second.body = b"y" * 5
    with pytest.raises(BufferFull) as caught:
        buffer.add(second)
    assert caught.value.max_bytes == 10
    assert (len(buffer), buffer.bytes) == (1, 6)
    [taken] = buffer.take(now=0.0, limit=1)
    buffer.settle(taken)
    buffer.add(second)
    assert buffer.bytes == 5


def test_one_message_larger_than_the_byte_bound_is_accepted_into_an_empty_buffer() -> None:
    buffer = Buffer(capacity=100, high_water=100, max_bytes=10)
    big = message(0)
    big.body = b"x" * 50
    buffer.add(big)
    with pytest.raises(BufferFull):
        buffer.add(message(1))


def test_an_id_still_in_flight_with_a_stored_copy_cannot_be_reused() -> None:
    buffer = Buffer(capacity=5, high_water=5)
    first = message(0, deadline=1.0)
    buffer.add(first)
    buffer.take(now=0.0, limit=1)
    [copy] = buffer.take_for_spill(now=2.0, limit=10)
    buffer.spilled([copy])
    assert len(buffer) == 0 and buffer.in_flight == 1
    with pytest.raises(InvalidMessage, match="already in use"):
        buffer.add(message(0))
    # Its confirm settles the first message only, and the copy is reported redundant.
    assert buffer.settle(first)
    assert buffer.in_flight == 0
    buffer.add(message(0))
    assert len(buffer) == 1


def test_a_dead_message_is_stored_and_never_published_again() -> None:
    buffer = Buffer(capacity=5, high_water=5)
    doomed = message(0)
    buffer.add(doomed)
    buffer.add(message(1))
    [taken] = buffer.take(now=0.0, limit=1)
    taken.dead = True
    buffer.hold(taken, not_before=0.0)
    assert ids(buffer.take(now=100.0, limit=10)) == ["m1"]
    [spilled] = buffer.take_for_spill(now=0.0, limit=10)
    assert spilled is doomed
    buffer.spilled([spilled])
    assert doomed.state is State.DEAD


def test_a_message_the_store_refused_stays_in_memory_and_is_not_offered_again() -> None:
    buffer = Buffer(capacity=5, high_water=5)
    refused = message(0, deadline=1.0)
    buffer.add(refused)
    [batch] = buffer.take_for_spill(now=2.0, limit=10)
    refused.unstorable = True
    buffer.unspill([batch])
    assert buffer.take_for_spill(now=3.0, limit=10) == []
    assert buffer.next_deadline() is None
    assert ids(buffer.take(now=3.0, limit=10)) == ["m0"]
    assert len(buffer) == 1


def test_a_copy_written_after_its_publish_failed_settles_the_message() -> None:
    buffer = Buffer(capacity=5, high_water=5)
    original = message(0, deadline=1.0)
    buffer.add(original)
    buffer.take(now=0.0, limit=1)
    [copy] = buffer.take_for_spill(now=2.0, limit=10)
    buffer.retry([original])  # the publish failed while the copy was being written
    assert buffer.spilled([copy]) == []
    assert original.state is State.STORED
    assert len(buffer) == 0 and buffer.take(now=3.0, limit=10) == []


def test_every_move_is_observed_and_a_move_not_listed_is_refused() -> None:
    seen: list[tuple[str, State]] = []
    buffer = Buffer(capacity=5, high_water=5, observer=lambda m, s: seen.append((m.message_id, s)))
    first = message(0)
    buffer.add(first)
    buffer.take(now=0.0, limit=1)
    buffer.settle(first)
    assert seen == [("m0", State.MEMORY), ("m0", State.IN_FLIGHT), ("m0", State.CONFIRMED)]
    with pytest.raises(AssertionError, match="no move from confirmed"):
        buffer.move(first, State.IN_FLIGHT)
