"""The store contract: every store passes these, whatever database is behind it.

Backends: SQLite (a temporary file) and MongoDB through the real PyMongo driver:
nx-27017, a MongoDB wire-protocol server, and a real server as well when
``AIOPRODUCER_TEST_MONGO_URL`` is set (the test id says which). Time is a fake
clock, given to every store: leases expire without sleeping.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import multiprocessing
import random
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pamqp import encode

from aioproducer._message import Message, Properties
from aioproducer._stores._base import Store

from ._workers import claim_until_empty
from .backends import Backend, FakeClock, StoreSpec
from .conftest import Messages

LEASE = 30.0


#: What a store keeps of a message; the rest only means something in one process.
STORED = (
    "message_id", "body", "exchange", "routing_key", "content_type",
    "timestamp", "headers", "attempts", "last_error", "due_at", "dead", "properties",
)  # fmt: skip

#: Every AMQP property a message may carry, each set to a value of its own.
EVERY_PROPERTY = Properties(
    priority=255,
    correlation_id="corr-é",
    reply_to="amq.rabbitmq.reply-to",
    expiration="60000",
    type="order.created",
    app_id="shop",
    user_id="guest",
    content_encoding="gzip",
    persistent=False,
    mandatory=False,
)


def fields(message: Message) -> dict[str, Any]:
    return {name: getattr(message, name) for name in STORED}


def ids(messages: list[Message]) -> list[str]:
    return [m.message_id for m in messages]


async def test_satisfies_the_store_protocol(store: Store) -> None:
    assert isinstance(store, Store)


async def test_empty_store(store: Store) -> None:
    assert await store.count() == 0
    assert await store.claim("a", limit=10, lease=LEASE) == []
    await store.put([])
    await store.ack([])
    await store.release("a", [])
    assert await store.count() == 0


async def test_put_claim_ack(store: Store, messages: Messages) -> None:
    batch = messages.many(3)
    await store.put(batch)
    assert await store.count() == 3

    claimed = await store.claim("a", limit=10, lease=LEASE)
    assert ids(claimed) == ids(batch)
    assert await store.count() == 3  # leased messages are still held

    await store.ack([batch[0].message_id, batch[2].message_id, "no-such-id"])
    assert await store.count() == 1
    await store.ack([batch[1].message_id])
    assert await store.count() == 0


async def test_claim_respects_limit(store: Store, messages: Messages) -> None:
    await store.put(messages.many(5))
    assert await store.claim("a", limit=0, lease=LEASE) == []
    assert len(await store.claim("a", limit=2, lease=LEASE)) == 2
    assert len(await store.claim("a", limit=2, lease=LEASE)) == 2
    assert len(await store.claim("a", limit=2, lease=LEASE)) == 1
    assert await store.claim("a", limit=2, lease=LEASE) == []


async def test_put_is_idempotent_by_message_id(store: Store, messages: Messages) -> None:
    first = messages()
    await store.put([first])
    again = dataclasses.replace(first, body=b"changed", routing_key="other")
    await store.put([again])
    assert await store.count() == 1

    new = messages.many(2)
    await store.put([new[0], first, new[1], new[0]])  # known and repeated ids in one batch
    assert await store.count() == 3

    claimed = await store.claim("a", limit=10, lease=LEASE)
    assert fields(claimed[0]) == fields(first)  # the first write won
    assert sorted(ids(claimed)) == sorted(ids([first, *new]))


async def test_put_moves_a_held_copys_failure_record_forward_only(
    store: Store, messages: Messages, clock: FakeClock
) -> None:
    """A copy written by a call that then failed must not outlive the message's fate."""
    first = messages()
    await store.put([first])
    failed = dataclasses.replace(
        first, body=b"changed", attempts=2, last_error="nacked: twice", dead=True,
        due_at=clock.now + 60,
    )  # fmt: skip
    await store.put([failed])
    held = await store.get(first.message_id)
    assert held is not None
    assert (held.attempts, held.last_error, held.dead, held.due_at) == (
        2, "nacked: twice", True, clock.now + 60,
    )  # fmt: skip
    assert held.body == first.body  # the record itself stays the first write
    assert await store.claim("a", limit=10, lease=LEASE) == []
    # An older failure record never moves it back.
    await store.put([dataclasses.replace(first, attempts=1, dead=False)])
    again = await store.get(first.message_id)
    assert again is not None and (again.attempts, again.dead) == (2, True)


