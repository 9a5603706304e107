"""The store operations that tools use: scan, get, counts by key, requeue and purge of dead.

Run against every store backend (SQLite and MongoDB through PyMongo on nx-27017).
"""

from __future__ import annotations

import dataclasses

from aioproducer._stores._base import KeyCount, Store

from .backends import FakeClock
from .conftest import Messages

LEASE = 30.0


async def _all(store: Store, dead: bool | None = None, batch: int = 500) -> list[str]:
    return [m.message_id async for m in store.scan(dead=dead, batch=batch)]


async def test_scan_reads_every_message_in_id_order_across_batches(
    store: Store, messages: Messages
) -> None:
    live = messages.many(7)
    dead = messages.many(3, dead=True, attempts=5, last_error="returned: 312 NO_ROUTE")
    await store.put([*live, *dead])
    everything = sorted(m.message_id for m in [*live, *dead])
    assert await _all(store, batch=2) == everything
    assert await _all(store, batch=3) == everything
    assert await _all(store, dead=True, batch=2) == sorted(m.message_id for m in dead)
    assert await _all(store, dead=False) == sorted(m.message_id for m in live)
    scanned = [m async for m in store.scan(dead=True)]
    assert all(m.dead and m.attempts == 5 and m.lease_token is None for m in scanned)
    assert scanned[0].last_error == "returned: 312 NO_ROUTE"
    assert scanned[0].body == next(m.body for m in dead if m.message_id == scanned[0].message_id)


async def test_scan_is_in_id_order_whatever_the_write_order(
    store: Store, messages: Messages
) -> None:
    batch = messages.many(5)
    await store.put(batch[::-1])
    await store.put([batch[2]])
    assert await _all(store, batch=2) == sorted(m.message_id for m in batch)
    assert await _all(store) == sorted(m.message_id for m in batch)


async def test_scan_of_an_empty_store(store: Store) -> None:
    assert await _all(store) == []


async def test_get_returns_the_message_or_none(store: Store, messages: Messages) -> None:
    message = messages(headers={"k": "v"}, routing_key="r")
    await store.put([message])
    got = await store.get(message.message_id)
    assert got is not None
    assert (got.body, got.headers, got.routing_key) == (message.body, {"k": "v"}, "r")
    assert await store.get("missing") is None


async def test_get_and_scan_hand_out_no_lease_token(store: Store, messages: Messages) -> None:
    """Even for a message leased right now: a tool's copy cannot release the lease."""
    message = messages()
    await store.put([message])
    [leased] = await store.claim("a", limit=1, lease=LEASE)
    assert leased.lease_token is not None
    got = await store.get(message.message_id)
    assert got is not None and got.lease_token is None
    assert [m.lease_token async for m in store.scan()] == [None]


async def test_by_key_counts_all_and_dead_largest_first(store: Store, messages: Messages) -> None:
    await store.put(
        [
            *messages.many(3, exchange="ex", routing_key="a"),
            *messages.many(1, exchange="ex", routing_key="a", dead=True),
            *messages.many(2, exchange="", routing_key="b"),
        ]
    )
    assert await store.by_key() == [KeyCount("ex", "a", 4, 1), KeyCount("", "b", 2, 0)]


async def test_by_key_orders_by_total_then_by_name_and_counts_every_dead_message(
    store: Store, messages: Messages
) -> None:
    """Largest total first (never most dead first); equal totals by exchange, then
    routing key (never by their counts); every dead message counted, not just one."""
    await store.put(
        [
            *messages.many(1, exchange="x", routing_key="b"),
            *messages.many(1, exchange="x", routing_key="b", dead=True),
            *messages.many(2, exchange="", routing_key="z", dead=True),
            *messages.many(3, exchange="ex", routing_key="a"),
        ]
    )
    assert await store.by_key() == [
        KeyCount("ex", "a", 3, 0),
        KeyCount("", "z", 2, 2),
        KeyCount("x", "b", 2, 1),
    ]


async def test_requeue_makes_dead_messages_due_with_no_attempts(
    store: Store, messages: Messages, clock: FakeClock
) -> None:
    dead = messages.many(3, dead=True, attempts=5, due_at=clock() + 1000)
    live = messages()
    await store.put([*dead, live])
    requeued = await store.requeue([dead[0].message_id, live.message_id, "missing"])
    assert requeued == 1
    assert await store.requeue([]) == 0
    again = await store.get(dead[0].message_id)
    assert again is not None and not again.dead and again.attempts == 0
    assert again.due_at <= clock()
    backlog = await store.backlog()
    assert backlog.dead == 2


async def test_requeue_of_nothing_dead_counts_0(store: Store, messages: Messages) -> None:
    live = messages()
    await store.put([live])
    assert await store.requeue([live.message_id, "missing"]) == 0
    got = await store.get(live.message_id)
    assert got is not None and not got.dead


async def test_requeue_ends_a_lease_the_dead_message_still_carried(
    store: Store, messages: Messages
) -> None:
    """Leased by one replayer, then stored as dead by another: requeued, it is due at
    once for anyone, and the first replayer's late release changes nothing."""
    message = messages()
    await store.put([message])
    [leased] = await store.claim("a", limit=10, lease=LEASE)
    await store.put([dataclasses.replace(message, attempts=5, dead=True)])
    assert await store.requeue([message.message_id]) == 1
    [again] = await store.claim("b", limit=10, lease=LEASE)
    assert again.message_id == message.message_id and again.attempts == 0
    leased.attempts, leased.dead = 9, True
    await store.release("a", [leased])
    held = await store.get(message.message_id)
    assert held is not None and (held.attempts, held.dead) == (0, False)


async def test_requeue_to_another_exchange_and_routing_key(
    store: Store, messages: Messages
) -> None:
    dead = messages(dead=True, attempts=2, exchange="gone", routing_key="old")
    await store.put([dead])
    assert await store.requeue([dead.message_id], exchange="", routing_key="new") == 1
    claimed = await store.claim("a", limit=10, lease=LEASE)
    assert [(m.message_id, m.exchange, m.routing_key) for m in claimed] == [
        (dead.message_id, "", "new")
    ]


async def test_purge_dead_deletes_only_dead_messages(store: Store, messages: Messages) -> None:
    dead = messages.many(3, dead=True)
    live = messages.many(2)
    await store.put([*dead, *live])
    assert await store.purge_dead([dead[0].message_id, live[0].message_id]) == 1
    assert await store.purge_dead([]) == 0
    assert await store.purge_dead() == 2
    assert await store.purge_dead() == 0
    assert sorted(await _all(store)) == sorted(m.message_id for m in live)
