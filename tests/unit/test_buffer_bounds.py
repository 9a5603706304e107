"""The buffer's edges: limits, high water while a spill is under way, copies that land
after their publish failed, refused spills of mixed batches."""

from __future__ import annotations

import pytest

from aioproducer import BufferFull, Message
from aioproducer._buffer import Buffer
from aioproducer._message import State
from tests.unit.test_buffer import ids, message


def state(message: Message) -> State:
    return message.state


def test_a_buffer_of_one_message_is_allowed_and_bad_bounds_say_which() -> None:
    buffer = Buffer(capacity=1, high_water=1)
    buffer.add(message(0))
    assert len(buffer) == 1
    with pytest.raises(ValueError, match=r"^max_buffer must be at least 1$"):
        Buffer(capacity=0, high_water=1)
    with pytest.raises(ValueError, match=r"^high_water must be between 1 and max_buffer$"):
        Buffer(capacity=2, high_water=3)


def test_bytes_add_up_and_a_message_that_fills_the_bound_exactly_is_taken() -> None:
    size = message(0).size
    buffer = Buffer(capacity=10, high_water=10, max_bytes=2 * size)
    buffer.add(message(0))
    buffer.add(message(1))
    assert buffer.bytes == 2 * size
    with pytest.raises(BufferFull) as caught:
        buffer.add(message(2))
    assert (caught.value.capacity, caught.value.max_bytes) == (10, 2 * size)


def test_the_spill_task_is_woken_by_a_new_head_or_memory_above_high_water() -> None:
    buffer = Buffer(capacity=10, high_water=3)
    woken = []
    for n in range(5):
        buffer.needs_spill.clear()
        buffer.add(message(n))
        woken.append(buffer.needs_spill.is_set())
    # m0 is a new head; m1, m2 are behind it, within high water; m3, m4 are above it.
    assert woken == [True, False, False, True, True]


def test_held_messages_are_taken_no_more_than_the_limit() -> None:
    buffer = Buffer(capacity=10, high_water=10)
    for n in range(3):
        buffer.add(message(n))
    for held in buffer.take(now=0.0, limit=3):
        buffer.hold(held, not_before=1.0)
    assert ids(buffer.take(now=1.0, limit=2)) == ["m0", "m1"]
    assert ids(buffer.take(now=1.0, limit=2)) == ["m2"]


def test_a_retried_message_goes_back_without_a_wait_even_after_a_refused_spill() -> None:
    buffer = Buffer(capacity=10, high_water=10)
    buffer.add(message(0, deadline=5.0))
    [m0] = buffer.take(now=0.0, limit=1)
    buffer.hold(m0, not_before=2.0)
    [m0] = buffer.take(now=2.0, limit=1)
    buffer.retry([m0])  # a lost connection: no wait of its own
    [spilling] = buffer.take_for_spill(now=6.0, limit=10)
    buffer.unspill([spilling])
    assert ids(buffer.take(now=0.0, limit=10)) == ["m0"]


def test_each_kind_taken_for_the_store_stops_at_the_limit_and_keeps_the_rest() -> None:
    buffer = Buffer(capacity=20, high_water=20)
    for n in range(9):
        buffer.add(message(n, deadline=5.0))
    taken = buffer.take(now=0.0, limit=6)
    for dead in taken[:3]:
        dead.dead = True
        buffer.hold(dead, not_before=0.0)
    for held in taken[3:]:
        buffer.hold(held, not_before=100.0)
    # Three dead, three held, three pending past their deadline: two at a time.
    batches = []
    while batch := buffer.take_for_spill(now=10.0, limit=2):
        assert len(batch) <= 2
        batches.append(ids(batch))
        buffer.spilled(batch)
    assert batches == [["m0", "m1"], ["m2", "m3"], ["m4", "m5"], ["m6", "m7"], ["m8"]]
    assert len(buffer) == 0