async def test_put_moves_each_held_copy_by_its_own_failure_record(
    store: Store, messages: Messages, clock: FakeClock
) -> None:
    """More attempts alone, or dead alone, each moves its own copy forward; a copy the
    put is not ahead of (a dead copy put dead again with no more attempts) keeps its
    last error and due time."""
    untouched, retried, failed = messages.many(3)
    await store.put([untouched, retried, failed])
    await store.put(
        [
            dataclasses.replace(retried, attempts=2, last_error="nacked", due_at=clock.now + 60),
            dataclasses.replace(failed, dead=True, last_error="returned: 312 NO_ROUTE"),
        ]
    )
    records = {}
    for message in (untouched, retried, failed):
        held = await store.get(message.message_id)
        assert held is not None
        records[message.message_id] = (held.attempts, held.last_error, held.due_at, held.dead)
    assert records == {
        untouched.message_id: (0, None, 0.0, False),
        retried.message_id: (2, "nacked", clock.now + 60, False),
        failed.message_id: (0, "returned: 312 NO_ROUTE", 0.0, True),
    }
    await store.put(
        [
            dataclasses.replace(failed, dead=True, last_error="older", due_at=clock.now + 5),
            dataclasses.replace(retried, attempts=1, last_error="older", due_at=clock.now + 5),
        ]
    )
    for message in (retried, failed):
        held = await store.get(message.message_id)
        assert held is not None
        assert (held.attempts, held.last_error, held.due_at, held.dead) == records[
            message.message_id
        ]


async def test_a_release_never_moves_a_failure_record_back(
    store: Store, messages: Messages
) -> None:
    message = messages()
    await store.put([message])
    [leased] = await store.claim("a", limit=10, lease=LEASE)
    # Meanwhile the message failed for good elsewhere and was stored as dead.
    await store.put([dataclasses.replace(message, attempts=3, dead=True)])
    leased.attempts, leased.last_error = 1, "returned: 312 NO_ROUTE"
    await store.release("a", [leased])
    held = await store.get(message.message_id)
    assert held is not None and (held.attempts, held.dead) == (3, True)
    assert await store.claim("b", limit=10, lease=LEASE) == []


async def test_put_leaves_a_leased_message_alone(store: Store, messages: Messages) -> None:
    message = messages()
    await store.put([message])
    assert ids(await store.claim("a", limit=10, lease=LEASE)) == [message.message_id]
    await store.put([message])
    assert await store.claim("b", limit=10, lease=LEASE) == []


async def test_claim_oldest_accepted_first(
    store: Store, messages: Messages, clock: FakeClock
) -> None:
    batch = [messages(timestamp=clock.now - 100 + i) for i in range(12)]
    shuffled = batch[:]
    random.Random(3).shuffle(shuffled)
    for start in range(0, 12, 5):  # several puts, in no particular order
        await store.put(shuffled[start : start + 5])

    got = [ids(await store.claim("a", limit=5, lease=LEASE)) for _ in range(3)]
    assert got == [ids(batch[0:5]), ids(batch[5:10]), ids(batch[10:12])]


async def test_message_due_later_is_not_claimed_before(
    store: Store, messages: Messages, clock: FakeClock
) -> None:
    now_due, later = messages(), messages(due_at=clock.now + 60)
    await store.put([later, now_due])

    assert ids(await store.claim("a", limit=10, lease=LEASE)) == [now_due.message_id]
    await store.ack([now_due.message_id])
    clock.advance(59.5)
    assert await store.claim("a", limit=10, lease=LEASE) == []
    clock.advance(0.5)
    claimed = await store.claim("a", limit=10, lease=LEASE)
    assert [fields(m) for m in claimed] == [fields(later)]


async def test_lease_expires_and_the_message_is_claimed_again(
    store: Store, messages: Messages, clock: FakeClock
) -> None:
    batch = messages.many(3)
    await store.put(batch)
    assert ids(await store.claim("crashed", limit=10, lease=LEASE)) == ids(batch)

    clock.advance(LEASE - 0.5)
    assert await store.claim("b", limit=10, lease=LEASE) == []
    clock.advance(0.5)  # the lease runs out: the owner is presumed dead
    assert ids(await store.claim("b", limit=10, lease=LEASE)) == ids(batch)
    assert await store.claim("c", limit=10, lease=LEASE) == []  # now b holds them


