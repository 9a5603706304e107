"""ThreadedProducer.publish() from many threads at once: how long each call takes.

Every thread publishes a small JSON body, then sleeps a millisecond, as request
threads do. The producer points at a closed port: no broker is involved, so what is
measured is the hand-off (build, admission, wake-up) and the wait for the interpreter
lock among the threads. ``--switch`` sets ``sys.setswitchinterval``: the longest
calls follow it, which shows they are the interpreter's scheduling.

    .venv/bin/python -m bench.threaded_publish --threads 32 --calls 300
    .venv/bin/python -m bench.threaded_publish --threads 32 --calls 300 --switch 0.0005
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

from aioproducer import SQLiteStore, ThreadedProducer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=32, help="publishing threads")
    parser.add_argument("--calls", type=int, default=300, help="publishes per thread")
    parser.add_argument("--pause", type=float, default=0.001, help="seconds between calls")
    parser.add_argument("--switch", type=float, default=None, help="sys.setswitchinterval")
    args = parser.parse_args()
    if args.switch is not None:
        sys.setswitchinterval(args.switch)
    with tempfile.TemporaryDirectory() as tmp:
        producer = ThreadedProducer(
            "amqp://guest:guest@127.0.0.1:1/",
            store=SQLiteStore(Path(tmp) / "threaded.db"),
            spill_after=3600,
            max_buffer=args.threads * args.calls + 1,
            fallback_dir=tmp,
            close_timeout=1.0,
        )
        durations: list[float] = []
        pause = threading.Event()  # never set: wait() is the pause between calls

        def work() -> None:
            local: list[float] = []
            for n in range(args.calls):
                started = time.perf_counter()
                producer.publish({"n": n, "pad": "x" * 200}, routing_key="bench")
                local.append(time.perf_counter() - started)
                pause.wait(args.pause)
            durations.extend(local)

        with producer:
            threads = [threading.Thread(target=work) for _ in range(args.threads)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    ordered = sorted(durations)
    count = len(ordered)
    print(
        f"threads={args.threads} calls={count} switch={sys.getswitchinterval() * 1e3:.1f}ms "
        f"p50={ordered[count // 2] * 1e6:.0f}us p99={ordered[int(count * 0.99)] * 1e6:.0f}us "
        f"longest={ordered[-1] * 1e6:.0f}us"
    )


if __name__ == "__main__":
    main()
