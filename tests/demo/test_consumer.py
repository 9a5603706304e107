"""The de-duplicating consumer, as a library and as a program."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aio_pika
import pytest

from demo_app.consumer import Counts, DedupConsumer
from tests.broker import AMQP_URL

pytestmark = pytest.mark.broker


async def send(connection: aio_pika.abc.AbstractConnection, queue: str, *message_ids: str) -> None:
    channel = await connection.channel()
    try:
        for message_id in message_ids:
            message = aio_pika.Message(b"{}", message_id=message_id)
            await channel.default_exchange.publish(message, routing_key=queue)
    finally:
        await channel.close()


async def test_counts_and_deduplicates_by_message_id(
    amqp: aio_pika.abc.AbstractRobustConnection, queue: str, tmp_path: Path
) -> None:
    async with DedupConsumer(AMQP_URL, queue) as consumer:
        await send(amqp, queue, "a", "b", "a", "c", "a")
        assert await consumer.wait_for({"a", "b", "c"}, timeout=30) == set()
        await consumer.drain()
        assert consumer.counts() == Counts(
            total=5, unique=3, duplicates=2, redelivered=0, without_id=0
        )
        assert consumer.deliveries("a") == 3
        assert consumer.deliveries("zzz") == 0
        assert consumer.write_ids(tmp_path / "ids.txt") == 3
    assert (tmp_path / "ids.txt").read_text() == "a\nb\nc\n"


async def test_wait_for_reports_what_is_missing(queue: str) -> None:
    async with DedupConsumer(AMQP_URL, queue) as consumer:
        assert await consumer.wait_for({"never"}, timeout=0.01) == {"never"}
        assert await consumer.wait_for(set(), timeout=0) == set()


async def test_program_reports_counts_and_writes_ids(
    amqp: aio_pika.abc.AbstractRobustConnection, queue: str, tmp_path: Path
) -> None:
    ids_file = tmp_path / "seen.txt"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "demo_app.consumer",
        "--queue",
        queue,
        "--report-every",
        "0.2",
        "--ids-out",
        str(ids_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "AMQP_URL": AMQP_URL},
    )
    assert proc.stdout is not None
    try:
        await send(amqp, queue, "x", "y", "x")
        # Read the periodic reports until one shows all three deliveries.
        async with asyncio.timeout(30):
            while b"total=3 unique=2 duplicates=1" not in await proc.stdout.readline():
                pass
        proc.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(proc.stdout.read(), 30)).decode()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert "final: total=3 unique=2 duplicates=1" in rest
    assert ids_file.read_text() == "x\ny\n"