async def test_release_saves_attempts_error_and_due_time(
    store: Store, messages: Messages, clock: FakeClock
) -> None:
    message = messages()
    await store.put([message])
    (claimed,) = await store.claim("a", limit=10, lease=LEASE)

    claimed.attempts = 3
    claimed.last_error = "NOT_FOUND - no exchange 'missing' ✗"
    claimed.due_at = clock.now + 5
    await store.release("a", [claimed])
    assert await store.claim("b", limit=10, lease=LEASE) == []  # released, but not yet due

    clock.advance(5)
    (again,) = await store.claim("b", limit=10, lease=LEASE)
    assert fields(again) == fields(claimed)
    assert again.attempts == 3 and again.last_error == claimed.last_error


async def test_release_saves_dead_and_a_dead_message_is_never_claimed(
    store: Store, messages: Messages, clock: FakeClock
) -> None:
    message = messages()
    await store.put([message])
    (claimed,) = await store.claim("a", limit=10, lease=LEASE)
    claimed.attempts, claimed.last_error, claimed.dead = 5, "NO_ROUTE", True
    await store.release("a", [claimed])

    clock.advance(10 * LEASE)
    assert await store.claim("b", limit=10, lease=LEASE) == []
    assert await store.count() == 1  # kept, for inspection
    backlog = await store.backlog()
    assert (backlog.total, backlog.dead, backlog.due) == (1, 1, 0)


async def test_a_message_put_dead_is_kept_and_never_claimed(
    store: Store, messages: Messages
) -> None:
    dead, live = messages(dead=True, attempts=9), messages()
    await store.put([dead, live])
    assert ids(await store.claim("a", limit=10, lease=LEASE)) == [live.message_id]
    assert await store.claim("a", limit=10, lease=LEASE) == []
    assert await store.count() == 2
    assert (await store.backlog()).dead == 1


async def test_each_claim_sets_a_fresh_lease_token(store: Store, messages: Messages) -> None:
    await store.put(messages.many(4))
    first = await store.claim("a", limit=2, lease=LEASE)
    second = await store.claim("a", limit=2, lease=LEASE)
    tokens = {m.lease_token for m in first} | {m.lease_token for m in second}
    assert None not in tokens
    assert len({m.lease_token for m in first}) == 1
    assert len(tokens) == 2


async def test_release_by_an_earlier_claim_of_the_same_owner_is_ignored(
    store: Store, messages: Messages, clock: FakeClock
) -> None:
    """Two producers given the same owner name cannot undo each other's leases."""
    message = messages()
    await store.put([message])
    (old,) = await store.claim("same-name", limit=10, lease=LEASE)
    clock.advance(LEASE)
    (new,) = await store.claim("same-name", limit=10, lease=LEASE)
    assert new.lease_token != old.lease_token

    await store.release("same-name", [dataclasses.replace(old, attempts=4, last_error="late")])
    assert await store.claim("other", limit=10, lease=LEASE) == []  # still the new claim's
    await store.release("same-name", [dataclasses.replace(new, attempts=1)])
    (again,) = await store.claim("other", limit=10, lease=LEASE)
    assert (again.attempts, again.last_error) == (1, None)


async def test_release_of_a_message_never_claimed_is_ignored(
    store: Store, messages: Messages
) -> None:
    message = messages()
    await store.put([message])
    (claimed,) = await store.claim("a", limit=10, lease=LEASE)
    await store.release("a", [dataclasses.replace(claimed, lease_token=None, attempts=3)])
    assert await store.claim("b", limit=10, lease=LEASE) == []  # still leased to a


async def test_backlog_counts_each_state(
    store: Store, messages: Messages, clock: FakeClock
) -> None:
    empty = await store.backlog()
    assert (empty.total, empty.due, empty.leased, empty.held, empty.dead) == (0, 0, 0, 0, 0)
    assert empty.oldest is None

    oldest = messages(timestamp=clock.now - 500)
    due = [oldest, *messages.many(3)]
    held = messages.many(2, due_at=clock.now + 60)
    dead = messages(dead=True)
    await store.put([*due, *held, dead])
    await store.claim("a", limit=1, lease=LEASE)  # leases the oldest due

    backlog = await store.backlog()
    assert (backlog.total, backlog.due, backlog.leased, backlog.held, backlog.dead) == (
        7, 3, 1, 2, 1,
    )  # fmt: skip
    assert backlog.oldest == oldest.timestamp
    assert await store.count() == 7

    clock.advance(LEASE + 60)  # the lease expires and the held ones come due
    backlog = await store.backlog()
    assert (backlog.due, backlog.leased, backlog.held) == (6, 0, 0)