def test_high_water_counts_what_is_taken_this_round_and_what_is_being_written() -> None:
    buffer = Buffer(capacity=20, high_water=3)
    for n in range(4):
        buffer.add(message(n))
    [h0, h1] = buffer.take(now=0.0, limit=2)
    buffer.hold(h0, not_before=100.0)
    buffer.hold(h1, not_before=100.0)
    buffer.add(message(4))
    buffer.add(message(5))
    # 6 in memory, high water 3: the 2 held plus the oldest pending one.
    first = buffer.take_for_spill(now=0.0, limit=10)
    assert ids(first) == ["m0", "m1", "m2"]
    # While those 3 are being written, memory holds 3 more: at high water, none.
    assert buffer.take_for_spill(now=0.0, limit=10) == []
    buffer.add(message(6))
    assert ids(buffer.take_for_spill(now=0.0, limit=10)) == ["m3"]
    buffer.spilled(first)
    # Written: the count of what is being written goes back down.
    buffer.add(message(7))
    buffer.add(message(8))
    assert ids(buffer.take_for_spill(now=0.0, limit=10)) == ["m4", "m5"]


def test_close_takes_everything_and_high_water_still_counts_right_afterwards() -> None:
    buffer = Buffer(capacity=20, high_water=2)
    for n in range(5):
        buffer.add(message(n))
    early = buffer.take_for_spill(now=0.0, limit=10)
    assert ids(early) == ["m0", "m1", "m2"]
    rest = buffer.take_all()
    assert ids(rest) == ["m3", "m4"]
    buffer.unspill(rest)
    buffer.spilled(early)
    # Two in memory, nothing being written: at high water, none is taken early.
    assert buffer.take_for_spill(now=0.0, limit=10) == []
    buffer.add(message(5))
    assert ids(buffer.take_for_spill(now=0.0, limit=10)) == ["m3"]


def test_unstorable_messages_are_skipped_not_a_stop() -> None:
    buffer = Buffer(capacity=10, high_water=10)
    for n in range(3):
        buffer.add(message(n, deadline=1.0))
    [m0, m1, m2] = buffer.take(now=0.0, limit=3)
    buffer.retry([m0, m1, m2])
    m0.unstorable = True
    assert ids(buffer.take_for_spill(now=2.0, limit=10)) == ["m1", "m2"]
    assert ids(buffer.take(now=0.0, limit=10)) == ["m0"]


def test_an_unstorable_head_not_yet_due_does_not_hide_a_message_past_its_deadline() -> None:
    # A message the store refused, published again and cut short, goes back to the head
    # of the queue, before an older message already past its deadline.
    buffer = Buffer(capacity=10, high_water=10)
    buffer.add(message(0, deadline=5.0))
    buffer.add(message(1, deadline=6.0))
    [older, refused] = buffer.take(now=0.0, limit=2)
    refused.unstorable = True
    buffer.retry([older])
    buffer.retry([refused])
    # The spill task waits until the next deadline, then takes what is due: were the
    # two to disagree, it would wake at once and find nothing, again and again.
    assert buffer.next_deadline() == 5.0
    assert ids(buffer.take_for_spill(now=5.5, limit=10)) == ["m0"]
    assert buffer.next_deadline() is None
    assert ids(buffer.take(now=5.5, limit=10)) == ["m1"]


def test_a_newer_message_retried_after_a_hold_does_not_delay_an_older_ones_spill() -> None:
    # m1 is nacked and held; m0 is cut short by a lost connection and waits in the
    # queue; m1's hold ends and it goes out first (held ones do), then the connection
    # is lost again. m1 comes back newer than m0, which is due first.
    buffer = Buffer(capacity=10, high_water=10)
    buffer.add(message(0, deadline=5.0))
    buffer.add(message(1, deadline=6.0))
    m0, m1 = buffer.take(now=0.0, limit=2)
    buffer.hold(m1, not_before=1.0)
    buffer.retry([m0])
    assert buffer.take(now=1.0, limit=1) == [m1]
    buffer.retry([m1])
    assert buffer.next_deadline() == 5.0
    assert ids(buffer.take_for_spill(now=5.5, limit=10)) == ["m0"]
    assert buffer.next_deadline() == 6.0
    assert ids(buffer.take(now=5.5, limit=10)) == ["m1"]


