"""ThreadedProducer without a broker: admission and hand-off, errors in the caller's
thread, close from anywhere, atexit and SIGTERM (in child interpreters)."""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aioproducer import (
    Backoff,
    BodyNotSerializable,
    BufferFull,
    InvalidMessage,
    Message,
    MessageTooLarge,
    ProducerClosed,
    SQLiteStore,
    ThreadedProducer,
)
from aioproducer._fallback import read_messages
from aioproducer._message import State
from aioproducer._threaded import Admission, _neutralise

#: Nothing listens on port 1: connections are refused at once, and nothing is confirmed.
NO_BROKER = "amqp://guest:guest@127.0.0.1:1/"
ROOT = Path(__file__).resolve().parents[2]


def message(message_id: str, size: int = 10) -> Message:
    return Message(
        message_id=message_id,
        body=b"x" * size,
        exchange="",
        routing_key="q",
        content_type="application/octet-stream",
        timestamp=0.0,
    )


# -- Admission: the caller's side of the hand-off --------------------------------------


def test_admission_counts_until_settled() -> None:
    admission = Admission(capacity=2, max_bytes=None)
    first, second = message("a"), message("b")
    assert admission.admit(first)
    assert not admission.admit(second)  # one wake-up serves both
    with pytest.raises(BufferFull):
        admission.admit(message("c"))
    assert admission.take() == [first, second]
    admission.observe(first, State.IN_FLIGHT)
    with pytest.raises(BufferFull):
        admission.admit(message("c"))
    admission.observe(first, State.CONFIRMED)
    assert admission.count == 1
    assert admission.admit(message("c"))  # the queue was taken: wake the loop again


def test_admission_bounds_bytes_but_takes_one_large_message_alone() -> None:
    admission = Admission(capacity=10, max_bytes=100)
    large = message("large", 150)
    admission.admit(large)
    with pytest.raises(BufferFull) as full:
        admission.admit(message("small", 1))
    assert full.value.max_bytes == 100
    admission.observe(large, State.STORED)
    admission.admit(message("a", 60))
    with pytest.raises(BufferFull):
        admission.admit(message("b", 41))
    admission.admit(message("b", 40))
    assert admission.bytes == 100


def test_an_id_stays_in_use_until_settled_and_off_the_wire() -> None:
    admission = Admission(capacity=10, max_bytes=None)
    first = message("same")
    admission.admit(first)
    with pytest.raises(InvalidMessage):
        admission.admit(message("same"))
    # Its deadline passed in flight: a copy is stored, so it no longer counts in
    # memory, but its publish is still on the wire.
    admission.observe(first, State.STORED_IN_FLIGHT)
    assert admission.count == 0
    with pytest.raises(InvalidMessage):
        admission.admit(message("same"))
    admission.observe(first, State.CONFIRMED)
    admission.admit(message("same"))


def test_a_replayed_copy_frees_nothing_of_a_newer_message_with_its_id() -> None:
    admission = Admission(capacity=10, max_bytes=None)
    newer = message("same")
    admission.admit(newer)
    admission.observe(message("same"), State.CONFIRMED)  # another object: a replayed copy
    assert admission.count == 1
    with pytest.raises(InvalidMessage):
        admission.admit(message("same"))


def test_a_closed_admission_refuses_and_queues_nothing() -> None:
    admission = Admission(capacity=10, max_bytes=None)
    admission.close("producer is closed")
    with pytest.raises(ProducerClosed, match="closed"):
        admission.admit(message("a"))
    assert admission.take() == []
    assert admission.count == 0


def test_concurrent_admits_never_pass_capacity() -> None:
    admission = Admission(capacity=500, max_bytes=None)
    admitted: list[str] = []
    refused: list[str] = []
    barrier = threading.Barrier(16)

    def work(worker: int) -> None:
        barrier.wait()
        for n in range(100):
            message_id = f"{worker}-{n}"
            try:
                admission.admit(message(message_id))
            except BufferFull:
                refused.append(message_id)
            else:
                admitted.append(message_id)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 500
    assert len(refused) == 1100
    assert sorted(m.message_id for m in admission.take()) == sorted(admitted)


# -- ThreadedProducer with no broker ---------------------------------------------------


@pytest.fixture
def make_threaded(tmp_path: Path) -> Iterator[Callable[..., ThreadedProducer]]:
    made: list[ThreadedProducer] = []

    def make(**options: Any) -> ThreadedProducer:
        settings: dict[str, Any] = {
            "store": SQLiteStore(tmp_path / "spill.db"),
            "spill_after": 60.0,
            "fallback_dir": tmp_path,
            "reconnect_backoff": Backoff(base=0.05, cap=0.5),
            # No broker to drain to: close() spends half of this waiting for one.
            "close_timeout": 1.0,
            **options,
        }
        producer = ThreadedProducer(NO_BROKER, **settings)
        made.append(producer)
        return producer

    yield make
    for producer in made:
        producer.close(timeout=1)


