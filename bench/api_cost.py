"""What the optional parts of publish() cost: properties, on_settled, settled(), tracing.

Each variant runs on its own producer (pointed at a closed port: no broker), in
interleaved rounds, and is reported as µs per call and as a ratio to a plain
publish() measured in the same rounds, so a busy machine shifts all of them alike.

    .venv/bin/python -m bench.api_cost --calls 2000 --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aioproducer import Producer, Settlement, SQLiteStore

Variant = Callable[[Producer, int], Awaitable[object]]

PROPERTIES: dict[str, Any] = {
    "priority": 5,
    "correlation_id": "req-42",
    "reply_to": "replies",
    "expiration": 60_000,
    "type": "order.created",
}


async def plain(producer: Producer, n: int) -> object:
    return await producer.publish({"n": n}, routing_key="q")


async def with_properties(producer: Producer, n: int) -> object:
    return await producer.publish({"n": n}, routing_key="q", **PROPERTIES)


async def with_settled(producer: Producer, n: int) -> object:
    message_id = await producer.publish({"n": n}, routing_key="q")
    return producer.settled(message_id)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per variant and round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    heard: list[tuple[str, Settlement]] = []
    variants: dict[str, tuple[Variant, dict[str, Any]]] = {
        "publish()": (plain, {}),
        "publish() with 5 properties": (with_properties, {}),
        "publish() on a producer with on_settled": (
            plain,
            {"on_settled": lambda i, o: heard.append((i, o))},
        ),
        "publish() then settled() (not awaited)": (with_settled, {}),
    }
    try:
        from aioproducer.otel import tracing
    except ImportError:
        print("(opentelemetry not installed: no tracing variant)")
    else:
        variants["publish() with otel tracing()"] = (plain, {"middleware": [tracing()]})
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        producers: dict[str, Producer] = {}
        for index, (name, (_, options)) in enumerate(variants.items()):
            producers[name] = Producer(
                "amqp://guest:guest@127.0.0.1:1/",
                store=SQLiteStore(Path(tmp) / f"{index}.db"),
                fallback_dir=tmp,
                spill_after=3600,
                high_water=1.0,
                max_buffer=args.calls * args.rounds + 1,
                **options,
            )
            await producers[name].start()
        waits: list[object] = []
        for _ in range(args.rounds):
            for name, (variant, _) in variants.items():
                producer = producers[name]
                began = time.perf_counter()
                waits.extend([await variant(producer, n) for n in range(args.calls)])
                per_call = (time.perf_counter() - began) / args.calls * 1e6
                best[name] = min(best.get(name, per_call), per_call)
        for wait in waits:
            if asyncio.iscoroutine(wait):
                wait.close()
        for producer in producers.values():
            await producer.close(timeout=0)
    base = best["publish()"]
    print(f"best of {args.rounds} rounds of {args.calls} calls, JSON body, no broker\n")
    print("| variant | µs per call | ratio to publish() |")
    print("| --- | --- | --- |")
    for name, value in best.items():
        print(f"| {name} | {value:.2f} | {value / base:.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
