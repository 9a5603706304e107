"""A steady publishing load for the fault tests, running beside the fault it meets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aioproducer import Producer
from tests.waiting import run_without_suspending


class Load:
    """Publishes a message every ``interval`` seconds until stopped.

    Every call is run to completion in one step (so none waited on anything), and
    timed while ``marking`` is on, for the report of a fault test.
    """

    def __init__(self, producer: Producer, queue: str, interval: float = 0.005) -> None:
        self.producer = producer
        self.queue = queue
        self.interval = interval
        self.ids: list[str] = []
        self.marked: list[float] = []
        #: The same calls' CPU time in this thread: far below the wall time when the
        #: process was merely waiting for a busy machine's CPU.
        self.marked_cpu: list[float] = []
        self.marking = False
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            started, started_cpu = time.perf_counter(), time.thread_time()
            message_id = run_without_suspending(
                self.producer.publish({"n": len(self.ids)}, routing_key=self.queue)
            )
            if self.marking:
                self.marked.append(time.perf_counter() - started)
                self.marked_cpu.append(time.thread_time() - started_cpu)
            self.ids.append(message_id)
            # Pacing, not synchronisation: a steady rate of calls.
            await asyncio.sleep(self.interval)

    def stop(self) -> None:
        self._stop.set()


@asynccontextmanager
async def steady_load(
    producer: Producer, queue: str, interval: float = 0.005
) -> AsyncIterator[Load]:
    """Publish steadily for the body of the block; the load stops when it ends."""
    load = Load(producer, queue, interval)
    task = asyncio.create_task(load.run())
    try:
        yield load
    finally:
        load.stop()
        await task