def test_messages_put_back_keep_the_queue_in_deadline_order() -> None:
    buffer = Buffer(capacity=10, high_water=10)
    for n, deadline in enumerate([1.0, 2.0, 3.0, 4.0, 5.0]):
        buffer.add(message(n, deadline=deadline))
    m0, m1, m2, m3 = buffer.take(now=0.0, limit=4)
    buffer.retry([m3, m1])  # older than m4, still queued
    buffer.retry([m2, m0])  # m2 belongs between m1 and m3
    batch = buffer.take_for_spill(now=2.5, limit=10)
    assert ids(batch) == ["m0", "m1"]
    buffer.unspill(batch)  # the store refused them: back in their places
    assert ids(buffer.take(now=2.5, limit=10)) == ["m0", "m1", "m2", "m3", "m4"]


def test_a_refused_spill_of_a_mixed_batch_puts_every_message_back() -> None:
    buffer = Buffer(capacity=10, high_water=10)
    buffer.add(message(0, deadline=1.0))
    [slow] = buffer.take(now=0.0, limit=1)
    buffer.add(message(1, deadline=1.0))
    buffer.add(message(2, deadline=1.0))
    [dead] = buffer.take(now=0.0, limit=1)
    dead.dead = True
    buffer.hold(dead, not_before=0.0)
    batch = buffer.take_for_spill(now=2.0, limit=10)
    assert set(ids(batch)) == {"m0", "m1", "m2"}
    # The copy of the in-flight m0 comes first; the refusal must still reach the rest.
    batch.sort(key=lambda m: not m.copying)
    buffer.unspill(batch)
    assert not slow.copying and slow.state is State.IN_FLIGHT
    assert buffer.held == 1
    again = buffer.take_for_spill(now=2.0, limit=10)
    assert set(ids(again)) == {"m0", "m1", "m2"}
    buffer.spilled(again)
    assert len(buffer) == 0
    assert buffer.in_flight == 1  # m0: its copy is stored, its publish still out


def test_a_stored_message_whose_publish_fails_for_itself_is_left_to_replay() -> None:
    buffer = Buffer(capacity=10, high_water=10)
    buffer.add(message(0, deadline=1.0))
    [m0] = buffer.take(now=0.0, limit=1)
    buffer.spilled(buffer.take_for_spill(now=2.0, limit=10))
    assert state(m0) is State.STORED_IN_FLIGHT
    buffer.hold(m0, not_before=50.0)  # nacked: the stored copy has it
    assert state(m0) is State.STORED
    assert (len(buffer), buffer.in_flight, buffer.held) == (0, 0, 0)
    buffer.add(message(0))  # the id is free again


@pytest.mark.parametrize("dead", [False, True])
def test_a_copy_that_lands_after_its_publish_failed_takes_it_out_of_memory(dead: bool) -> None:
    buffer = Buffer(capacity=10, high_water=10)
    buffer.add(message(0, deadline=1.0))
    [m0] = buffer.take(now=0.0, limit=1)
    buffer.add(message(1, deadline=100.0))
    [copy] = buffer.take_for_spill(now=2.0, limit=10)
    assert copy is m0 and m0.copying
    m0.dead = dead
    buffer.hold(m0, not_before=50.0)  # nacked while its copy was being written
    assert buffer.held == 1
    assert buffer.spilled([copy]) == []
    assert m0.state is State.STORED
    assert buffer.held == 0 and len(buffer) == 1
    assert buffer.has_pending.is_set(), "m1 is still waiting"
    assert ids(buffer.take(now=0.0, limit=10)) == ["m1"]


def test_a_copy_that_lands_after_a_retry_leaves_the_other_pending_messages_alone() -> None:
    buffer = Buffer(capacity=10, high_water=10)
    buffer.add(message(0, deadline=1.0))
    [m0] = buffer.take(now=0.0, limit=1)
    buffer.add(message(1, deadline=100.0))
    [copy] = buffer.take_for_spill(now=2.0, limit=10)
    buffer.retry([m0])  # lost connection while the copy was written
    buffer.spilled([copy])
    assert m0.state is State.STORED
    assert buffer.has_pending.is_set()
    assert ids(buffer.take(now=0.0, limit=10)) == ["m1"]
