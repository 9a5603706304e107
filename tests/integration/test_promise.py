"""Inputs the docs allow and faults nobody scripted, against the real broker: nothing is lost.

Each test here is one way an accepted message could have been lost or stranded:
header values the encoder could not carry, a stored message that breaks every
replay, a close() cancelled or facing a store that never answers, and a
connection opener that fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from aioproducer import Backoff, Message, ProducerState, SQLiteStore
from aioproducer._connection import AmqpLink
from aioproducer._context import Context
from aioproducer._fallback import read_messages
from aioproducer._link import Link
from tests.broker import AMQP_URL, drain, wait_for_ids
from tests.integration.conftest import ProducerFactory, proxied_url
from tests.proxy import TcpProxy
from tests.waiting import store_is_empty, wait_until

pytestmark = pytest.mark.broker

#: Every kind of header value the docs accept, with what a consumer reads back.
HEADERS: dict[str, Any] = {
    "bytes": b"\x00\xff",
    "tuple": (1, "two", None),
    "big": 2**63 - 1,
    "small": -(2**63),
    "double": 0.1,
    "huge": 1e300,
    "decimal": Decimal("3.14"),
    "when": datetime(2026, 11, 29, 12, 0, 0, 123456, UTC),
    "nested": {"list": [True, {"deep": "ünïcødé"}]},
    "text": "plain",
    "flag": False,
    "none": None,
    "byte": -7,
    "bytearray": bytearray(b"\x01"),
    "memoryview": memoryview(b"\x02"),
    "naive": datetime(2026, 1, 2, 3, 4, 5),
}
READ_BACK: dict[str, Any] = {
    "bytes": bytearray(b"\x00\xff"),
    "tuple": [1, "two", None],
    "big": 2**63 - 1,
    "small": -(2**63),
    "double": 0.1,
    "huge": 1e300,
    "decimal": Decimal("3.14"),
    "when": datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC),
    "nested": {"list": [True, {"deep": "ünïcødé"}]},
    "text": "plain",
    "flag": False,
    "none": None,
    "byte": -7,
    "bytearray": bytearray(b"\x01"),
    "memoryview": bytearray(b"\x02"),
    "naive": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
}


def stored_message(n: int, queue: str, **fields: Any) -> Message:
    values: dict[str, Any] = {
        "message_id": f"{queue}-{n}",
        "body": b'{"n": %d}' % n,
        "exchange": "",
        "routing_key": queue,
        "content_type": "application/json",
        "timestamp": 1_700_000_000.0 + n,
        **fields,
    }
    return Message(**values)


async def test_every_documented_header_type_is_delivered_and_nothing_stalls(
    make_producer: ProducerFactory, amqp: aio_pika.abc.AbstractRobustConnection, queue: str
) -> None:
    # One publish in flight at a time: a send that died would stop every message after it.
    producer = make_producer(max_in_flight=1)
    await producer.start()
    typed = {await producer.publish(b"typed", routing_key=queue, headers=HEADERS)}
    plain = {await producer.publish({"n": n}, routing_key=queue) for n in range(50)}
    got = await wait_for_ids(amqp, queue, typed | plain, timeout=60)
    [message] = [m for m in got if m.message_id in typed]
    assert message.headers == READ_BACK
    assert producer.stats().failed == 0


async def test_the_same_headers_survive_the_store_and_replay(
    make_producer: ProducerFactory, amqp: aio_pika.abc.AbstractRobustConnection, queue: str
) -> None:
    producer = make_producer("amqp://guest:guest@127.0.0.1:1/")
    await producer.start()
    message_id = await producer.publish(b"typed", routing_key=queue, headers=HEADERS)
    await wait_until(lambda: producer.stats().spilled == 1, what="stored")
    await producer.close()

    replayer = make_producer(store=SQLiteStore(Path(producer.store.path)))  # type: ignore[attr-defined]
    await replayer.start()
    [message] = await wait_for_ids(amqp, queue, {message_id}, timeout=60)
    assert message.headers == READ_BACK


async def test_a_stored_message_the_wire_cannot_carry_does_not_stall_replay(
    make_producer: ProducerFactory,
    amqp: aio_pika.abc.AbstractRobustConnection,
    queue: str,
    tmp_path: Path,
) -> None:
    """A record written by other means (an import, an older version) must not wedge replay."""
    store = SQLiteStore(tmp_path / "spill.db")
    good = [stored_message(n, queue) for n in range(30)]
    poison = stored_message(99, queue, headers={"n": 2**70})
    await store.put([*good[:15], poison, *good[15:]])
    await store.close()

    producer = make_producer(store=SQLiteStore(tmp_path / "spill.db"))
    await producer.start()
    got = await wait_for_ids(amqp, queue, {m.message_id for m in good}, timeout=60)

    def left() -> list[tuple[str, int, str]]:
        with sqlite3.connect(tmp_path / "spill.db") as db:
            return db.execute("SELECT message_id, attempts, last_error FROM messages").fetchall()

    await wait_until(lambda: len(left()) == 1 and left()[0][1] >= 1, what="the poison held")
    await producer.close()
    counts = [m.message_id for m in got + await drain(amqp, queue)]
    assert sorted(counts) == sorted(m.message_id for m in good)
    [(left_id, tries, error)] = left()
    assert left_id == poison.message_id and tries >= 1
    assert error == "failed: properties could not be encoded: InvalidMessage"


async def test_close_cancelled_with_messages_in_flight_stores_them_all(
    make_producer: ProducerFactory,
    amqp: aio_pika.abc.AbstractRobustConnection,
    queue: str,
    proxy: TcpProxy,
) -> None:
    producer = make_producer(proxied_url(proxy), spill_after=60.0, confirm_timeout=20.0)
    await producer.start()
    await wait_until(lambda: producer.stats().connected, what="connection")
    proxy.blackhole()  # publishes go out and no confirm ever comes back
    ids = {await producer.publish({"n": n}, routing_key=queue) for n in range(200)}
    await wait_until(lambda: producer.stats().in_flight == 200, what="all in flight")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(producer.close(timeout=30), 0.2)
    assert producer.stats().state is ProducerState.CLOSED
    assert await producer.store.count() == 200
    await producer.store.close()

    # What a cancelled close stored is delivered by the next producer (at least once).
    successor = make_producer(store=SQLiteStore(Path(producer.store.path)))  # type: ignore[attr-defined]
    await successor.start()
    await wait_for_ids(amqp, queue, ids, timeout=60)
    await wait_until(store_is_empty(successor.store), what="store drained")


async def test_close_facing_a_locked_store_returns_and_writes_the_file(
    make_producer: ProducerFactory, queue: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    path = tmp_path / "locked.db"
    store = SQLiteStore(path, busy_timeout=600)
    await store.count()  # create the file
    producer = make_producer(proxied_url(proxy), store=store, spill_after=60.0)
    await producer.start()
    await wait_until(lambda: producer.stats().connected, what="connection")
    proxy.blackhole()
    ids = {await producer.publish({"n": n}, routing_key=queue) for n in range(20)}
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # every write now waits on SQLite's busy timeout
    try:
        # A close() that waited for the store would outlive this bound many times over.
        await asyncio.wait_for(producer.close(timeout=1.0), 60)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # The write close() gave up on finishes now; let it end before the loop does.
    await store.count()
    await store.close()
    [unsent] = await asyncio.to_thread(lambda: sorted(tmp_path.glob("aioproducer-unsent-*")))
    assert {m.message_id for m in read_messages(unsent)} == ids


class FlakyOpenLink(AmqpLink):
    """Fails its first connection attempt with a bug-like error, then connects normally."""

    failed = False

    async def _open(self) -> None:
        if not FlakyOpenLink.failed:
            FlakyOpenLink.failed = True
            raise RuntimeError("opener bug")
        await super()._open()


async def test_a_failing_connection_opener_is_logged_and_restarted(
    make_producer: ProducerFactory,
    amqp: aio_pika.abc.AbstractRobustConnection,
    queue: str,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    from aioproducer import Producer

    class FlakyProducer(Producer):
        def _make_link(self, context: Context) -> Link:
            return FlakyOpenLink(
                AMQP_URL, backoff=Backoff(base=0.05, cap=0.5), on_error=context.record_error
            )

    producer = FlakyProducer(AMQP_URL, store=SQLiteStore(tmp_path / "s.db"), fallback_dir=tmp_path)
    with caplog.at_level(logging.ERROR, logger="aioproducer"):
        await producer.start()
        try:
            message_id = await producer.publish(b"x", routing_key=queue)
            await wait_for_ids(amqp, queue, {message_id}, timeout=30)
            assert "opener bug" in (producer.stats().last_error or "")
        finally:
            await producer.close()
    assert "Traceback" in caplog.text and "RuntimeError: opener bug" in caplog.text
    assert os.environ.get("AMQP_PASSWORD_IN_LOGS") is None
    assert ":guest@" not in caplog.text


async def test_replay_holds_back_only_the_message_that_breaks_its_channel(
    make_producer: ProducerFactory,
    amqp: aio_pika.abc.AbstractRobustConnection,
    queue: str,
    tmp_path: Path,
) -> None:
    """403 names no culprit: replay tries the batch one message at a time to find it."""
    channel = await amqp.channel()
    internal = await channel.declare_exchange(
        f"test-internal-{os.urandom(6).hex()}", aio_pika.ExchangeType.DIRECT, internal=True
    )
    try:
        store = SQLiteStore(tmp_path / "spill.db")
        good = [stored_message(n, queue) for n in range(40)]
        culprit = stored_message(99, queue, exchange=internal.name)
        await store.put([*good[:20], culprit, *good[20:]])
        await store.close()
        producer = make_producer(
            store=SQLiteStore(tmp_path / "spill.db"), retry_backoff=Backoff(base=60, cap=60)
        )
        await producer.start()
        got = await wait_for_ids(amqp, queue, {m.message_id for m in good}, timeout=60)

        def attempts() -> dict[str, int]:
            with sqlite3.connect(tmp_path / "spill.db") as db:
                return dict(db.execute("SELECT message_id, attempts FROM messages"))

        await wait_until(lambda: attempts() == {culprit.message_id: 1}, what="culprit held")
        await producer.close()
        delivered = [m.message_id for m in got + await drain(amqp, queue)]
        # Publishes in flight when the channel broke are ambiguous (the broker may have
        # routed them before its confirms went out): those may arrive twice.
        assert set(delivered) == {m.message_id for m in good}
    finally:
        await internal.delete()
        await channel.close()


async def test_after_max_attempts_a_message_is_kept_as_dead_and_not_retried(
    make_producer: ProducerFactory, amqp: aio_pika.abc.AbstractRobustConnection, queue: str
) -> None:
    nowhere = f"test-unbound-{os.urandom(6).hex()}"
    producer = make_producer(max_attempts=3)
    await producer.start()
    doomed = await producer.publish({"x": 1}, routing_key=nowhere)
    fine = await producer.publish({"x": 2}, routing_key=queue)
    await wait_for_ids(amqp, queue, {fine}, timeout=30)
    await wait_until(lambda: producer.stats().dead == 1, timeout=60, what="kept as dead")
    backlog = await producer.store.backlog()
    assert (backlog.total, backlog.dead, backlog.due) == (1, 1, 0)
    returned = producer.stats().returned
    assert returned == 3
    # Dead means never handed out again: a fresh claim finds nothing.
    assert await producer.store.claim("another", limit=10, lease=60) == []
    await producer.close()
    assert producer.stats().returned == returned
    with sqlite3.connect(producer.store.path) as db:  # type: ignore[attr-defined]
        rows = db.execute("SELECT message_id, attempts, dead, last_error FROM messages").fetchall()
    [(message_id, attempts, dead, error)] = rows
    assert (message_id, attempts, dead) == (doomed, 3, 1)
    assert error.startswith("returned: 312")