def in_thread(call: Callable[[], object]) -> BaseException | object:
    """Run ``call`` in a new thread; what it returned or raised there."""
    outcome: list[BaseException | object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return outcome[0]


def test_bad_input_raises_in_the_callers_thread_and_enqueues_nothing(
    make_threaded: Callable[..., ThreadedProducer],
) -> None:
    producer = make_threaded(max_message_size=100).start()
    bad: list[Callable[[], object]] = [
        lambda: producer.publish(object(), routing_key="q"),
        lambda: producer.publish({"n": float("nan")}, routing_key="q"),
        lambda: producer.publish(b"x" * 101, routing_key="q"),
        lambda: producer.publish(b"x", routing_key="q" * 256),
        lambda: producer.publish(b"x", routing_key="q", headers={"h": object()}),
        lambda: producer.publish(b"x", routing_key="q", message_id=""),
    ]
    raised = [in_thread(call) for call in bad]
    assert [type(exc) for exc in raised] == [
        BodyNotSerializable,
        BodyNotSerializable,
        MessageTooLarge,
        InvalidMessage,
        InvalidMessage,
        InvalidMessage,
    ]
    stats = producer.stats()
    assert (stats.accepted, stats.buffered, stats.buffered_bytes) == (0, 0, 0)


def test_buffer_full_and_a_reused_id_raise_in_the_callers_thread(
    make_threaded: Callable[..., ThreadedProducer],
) -> None:
    producer = make_threaded(max_buffer=3, high_water=1.0).start()
    ids = [in_thread(lambda: producer.publish(b"x", routing_key="q")) for _ in range(3)]
    assert all(isinstance(i, str) for i in ids)
    assert isinstance(in_thread(lambda: producer.publish(b"x", routing_key="q")), BufferFull)
    producer.close(timeout=1)  # stores the three: room again, in a new producer
    other = make_threaded(max_buffer=10).start()
    assert other.publish(b"x", routing_key="q", message_id="m") == "m"
    reused = in_thread(lambda: other.publish(b"y", routing_key="q", message_id="m"))
    assert isinstance(reused, InvalidMessage)
    assert other.stats().accepted == 1


def test_life_cycle_and_closed_errors(make_threaded: Callable[..., ThreadedProducer]) -> None:
    producer = make_threaded()
    with pytest.raises(ProducerClosed):
        producer.publish(b"x", routing_key="q")
    with producer:
        assert producer.start() is producer  # idempotent
        producer.publish(b"x", routing_key="q")
        assert producer.stats().accepted == 1
    assert producer.stats().spilled == 1  # close stored it: no broker
    producer.close()  # idempotent
    with pytest.raises(ProducerClosed):
        producer.publish(b"x", routing_key="q")
    with pytest.raises(ProducerClosed):
        producer.start()
    assert producer.flush(0.1)


def test_close_and_flush_refuse_the_producers_own_loop_thread(
    make_threaded: Callable[..., ThreadedProducer],
) -> None:
    producer = make_threaded().start()
    loop = producer._loop
    assert loop is not None

    async def on_the_loop() -> list[str]:
        errors: list[str] = []
        for call in (producer.close, producer.flush):
            try:
                call()
            except RuntimeError as exc:
                errors.append(str(exc))
        producer.publish(b"x", routing_key="q")  # never waits: fine here
        assert producer.stats().accepted == 1
        return errors

    errors = asyncio.run_coroutine_threadsafe(on_the_loop(), loop).result(5)
    assert len(errors) == 2
    assert all("own event loop thread" in text for text in errors)


def test_close_from_another_thread_stores_everything_handed_off(
    make_threaded: Callable[..., ThreadedProducer], tmp_path: Path
) -> None:
    producer = make_threaded().start()
    ids = {producer.publish({"n": n}, routing_key="q") for n in range(300)}
    assert len(ids) == 300
    assert in_thread(lambda: producer.close(timeout=1)) is None
    assert asyncio.run(stored_ids(tmp_path / "spill.db")) == ids


def test_close_while_threads_publish_keeps_every_accepted_message(
    make_threaded: Callable[..., ThreadedProducer], tmp_path: Path
) -> None:
    producer = make_threaded(max_buffer=100_000).start()
    accepted: list[str] = []
    ended: list[BaseException] = []
    going = threading.Barrier(9)

    def publisher(worker: int) -> None:
        going.wait()
        n = 0
        while True:
            try:
                accepted.append(producer.publish({"w": worker, "n": n}, routing_key="q"))
            except BaseException as exc:
                ended.append(exc)
                return
            n += 1

    threads = [threading.Thread(target=publisher, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    going.wait()
    deadline = time.monotonic() + 30
    while len(accepted) < 2000:
        assert time.monotonic() < deadline, "publishing never got under way"
        threading.Event().wait(0.01)  # pacing the check of a condition with a bound
    producer.close(timeout=1)
    for thread in threads:
        thread.join()
    assert [type(exc) for exc in ended] == [ProducerClosed] * 8
    assert asyncio.run(stored_ids(tmp_path / "spill.db")) == set(accepted)
    stats = producer.stats()
    assert stats.accepted == stats.spilled == len(accepted)


def test_close_on_sigterm_only_from_the_main_thread(
    make_threaded: Callable[..., ThreadedProducer],
) -> None:
    producer = make_threaded()
    assert isinstance(in_thread(producer.close_on_sigterm), ValueError)


async def stored_ids(path: Path) -> set[str]:
    store = SQLiteStore(path)
    try:
        claimed = await store.claim("reader", limit=100_000, lease=60.0)
        return {m.message_id for m in claimed}
    finally:
        await store.close()


CHILD = """
import sys, threading
from aioproducer import SQLiteStore, ThreadedProducer
producer = ThreadedProducer(
    "{url}", store=SQLiteStore({db!r}), spill_after=60.0, fallback_dir={dir!r},
    close_timeout=1.0,
).start()
if {sigterm}:
    producer.close_on_sigterm()
for n in range(50):
    print(producer.publish({{"n": n}}, routing_key="q"), flush=True)
print("ready", flush=True)
if {sigterm}:
    threading.Event().wait(60)
"""


def run_child(tmp_path: Path, *, sigterm: bool, db: Path | None = None) -> tuple[int, list[str]]:
    db = db or tmp_path / "spill.db"
    script = textwrap.dedent(
        CHILD.format(url=NO_BROKER, db=str(db), dir=str(tmp_path), sigterm=sigterm)
    )
    lines: list[str] = []
    errors = tmp_path / "child.stderr"
    with (
        errors.open("w") as stderr,
        subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        ) as child,
    ):
        assert child.stdout is not None
        for line in child.stdout:
            if line.strip() == "ready":
                if sigterm:
                    child.send_signal(signal.SIGTERM)
                continue
            lines.append(line.strip())
        code = child.wait(timeout=60)
    if code not in (0, 128 + signal.SIGTERM):
        # What the child printed says why; the caller's assertion on the code fails.
        print(f"child exited {code}; its stderr:\n{errors.read_text()[-4000:]}")
    return code, lines


def test_atexit_stores_what_is_left(tmp_path: Path) -> None:
    code, ids = run_child(tmp_path, sigterm=False)
    assert code == 0
    assert len(ids) == 50
    assert asyncio.run(stored_ids(tmp_path / "spill.db")) == set(ids)


def test_sigterm_becomes_a_graceful_exit(tmp_path: Path) -> None:
    code, ids = run_child(tmp_path, sigterm=True)
    assert code == 128 + signal.SIGTERM
    assert len(ids) == 50
    assert asyncio.run(stored_ids(tmp_path / "spill.db")) == set(ids)


@pytest.mark.parametrize("neutralised", [True, False])
def test_a_child_cannot_unregister_the_parents_sockets(neutralised: bool) -> None:
    """Why the at-fork hook points the child's epoll descriptor at a fresh one.

    An epoll instance is shared across fork: without that, a child unregistering a
    socket (as a finaliser closing an inherited transport does) removes the parent's
    registration, and the parent's loop never hears of that socket again.
    """
    selector = selectors.DefaultSelector()
    if not hasattr(selector, "fileno"):
        pytest.skip("this platform's selector keeps no state in the kernel")
    reader, writer = socket.socketpair()
    with selector, reader, writer:
        selector.register(reader, selectors.EVENT_READ)
        pid = os.fork()
        if pid == 0:
            try:
                if neutralised:
                    _neutralise(selector)
                selector.unregister(reader)
            finally:
                os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        writer.send(b"x")
        heard = [key.fileobj for key, _ in selector.select(timeout=1.0)]
        assert (heard == [reader]) is neutralised


def test_atexit_writes_the_fallback_file_when_the_store_fails(tmp_path: Path) -> None:
    code, ids = run_child(tmp_path, sigterm=False, db=tmp_path / "missing" / "spill.db")
    assert code == 0
    assert len(ids) == 50
    (written,) = tmp_path.glob("aioproducer-unsent-*.jsonl")
    assert {m.message_id for m in read_messages(written)} == set(ids)


def test_a_child_of_a_producer_never_started_builds_its_own(tmp_path: Path) -> None:
    """gunicorn --preload: the master makes the producer, each worker starts its own."""
    built: list[int] = []

    def build_store() -> SQLiteStore:
        built.append(os.getpid())
        return SQLiteStore(tmp_path / "spill.db")

    producer = ThreadedProducer(
        NO_BROKER, store=build_store, spill_after=60.0, fallback_dir=tmp_path, close_timeout=1.0
    )
    parent_owner = producer.owner
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # forking with threads running
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read)
            producer.start()
            ids = [producer.publish({"n": n}, routing_key="q") for n in range(20)]
            report = {"ids": ids, "owner": producer.owner, "built": built}
            producer.close(timeout=1.0)
            os.write(write, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = json.loads(pipe.read())
    assert os.waitpid(pid, 0)[1] == 0
    assert child["owner"] != parent_owner
    assert child["built"] == [os.getpid(), pid]  # the parent's store, then the child's own
    assert asyncio.run(stored_ids(tmp_path / "spill.db")) == set(child["ids"])
    producer.close()