async def test_backlog_counts_a_dead_message_as_dead_only_and_finds_the_oldest(
    store: Store, messages: Messages, clock: FakeClock
) -> None:
    """A dead message is neither held (whatever its due time) nor leased (whatever
    lease it still carries); the oldest is the earliest accepted, not the first written."""
    leased_then_dead = messages()
    await store.put([leased_then_dead])
    await store.claim("a", limit=1, lease=LEASE)
    await store.put([dataclasses.replace(leased_then_dead, attempts=1, dead=True)])
    due = messages()
    dead_later = messages(dead=True, due_at=clock.now + 60)
    oldest = messages(timestamp=clock.now - 500)
    await store.put([due, dead_later, oldest])

    backlog = await store.backlog()
    assert (backlog.total, backlog.due, backlog.leased, backlog.held, backlog.dead) == (
        4, 2, 0, 0, 2,
    )  # fmt: skip
    assert backlog.oldest == oldest.timestamp


async def test_claim_takes_the_earliest_due_first(
    store: Store, messages: Messages, clock: FakeClock
) -> None:
    late_due = messages(timestamp=clock.now - 100, due_at=clock.now - 10)
    early_due = messages(timestamp=clock.now - 50, due_at=clock.now - 20)
    never_failed = messages(timestamp=clock.now - 40, due_at=clock.now - 20)
    await store.put([late_due, never_failed, early_due])
    got = ids(await store.claim("a", limit=10, lease=LEASE))
    assert got == ids([early_due, never_failed, late_due])


async def test_the_largest_body_is_stored_with_64_kib_of_headers(
    store: Store, messages: Messages
) -> None:
    """``max_body_size``, with headers that fill 64 KiB on the AMQP wire and every
    property at its longest, all of what grows the most when stored (control
    characters, six bytes each in JSON)."""
    headers: dict[str, Any] = {"h": "\x01" * 65_000}
    assert len(encode.field_table(headers)) <= 64 * 1024
    longest = "\x01" * 255
    properties = Properties(
        priority=255, correlation_id=longest, reply_to=longest, expiration="4294967295",
        type=longest, app_id=longest, user_id=longest, content_encoding=longest,
        persistent=True, mandatory=True,
    )  # fmt: skip
    body = b"\xab" * type(store).max_body_size
    message = messages(
        body=body, headers=headers, last_error="E" * 1000, properties=properties,
        message_id="i" * 255, exchange="x" * 255, routing_key="r" * 255,
    )  # fmt: skip
    del body
    await store.put([message])
    assert await store.count() == 1
    assert (await store.backlog()).due == 1


async def test_release_makes_a_message_due_at_once(store: Store, messages: Messages) -> None:
    batch = messages.many(2)
    await store.put(batch)
    claimed = await store.claim("a", limit=10, lease=LEASE)
    await store.release("a", claimed)
    assert ids(await store.claim("b", limit=10, lease=LEASE)) == ids(batch)


async def test_release_by_a_non_owner_is_ignored(
    store: Store, messages: Messages, clock: FakeClock
) -> None:
    message = messages()
    await store.put([message])
    (held,) = await store.claim("a", limit=10, lease=LEASE)

    meddled = dataclasses.replace(held, attempts=9, last_error="not mine")
    await store.release("b", [meddled])
    assert await store.claim("b", limit=10, lease=LEASE) == []  # still a's

    clock.advance(LEASE)
    (again,) = await store.claim("c", limit=10, lease=LEASE)
    assert fields(again) == fields(message)  # b's release changed nothing


async def test_release_after_the_lease_moved_on_is_ignored(
    store: Store, messages: Messages, clock: FakeClock
) -> None:
    message = messages()
    await store.put([message])
    (old,) = await store.claim("slow", limit=10, lease=LEASE)
    clock.advance(LEASE)
    await store.claim("fast", limit=10, lease=LEASE)

    await store.release("slow", [dataclasses.replace(old, attempts=1)])
    assert await store.claim("other", limit=10, lease=LEASE) == []  # still fast's


async def test_release_of_an_acked_message_is_ignored(store: Store, messages: Messages) -> None:
    message = messages()
    await store.put([message])
    claimed = await store.claim("a", limit=10, lease=LEASE)
    await store.ack(ids(claimed))
    await store.release("a", claimed)
    assert await store.count() == 0


@pytest.mark.parametrize("owners", ["one-owner-per-task", "one-owner-for-all"])
async def test_concurrent_claimers_get_each_message_once(
    backend: Backend, messages: Messages, owners: str
) -> None:
    first = backend.make()
    batch = messages.many(300)
    await first.put(batch)
    stores = [first, backend.make()]  # two instances of the store, sharing the data

    async def claimer(n: int) -> list[str]:
        store = stores[n % 2]
        owner = f"owner-{n}" if owners == "one-owner-per-task" else "owner"
        got: list[str] = []
        while claimed := await store.claim(owner, limit=7, lease=LEASE):
            got.extend(ids(claimed))
        return got

    results = await asyncio.gather(*(claimer(n) for n in range(16)))
    counts = Counter(i for got in results for i in got)
    assert set(counts) == set(ids(batch))
    assert [i for i, n in counts.items() if n > 1] == []
    assert await first.claim("late", limit=10, lease=LEASE) == []


