"""ThreadedProducer against the real broker: the Flask example under waitress with 32
request threads, a broker outage under that load, close while threads publish, and a
forked worker publishing on a producer of its own."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import sqlite3
import threading
import time
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import waitress.server
from flask import Flask
from waitress import wasyncore

from aioproducer import BufferFull, ProducerClosed, SQLiteStore, ThreadedProducer
from demo_app import Config
from demo_app.flask_example import create_app
from tests.broker import AMQP_URL, broker_stopped, connection, drain, wait_for_ids
from tests.integration.conftest import FAST
from tests.waiting import store_is_empty, wait_until

pytestmark = pytest.mark.broker


class TimedProducer(ThreadedProducer):
    """Records how long every publish() call took, in the thread that made it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.durations: list[float] = []

    def publish(self, body: Any, **kwargs: Any) -> str:
        started = time.perf_counter()
        try:
            return super().publish(body, **kwargs)
        finally:
            self.durations.append(time.perf_counter() - started)


ThreadedFactory = Callable[..., TimedProducer]


@pytest.fixture
async def threaded(tmp_path: Path) -> AsyncIterator[ThreadedFactory]:
    """ThreadedProducers with quick retries on a store in ``tmp_path``; all closed at the end."""
    made: list[TimedProducer] = []

    def make(**options: Any) -> TimedProducer:
        settings: dict[str, Any] = {
            **FAST,
            "store": SQLiteStore(tmp_path / "spill.db"),
            "fallback_dir": tmp_path,
            **options,
        }
        producer = TimedProducer(AMQP_URL, **settings)
        made.append(producer)
        return producer

    yield make
    for producer in made:
        await asyncio.to_thread(producer.close, 5)


@contextlib.contextmanager
def serving(app: Flask) -> Iterator[int]:
    """Serve ``app`` with waitress (32 threads) on a free port, in a thread; yield the port."""
    server: Any = waitress.server.create_server(
        app, host="127.0.0.1", port=0, threads=32, asyncore_loop_timeout=0.1
    )
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    try:
        yield int(server.effective_port)
    finally:
        # Closed from inside its own loop: closing its sockets from here races its poll.
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        thread.join(5)
        server.task_dispatcher.shutdown()


class HttpLoad:
    """``threads`` clients, each POSTing to /messages on its own keep-alive connection.

    Each client sends ``each`` requests, or, with ``each=None``, one every
    ``interval`` seconds until :meth:`stop`. Ids of 202 answers go to ``ids``; any
    other answer or error goes to ``errors``.
    """

    def __init__(
        self, port: int, queue: str, *, threads: int, each: int | None, interval: float = 0.0
    ) -> None:
        self.port, self.queue, self.each, self.interval = port, queue, each, interval
        self.ids: list[str] = []
        self.errors: list[str] = []
        self.longest_request = 0.0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(n,), name=f"client-{n}")
            for n in range(threads)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> None:
        for thread in self._threads:
            thread.join()

    def _client(self, client: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        n = 0
        try:
            while not self._stop.is_set() and (self.each is None or n < self.each):
                body = json.dumps({"client": client, "n": n})
                started = time.perf_counter()
                try:
                    conn.request(
                        "POST",
                        f"/messages?routing_key={self.queue}",
                        body=body,
                        headers={"Content-Type": "application/json"},
                    )
                    response = conn.getresponse()
                    answer = json.loads(response.read())
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    self.errors.append(f"client {client}: {exc!r}")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                    continue
                finally:
                    self.longest_request = max(self.longest_request, time.perf_counter() - started)
                n += 1
                if response.status == 202:
                    self.ids.append(answer["message_id"])
                else:
                    self.errors.append(f"client {client}: {response.status} {answer}")
                if self.interval:
                    # Pacing, not synchronisation: a steady rate of requests.
                    self._stop.wait(self.interval)
        finally:
            conn.close()


def duplicates(received: Mapping[str, int]) -> int:
    return sum(count - 1 for count in received.values())


def publish_times(durations: list[float]) -> str:
    """Median, 99th percentile and longest publish() call, in microseconds."""
    ordered = sorted(durations)
    p50, p99 = ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]
    return (
        f"publish() p50={p50 * 1e6:.0f}us p99={p99 * 1e6:.0f}us longest={ordered[-1] * 1e6:.0f}us"
    )


async def test_32_threads_through_flask_and_waitress_deliver_every_id_once(
    threaded: ThreadedFactory, queue: str
) -> None:
    producer = threaded()
    app = create_app(producer, Config(routing_key=queue))
    with serving(app) as port:
        load = HttpLoad(port, queue, threads=32, each=25)
        load.start()
        await asyncio.to_thread(load.join)
    assert load.errors == []
    assert len(load.ids) == 800 == len(set(load.ids))
    async with connection() as conn:
        got = await wait_for_ids(conn, queue, set(load.ids), timeout=60)
        assert await asyncio.to_thread(producer.flush, 10)
        got += await drain(conn, queue)
    received = Counter(r.message_id for r in got)
    assert set(received) == set(load.ids)
    assert duplicates(received) == 0
    stats = producer.stats()
    assert stats.accepted == stats.confirmed == 800
    print(
        f"\nhealthy: sent=800 delivered={len(received)} duplicates=0 "
        f"{publish_times(producer.durations)} "
        f"longest_request={load.longest_request * 1e3:.1f}ms"
    )


