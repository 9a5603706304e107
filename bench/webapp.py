"""Where delivery runs under web load: the request loop, or a thread and loop of its own.

The same small Quart app (one POST route that checks the JSON body and publishes
it, one GET route with the counters) with either a :class:`~aioproducer.Producer`
on the request loop or a :class:`~aioproducer.ThreadedProducer`, whose delivery
runs in its own thread and event loop behind a thread-safe hand-off. The harness
loads both with wrk, beside the demo app itself.

    MODE=loop|thread PORT=8001 AMQP_URL=... ROUTING_KEY=... SPILL_PATH=... \\
        python -m bench.webapp
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncGenerator
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, request

from aioproducer import Producer, SQLiteStore, ThreadedProducer


def create_app(mode: str) -> Quart:
    app = Quart(__name__)
    url = os.environ["AMQP_URL"]
    routing_key = os.environ["ROUTING_KEY"]
    store = SQLiteStore(os.environ["SPILL_PATH"])
    holder: dict[str, Any] = {}

    @app.while_serving
    async def lifespan() -> AsyncGenerator[None, None]:
        if mode == "thread":
            threaded = ThreadedProducer(url, store=store, max_buffer=1_000_000).start()
            holder["p"] = threaded
            yield
            await asyncio.to_thread(threaded.close, 10.0)
        else:
            producer = Producer(url, store=store, max_buffer=1_000_000)
            await producer.start()
            holder["p"] = producer
            yield
            await producer.close(timeout=10.0)

    @app.post("/messages")
    async def publish() -> tuple[dict[str, Any], int]:
        raw = await request.get_data(cache=False, as_text=False, parse_form_data=False)
        json.loads(raw)
        producer = holder["p"]
        if mode == "thread":
            message_id = producer.publish(raw, routing_key=routing_key)
        else:
            message_id = await producer.publish(raw, routing_key=routing_key)
        return {"message_id": message_id}, 202

    @app.get("/health")
    async def health() -> dict[str, Any]:
        stats = holder["p"].stats()
        return {
            "connected": stats.connected,
            "buffered": stats.buffered,
            "in_flight": stats.in_flight,
            "counters": {"accepted": stats.accepted, "spilled": stats.spilled},
        }

    return app


async def main() -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{os.environ['PORT']}"]
    config.accesslog = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await serve(create_app(os.environ.get("MODE", "loop")), config, shutdown_trigger=stop.wait)


if __name__ == "__main__":
    asyncio.run(main())
