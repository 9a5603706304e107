"""ThreadedProducer's publish_many(), properties and blocking settled(), without a broker."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aioproducer import (
    BufferFull,
    InvalidMessage,
    Outgoing,
    ProducerClosed,
    Properties,
    Settlement,
    SQLiteStore,
    ThreadedProducer,
    UnknownMessage,
)
from aioproducer._message import State
from aioproducer._threaded import Admission
from tests.unit.test_threaded import message

NO_BROKER = "amqp://guest:guest@127.0.0.1:1/"


@pytest.fixture
def producer(tmp_path: Path) -> Iterator[ThreadedProducer]:
    producer = ThreadedProducer(
        NO_BROKER,
        store=SQLiteStore(tmp_path / "spill.db"),
        spill_after=0.2,
        max_buffer=4,
        fallback_dir=tmp_path,
    )
    producer.start()
    yield producer
    producer.close(timeout=1)


def test_settled_blocks_until_the_message_is_stored(producer: ThreadedProducer) -> None:
    message_id = producer.publish(b"x", priority=4, reply_to="r")
    assert producer.settled(message_id, timeout=30) is Settlement.STORED
    # Asked again after the fact: answered from the outcomes it remembers.
    assert producer.settled(message_id) is Settlement.STORED
    with pytest.raises(UnknownMessage):
        producer.settled("never-published")


def test_settled_times_out_and_the_message_stays(tmp_path: Path) -> None:
    with ThreadedProducer(
        NO_BROKER, store=SQLiteStore(tmp_path / "s.db"), spill_after=3600, fallback_dir=tmp_path
    ) as producer:
        message_id = producer.publish(b"x")
        with pytest.raises(TimeoutError):
            producer.settled(message_id, timeout=0.2)
        assert producer.stats().buffered == 1
    # close() stored it.
    assert producer.stats().spilled == 1


def test_publish_many_is_all_or_nothing(producer: ThreadedProducer) -> None:
    ids = producer.publish_many([b"a", Outgoing(b"b", message_id="own", priority=1)], app_id="x")
    assert ids[1] == "own"
    with pytest.raises(BufferFull):
        producer.publish_many([b"c", b"d", b"e"])  # 2 + 3 > max_buffer
    with pytest.raises(InvalidMessage):
        producer.publish_many([b"c", Outgoing(b"d", priority=300)])
    with pytest.raises(InvalidMessage):
        producer.publish_many([Outgoing(b"c", message_id="own")])
    assert producer.publish_many([]) == []
    assert producer.stats().accepted == 2
    for message_id in ids:
        assert producer.settled(message_id, timeout=30) is Settlement.STORED
    assert producer.stats().spilled == 2


def test_bad_properties_raise_in_the_callers_thread(producer: ThreadedProducer) -> None:
    with pytest.raises(InvalidMessage):
        producer.publish(b"x", expiration=-1)
    with pytest.raises(InvalidMessage):
        producer.publish(b"x", user_id="someone-else")
    assert producer.stats().accepted == 0


def test_waiters_left_at_close_are_told_the_producer_closed() -> None:
    admission = Admission(capacity=10, max_bytes=None)
    admitted = message("a")
    admission.admit(admitted)
    future = admission.waiter("a")
    admission.close_waiters()
    assert future.result(0) is None


def test_admission_tells_a_waiter_the_first_settlement() -> None:
    admission = Admission(capacity=10, max_bytes=None)
    admitted = message("a")
    admission.admit_all([admitted])
    future = admission.waiter("a")
    admission.observe(admitted, State.IN_FLIGHT)
    assert not future.done()
    admission.observe(admitted, State.STORED_IN_FLIGHT)
    assert future.result(0) is Settlement.STORED
    admission.observe(admitted, State.CONFIRMED)
    assert admission.waiter("a").result(0) is Settlement.STORED


def test_properties_are_stored_as_given(producer: ThreadedProducer, tmp_path: Path) -> None:
    message_id = producer.publish(b"x", correlation_id="c", persistent=False, expiration=1500)
    assert producer.settled(message_id, timeout=30) is Settlement.STORED

    async def read() -> Properties | None:
        store = SQLiteStore(tmp_path / "spill.db")
        try:
            stored = await store.get(message_id)
        finally:
            await store.close()
        assert stored is not None
        return stored.properties

    assert asyncio.run(read()) == Properties(
        correlation_id="c", persistent=False, expiration="1500"
    )


def test_a_closed_producer_refuses_settled(tmp_path: Path) -> None:
    producer = ThreadedProducer(NO_BROKER, store=SQLiteStore(tmp_path / "s.db"))
    with pytest.raises(ProducerClosed):
        producer.settled("x")
    producer.close()


def test_middleware_runs_in_the_callers_thread_and_finishes_on_settlement(
    tmp_path: Path,
) -> None:
    threads: list[str] = []
    outcomes: list[object] = []

    def stamp(outgoing: Outgoing) -> Callable[[object], None]:
        threads.append(threading.current_thread().name)
        outgoing.headers = {"x-stamp": "yes"}
        return outcomes.append

    with ThreadedProducer(
        NO_BROKER,
        store=SQLiteStore(tmp_path / "spill.db"),
        spill_after=0.2,
        fallback_dir=tmp_path,
        middleware=[stamp],
    ) as producer:
        message_id = producer.publish(b"x")
        assert producer.settled(message_id, timeout=30) is Settlement.STORED
        with pytest.raises(InvalidMessage):
            producer.publish(b"y", priority=-1)

    async def read() -> dict[str, object] | None:
        store = SQLiteStore(tmp_path / "spill.db")
        try:
            stored = await store.get(message_id)
        finally:
            await store.close()
        assert stored is not None
        return stored.headers

    assert threads == [threading.current_thread().name] * 2
    assert asyncio.run(read()) == {"x-stamp": "yes"}
    # The refusal is told at once; the settlement on the loop thread, maybe after it.
    assert len(outcomes) == 2 and Settlement.STORED in outcomes
    assert [type(o) for o in outcomes if o is not Settlement.STORED] == [InvalidMessage]