# Bounds: waits 60+60+90+60 and the threads' own, the broker's stop and start 180.
@pytest.mark.timeout(480)
@pytest.mark.fault
async def test_broker_stopped_under_32_request_threads_loses_nothing(
    threaded: ThreadedFactory, queue: str, tmp_path: Path
) -> None:
    producer = threaded(spill_after=1.0)
    store = SQLiteStore(tmp_path / "spill.db")
    app = create_app(producer, Config(routing_key=queue))
    with serving(app) as port:
        load = HttpLoad(port, queue, threads=32, each=None, interval=0.1)
        load.start()
        try:
            await wait_until(lambda: producer.stats().confirmed >= 200, what="confirms before")
            async with broker_stopped():
                sent_before = len(load.ids)
                await wait_until(
                    lambda: producer.stats().spilled >= 300, timeout=60, what="messages spilled"
                )
                backlog = await store.count()
            await wait_until(
                lambda: producer.stats().connections >= 2, timeout=60, what="reconnection"
            )
            confirmed = producer.stats().confirmed
            await wait_until(
                lambda: producer.stats().confirmed >= confirmed + 100, what="confirms after"
            )
        finally:
            load.stop()
            await asyncio.to_thread(load.join)
    sent = load.ids
    async with connection() as conn:
        got = await wait_for_ids(conn, queue, set(sent), timeout=90)
        await wait_until(store_is_empty(store), timeout=60, what="store drained")
        assert await asyncio.to_thread(producer.flush, 10)
        got += await drain(conn, queue)
    await store.close()
    received = Counter(r.message_id for r in got)
    lost = len(set(sent) - set(received))
    stats = producer.stats()
    print(
        f"\nthreaded outage: sent={len(sent)} (before the outage {sent_before}) "
        f"delivered={len(set(sent) & set(received))} lost={lost} "
        f"duplicates={duplicates(received)} spilled={stats.spilled} "
        f"replayed={stats.replayed} stored_while_down={backlog} "
        f"{publish_times(producer.durations)} "
        f"longest_request={load.longest_request * 1e3:.1f}ms errors={len(load.errors)}"
    )
    assert load.errors == []
    assert backlog > 0
    assert lost == 0
    assert len(sent) == len(set(sent))


async def test_close_from_another_thread_while_threads_publish(
    threaded: ThreadedFactory, queue: str, tmp_path: Path
) -> None:
    producer = threaded()
    producer.start()
    await wait_until(lambda: producer.stats().connected, what="connection")
    ids: list[str] = []
    refused: list[int] = []
    full: list[int] = []
    errors: list[BaseException] = []
    pause = threading.Event()  # never set: its wait() paces a thread after BufferFull

    def publisher(worker: int) -> None:
        n = 0
        while True:
            try:
                ids.append(producer.publish({"w": worker, "n": n}, routing_key=queue))
            except ProducerClosed:
                refused.append(worker)
                return
            except BufferFull:
                # Tight loops outrun the broker; like a web app answering 503, try later.
                full.append(worker)
                pause.wait(0.005)
            except BaseException as exc:
                errors.append(exc)
                return
            n += 1

    threads = [threading.Thread(target=publisher, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    await wait_until(lambda: len(ids) >= 2000, what="publishing under way")
    await asyncio.to_thread(producer.close, 5)
    for thread in threads:
        await asyncio.to_thread(thread.join)
    assert errors == []
    assert len(refused) == 8  # every thread ended on ProducerClosed
    with contextlib.closing(sqlite3.connect(tmp_path / "spill.db")) as db:
        stored = {row[0] for row in db.execute("SELECT message_id FROM messages")}
    async with connection() as conn:
        got = await wait_for_ids(conn, queue, set(ids) - stored, timeout=60)
    delivered = {r.message_id for r in got}
    assert set(ids) <= delivered | stored
    stats = producer.stats()
    print(
        f"\nclose while publishing: accepted={len(ids)} delivered={len(delivered)} "
        f"stored={len(stored)} confirmed={stats.confirmed} spilled={stats.spilled} "
        f"buffer_full={len(full)}"
    )


async def test_a_forked_worker_publishes_on_a_producer_of_its_own(
    threaded: ThreadedFactory, queue: str
) -> None:
    # The store stays quiet (one claim at start), so no SQLite call is under way
    # in the parent when it forks.
    parent = threaded(replay_interval=60.0)
    parent.start()
    await wait_until(lambda: parent.stats().connected, what="parent connected")
    before = [parent.publish({"parent": n}, routing_key=queue) for n in range(20)]
    assert await asyncio.to_thread(parent.flush, 10)
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # forking with threads running
        pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        code = 1
        try:
            os.close(read)
            ids = [parent.publish({"child": n}, routing_key=queue) for n in range(50)]
            report = {
                "ids": ids,
                "owner": parent.owner,
                "flushed": parent.flush(20),
                "confirmed": parent.stats().confirmed,
            }
            parent.close(5)
            os.write(write, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)

    def wait_child() -> tuple[int, bytes]:
        with os.fdopen(read, "rb") as pipe:
            data = pipe.read()
        return os.waitpid(pid, 0)[1], data

    status, data = await asyncio.to_thread(wait_child)
    assert status == 0
    child = json.loads(data)
    after = [parent.publish({"parent": n}, routing_key=queue) for n in range(20, 40)]
    async with connection() as conn:
        got = await wait_for_ids(conn, queue, {*before, *child["ids"], *after}, timeout=60)
    assert child["owner"] != parent.owner
    assert child["flushed"] and child["confirmed"] == 50
    stats = parent.stats()
    assert stats.connected and stats.connections == 1  # the child never touched it
    assert stats.accepted == stats.confirmed == 40
    assert len({r.message_id for r in got}) == 90