async def test_processes_sharing_a_store_get_each_message_once(
    backend: Backend, messages: Messages, tmp_path: Path
) -> None:
    assert backend.spec is not None
    store = backend.make()
    batch = messages.many(1000)
    await store.put(batch)
    await store.close()

    claimed = await asyncio.to_thread(_claim_in_processes, backend.spec, 4, tmp_path)
    counts = Counter(i for got in claimed for i in got)
    assert set(counts) == set(ids(batch))
    assert [i for i, n in counts.items() if n > 1] == []


def _claim_in_processes(spec: StoreSpec, n: int, tmp_path: Path) -> list[list[str]]:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(n)
    outs = [tmp_path / f"claimed-{i}.json" for i in range(n)]
    procs = [
        context.Process(target=claim_until_empty, args=(spec, f"proc-{i}", start, str(outs[i]), 5))
        for i in range(n)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=90)
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join()
    assert [proc.exitcode for proc in procs] == [0] * n
    for proc in procs:
        proc.close()
    return [json.loads(out.read_text()) for out in outs]


async def test_close_is_idempotent_and_the_store_reopens(
    backend: Backend, messages: Messages
) -> None:
    store = backend.make()
    await store.close()  # never opened
    batch = messages.many(2)
    await store.put(batch)
    await store.close()
    await store.close()
    assert await store.count() == 2  # reopened on use
    claimed = await store.claim("a", limit=10, lease=LEASE)
    await store.close()
    await store.release("a", claimed)
    await store.close()
    await store.ack(ids(claimed))
    assert await store.count() == 0
    await store.close()


async def test_message_round_trips_exactly(store: Store, messages: Messages) -> None:
    headers = {
        "bytes": b"\x00\xff\xfe raw",
        "text": "naïve ☃ 日本語 🙂",
        "when-utc": datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=UTC),
        "when-offset": datetime(2024, 1, 1, 8, 0, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        "when-naive": datetime(1999, 12, 31, 23, 59, 59, 999999),
        "nested": {"level": {"deeper": {"x": [1, 2.5, None, True, b"\x01", {"k": "v"}]}}},
        "int": 2**53 + 1,
        "negative": -17,
        "float": 0.1 + 0.2,
        "bool": False,
        "none": None,
        "empty": {},
        "list": ["a", ["b", ["c"]], []],
        "ключ": "значение",
        "$b": "a key that looks like the codec's tag",
    }
    message = messages(
        body=bytes(range(256)) + "ünïcödé".encode(),
        exchange="ex.ørders",
        routing_key="orders.créés.🙂",
        content_type="application/json; charset=utf-8",
        headers=headers,
        timestamp=1_700_000_000.123456789,
        attempts=2,
        last_error="PRECONDITION_FAILED: ✗ ü",
        due_at=1_699_999_999.987654321,
    )
    empty = messages(body=b"", headers={})
    plain = messages(headers=None)
    await store.put([message, empty, plain])

    claimed = await store.claim("a", limit=10, lease=LEASE)
    by_id = {m.message_id: m for m in claimed}
    for original in (message, empty, plain):
        assert fields(by_id[original.message_id]) == fields(original)
    got = by_id[message.message_id]
    assert type(got.body) is bytes
    assert got.headers is not None and type(got.headers["bytes"]) is bytes
    assert got.headers["when-offset"].utcoffset() == timedelta(hours=5, minutes=30)
    assert got.headers["when-naive"].tzinfo is None


@pytest.mark.parametrize(
    "properties",
    [EVERY_PROPERTY, Properties(priority=0), Properties(persistent=True), None],
    ids=["every", "priority-0", "persistent-only", "none"],
)
async def test_properties_come_back_from_every_read(
    store: Store, messages: Messages, properties: Properties | None
) -> None:
    message = messages(properties=properties)
    await store.put([message])
    got = await store.get(message.message_id)
    assert got is not None and got.properties == properties
    assert [m.properties async for m in store.scan()] == [properties]
    (claimed,) = await store.claim("a", limit=1, lease=LEASE)
    assert fields(claimed) == fields(message)
