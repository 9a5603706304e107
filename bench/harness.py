"""Every contender on the same broker in one run, and the producer's own paths.

    .venv/bin/python -m bench.harness --repeats 3 --out docs/benchmarks.md

Each case runs in a fresh process (:mod:`bench.contenders`), each repeat runs every
case once in turn, and the tables give the minimum, median and maximum over the
repeats. Faults (a stopped broker, a memory alarm) go to a private RabbitMQ node
(scripts/rabbitmq-node) the harness starts on another port, never to the shared
broker. The web case serves the demo app and loads it with wrk. At the end the
harness prints each goal with its measured ratio and whether it is met, and with
``--out`` writes the report (markdown, and a PNG chart beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
URL = os.environ.get("AIOPRODUCER_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
Row = dict[str, Any]

#: Contenders publishing 256 B messages: (case, label).
CONTENDERS = [
    ("floor", "in-memory floor (uuid4 + put_nowait), no broker"),
    ("aioproducer", "aioproducer publish() + flush()"),
    ("aiormq 1000", "raw aiormq, 1,000 in flight"),
    ("aio-pika 1000", "raw aio-pika, 1,000 in flight"),
    ("aio-pika serial", "raw aio-pika, one at a time"),
    ("aio-pika no confirms", "raw aio-pika, no confirms (unsafe upper bound)"),
    ("faststream 1000", "FastStream RabbitBroker.publish(persist=True), 1,000 in flight"),
    ("kombu confirm", "kombu, confirm_publish (one at a time)"),
]
#: Cases slow by nature (one confirm per round trip): they publish fewer messages.
SERIAL = {"aio-pika serial", "kombu confirm"}
SIZES = (256, 4096, 65536)
PATHS = [
    ("spill", "spill to SQLite, broker unreachable"),
    ("replay sqlite", "replay from SQLite"),
    ("replay mongo", "replay from MongoDB (nx-27017)"),
]


@dataclass
class Results:
    rows: dict[tuple[str, int], list[Row]] = field(default_factory=dict)
    web: list[Row] = field(default_factory=list)
    web_loop: list[Row] = field(default_factory=list)
    web_thread: list[Row] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, case: str, size: int, row: Row) -> None:
        self.rows.setdefault((case, size), []).append(row)

    def get(self, case: str, size: int = 256) -> list[Row]:
        return self.rows.get((case, size), [])


def median(rows: list[Row], key: Callable[[Row], float]) -> float:
    return statistics.median(key(r) for r in rows) if rows else float("nan")


def rate(row: Row) -> float:
    return float(row["messages"]) / row["seconds"] if row["seconds"] else float("nan")


def cpu_us(row: Row) -> float:
    return float(row["cpu"]) / float(row["messages"]) * 1e6


def spread(rows: list[Row], key: Callable[[Row], float], fmt: str = "{:,.0f}") -> str:
    """min / median / max of ``key`` over the repeats."""
    if not rows:
        return "—"
    values = sorted(key(r) for r in rows)
    if len(values) == 1:
        return fmt.format(values[0])
    return " / ".join(fmt.format(v) for v in (values[0], statistics.median(values), values[-1]))


# -- running cases ---------------------------------------------------------------------


def run_case(
    case: str, messages: int, size: int, queue: str, env: dict[str, str] | None = None
) -> Row:
    command = [sys.executable, "-m", "bench.contenders", case]
    command += ["--messages", str(messages), "--size", str(size), "--queue", queue]
    done = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exit status {done.returncode}")
    row: Row = json.loads(done.stdout.strip().splitlines()[-1])
    return row


async def declare(queue: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(URL)
    channel = await connection.channel()
    await channel.declare_queue(queue, durable=True)
    await connection.close()


async def purge(queue: str, delete: bool = False) -> None:
    import aio_pika

    connection = await aio_pika.connect(URL)
    channel = await connection.channel()
    q = await channel.declare_queue(queue, durable=True)
    await (q.delete(if_unused=False, if_empty=False) if delete else q.purge())
    await connection.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrivateNode:
    """A RabbitMQ node of scripts/rabbitmq-node on its own port, for the fault cases."""

    def __init__(self, name: str, port: int) -> None:
        self.name, self.port = name, port
        self.node = f"{name}@localhost"

    def start(self) -> None:
        subprocess.run(
            [str(ROOT / "scripts" / "rabbitmq-node"), self.name, str(self.port), "start"],
            check=True,
            capture_output=True,
            timeout=300,
        )

    def stop(self) -> None:
        subprocess.run(
            [str(ROOT / "scripts" / "rabbitmq-node"), self.name, str(self.port), "stop"],
            check=False,
            capture_output=True,
            timeout=300,
        )

    @property
    def env(self) -> dict[str, str]:
        return {
            "AIOPRODUCER_BENCH_NODE": self.node,
            "AIOPRODUCER_BENCH_NODE_PORT": str(self.port),
            "AIOPRODUCER_BENCH_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{self.port}/",
        }


def health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
        data: dict[str, Any] = json.loads(response.read())
        return data


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"order": 1, "pad": "%s"}'
wrk.headers["Content-Type"] = "application/json"
"""


#: The web apps loaded: the demo app, and bench.webapp with delivery on the request
#: loop or in a thread of its own.
WEB_APPS = {
    "demo": (["-m", "demo_app"], {}),
    "loop": (["-m", "bench.webapp"], {"MODE": "loop"}),
    "thread": (["-m", "bench.webapp"], {"MODE": "thread"}),
}


def web_load(queue: str, seconds: int, app_name: str = "demo") -> Row:
    """wrk (2 threads, 32 connections) against a web app on a healthy broker.

    The share through the store is the producer's ``spilled`` over ``accepted``,
    read from /health once everything accepted is settled.
    """
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT % ("x" * 230))
        env = {
            **os.environ,
            "AMQP_URL": URL,
            "SPILL_PATH": str(Path(tmp) / "spill.db"),
            "FALLBACK_DIR": tmp,
            "ROUTING_KEY": queue,
            "PORT": str(port),
            "LOG_LEVEL": "WARNING",
            "MAX_BUFFER": "1000000",
        }
        arguments, extra = WEB_APPS[app_name]
        env.update(extra)
        app = subprocess.Popen(
            [sys.executable, *arguments],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            end = time.monotonic() + 60
            while True:
                try:
                    if health(port)["connected"]:
                        break
                except OSError:
                    pass
                if time.monotonic() > end or app.poll() is not None:
                    raise RuntimeError("the demo app did not start")
                time.sleep(0.1)
            cpu0 = _cpu_of(app.pid)
            out = subprocess.run(
                [wrk, "-t2", "-c32", f"-d{seconds}s", "--latency", "-s", str(script),
                 f"http://127.0.0.1:{port}/messages"],
                capture_output=True, text=True, check=True, timeout=seconds + 60,
            ).stdout  # fmt: skip
            cpu_seconds = _cpu_of(app.pid) - cpu0
            end = time.monotonic() + 120
            while True:
                state = health(port)
                if state["buffered"] == 0 and state["in_flight"] == 0:
                    break
                if time.monotonic() > end:
                    raise RuntimeError("the demo app did not settle its messages")
                time.sleep(0.2)
        finally:
            app.send_signal(signal.SIGTERM)
            try:
                app.wait(timeout=60)
            except subprocess.TimeoutExpired:
                app.kill()
    counters = state["counters"]
    requests = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = _wrk_ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    return {
        "requests": requests,
        "p99_ms": p99,
        "accepted": counters["accepted"],
        "spilled": counters["spilled"],
        "share": counters["spilled"] / max(1, counters["accepted"]),
        "cpu_per_request_us": cpu_seconds / max(1.0, requests * seconds) * 1e6,
    }


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _wrk_ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def run_all(args: argparse.Namespace) -> Results:
    results = Results()
    queue = f"bench-{os.urandom(4).hex()}"
    asyncio.run(declare(queue))
    node: PrivateNode | None = None
    if not args.no_node:
        node = PrivateNode(f"aioproducer-bench-{args.node_port}", args.node_port)
        print(f"starting the private node {node.node} on port {node.port}", flush=True)
        node.start()
    try:
        for repeat in range(args.repeats):
            print(f"-- repeat {repeat + 1} of {args.repeats}", flush=True)
            plan: list[tuple[str, int, int, dict[str, str] | None]] = []
            for case, _ in CONTENDERS:
                n = args.serial_messages if case in SERIAL else args.messages
                plan.append((case, 256, n, None))
            for size in SIZES[1:]:
                n = max(200, args.messages * 256 // size)
                plan += [("aioproducer", size, n, None), ("aiormq 1000", size, n, None)]
            # nx-27017 is a Python server sharing the machine: a quarter as many.
            plan += [(case, 256, args.messages // (4 if "mongo" in case else 1), None)
                     for case, _ in PATHS]  # fmt: skip
            plan.append(("memory", 256, args.messages, None))
            if node is not None:
                plan.append(("recovery", 256, 1, node.env))
                plan.append(("alarm", 256, args.messages // 4, node.env))
            for case, size, n, env in plan:
                try:
                    row = run_case(case, n, size, queue, env)
                except Exception as exc:
                    results.failures.append(f"{case} ({size} B): {exc}")
                    print(f"{case:22} {size:>6} B  FAILED: {exc}", flush=True)
                    continue
                results.add(case, size, row)
                extra = f"{rate(row):>10,.0f} msg/s  {cpu_us(row):7.1f} µs CPU/msg"
                print(f"{case:22} {size:>6} B {extra}", flush=True)
                asyncio.run(purge(queue))
            if args.web_seconds:
                webs = (("demo", results.web), ("loop", results.web_loop),
                        ("thread", results.web_thread))  # fmt: skip
                for name, into in webs:
                    try:
                        web = web_load(queue, args.web_seconds, name)
                    except Exception as exc:
                        results.failures.append(f"web load ({name}): {exc}")
                        print(f"web load ({name}) FAILED: {exc}", flush=True)
                        continue
                    into.append(web)
                    print(f"web load ({name}): {web}", flush=True)
                    asyncio.run(purge(queue))
    finally:
        asyncio.run(purge(queue, delete=True))
        if node is not None:
            node.stop()
    return results


# -- goals and report --------------------------------------------------------------------


@dataclass
class Goal:
    text: str
    measured: str
    met: bool | None  # None: not measured in this run


def goals(r: Results) -> list[Goal]:
    out: list[Goal] = []

    def ratio(a: float, b: float) -> float:
        return a / b if b else float("nan")

    for size in SIZES:
        ours, theirs = r.get("aioproducer", size), r.get("aiormq 1000", size)
        if ours and theirs:
            x = ratio(median(ours, cpu_us), median(theirs, cpu_us))
            out.append(
                Goal(
                    f"client CPU per confirmed message, {size} B ≤ 0.5x raw aiormq",
                    f"{x:.2f}x",
                    x <= 0.5,
                )
            )
    ours, theirs = r.get("aioproducer"), r.get("aiormq 1000")
    live = median(ours, rate)
    if ours and theirs:
        x = ratio(live, median(theirs, rate))
        out.append(Goal("confirmed throughput ≥ 1.2x raw aiormq", f"{x:.2f}x", x >= 1.2))
    if r.web:
        share = median(r.web, lambda w: w["share"]) * 100
        out.append(Goal("web load: share through the store ≤ 1 %", f"{share:.2f} %", share <= 1))
    floor = r.get("floor")
    for label, case in (("connected", "aioproducer"), ("broker stopped", "spill"),
                        ("memory alarm", "alarm")):  # fmt: skip
        rows = r.get(case)
        if rows and floor:
            p50 = ratio(median(rows, lambda w: w["p50"]), median(floor, lambda w: w["p50"]))
            p99 = ratio(median(rows, lambda w: w["p99"]), median(floor, lambda w: w["p99"]))
            out.append(Goal(f"publish() p50 ≤ 1.0x floor, {label}", f"{p50:.2f}x", p50 <= 1.0))
            out.append(Goal(f"publish() p99 ≤ 2.0x floor, {label}", f"{p99:.2f}x", p99 <= 2.0))
    for case, label, bound in (("replay sqlite", "replay from SQLite", 0.8),
                               ("replay mongo", "replay from MongoDB", 0.8),
                               ("spill", "spill", 1.0)):  # fmt: skip
        rows = r.get(case)
        if rows and ours:
            x = ratio(median(rows, rate), live)
            out.append(Goal(f"{label} ≥ {bound}x live throughput", f"{x:.2f}x", x >= bound))
    mem = r.get("memory")
    if mem:
        extra = median(mem, lambda w: w["overhead_bytes"])
        out.append(Goal("memory ≤ body + 512 B per buffered message", f"+{extra:.0f} B",
                        extra <= 512))  # fmt: skip
    rec = r.get("recovery")
    if rec:
        s = median(rec, lambda w: w["seconds"])
        out.append(Goal("first confirm ≤ 0.5 s after the port reopens (median)", f"{s:.2f} s",
                        s <= 0.5))  # fmt: skip
    return out


def versions() -> str:
    names = ["aio-pika", "aiormq", "pamqp", "faststream", "kombu", "aiosqlite", "pymongo"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (absent)")
    broker = "?"
    try:
        text = subprocess.run(
            ["rabbitmqctl", "version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
        broker = text or broker
    except OSError:
        pass
    return f"Python {platform.python_version()}, RabbitMQ {broker}, " + ", ".join(found)


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}"


def table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def report(r: Results, args: argparse.Namespace, command: str) -> str:
    parts = [
        f"Command: `{command}`",
        "",
        f"Versions: {versions()}",
        "",
        f"Machine: {machine()}",
        "",
    ]
    parts.append(
        f"{args.repeats} repeats; each cell is min / median / max over them. {args.messages:,} "
        f"persistent messages per contender ({args.serial_messages:,} for the one-at-a-time "
        "ones), each in a fresh process. CPU is user + sys of the publishing process over "
        "the timed part; RSS is its peak.\n"
    )
    parts.append("### Contenders, 256 B bodies\n")
    rows = []
    for case, label in CONTENDERS:
        got = r.get(case)
        rows.append([
            label,
            spread(got, rate),
            spread(got, cpu_us, "{:,.1f}"),
            spread(got, lambda w: w["p50"], "{:,.1f}"),
            spread(got, lambda w: w["p99"], "{:,.1f}"),
            spread(got, lambda w: w["rss_kb"] / 1024, "{:,.0f}"),
        ])  # fmt: skip
    header = ["publisher", "msg/s", "CPU µs/msg", "call p50 µs", "call p99 µs", "RSS MiB"]
    parts += [table(header, rows), ""]
    parts.append("### Body sizes: aioproducer beside raw aiormq\n")
    rows = []
    for size in SIZES:
        for case in ("aioproducer", "aiormq 1000"):
            got = r.get(case, size)
            rows.append([f"{case}", f"{size:,} B", spread(got, rate),
                         spread(got, cpu_us, "{:,.1f}")])  # fmt: skip
    parts += [table(["publisher", "body", "msg/s", "CPU µs/msg"], rows), ""]
    parts.append("### The producer's own paths\n")
    rows = []
    for case, label in PATHS:
        got = r.get(case)
        rows.append([label, spread(got, rate), spread(got, cpu_us, "{:,.1f}")])
    parts += [table(["path", "msg/s", "CPU µs/msg"], rows), ""]
    extra = []
    if r.get("spill"):
        got = r.get("spill")
        extra.append(["publish() with the broker unreachable, p50 / p99 µs",
                      spread(got, lambda w: w["p50"], "{:.1f}") + " ; "
                      + spread(got, lambda w: w["p99"], "{:.1f}")])  # fmt: skip
    if r.get("alarm"):
        got = r.get("alarm")
        extra.append(["publish() under a memory alarm, p50 / p99 µs",
                      spread(got, lambda w: w["p50"], "{:.1f}") + " ; "
                      + spread(got, lambda w: w["p99"], "{:.1f}")])  # fmt: skip
    if r.get("memory"):
        extra.append(["memory per buffered message beyond its body, B",
                      spread(r.get("memory"), lambda w: w["overhead_bytes"])])  # fmt: skip
    if r.get("recovery"):
        extra.append(["first confirm after the port reopens, s",
                      spread(r.get("recovery"), lambda w: w["seconds"], "{:.2f}")])  # fmt: skip
    parts += [table(["measure", "min / median / max"], extra), ""]
    if r.web or r.web_loop or r.web_thread:
        parts.append(f"### Web load: wrk -t2 -c32 -d{args.web_seconds}s, healthy broker\n")
        rows = []
        for label, got in (("demo app (delivery on the request loop)", r.web),
                           ("bench.webapp, delivery on the request loop", r.web_loop),
                           ("bench.webapp, delivery in its own thread", r.web_thread)):  # fmt: skip
            if got:
                rows.append([label, spread(got, lambda w: w["requests"]),
                             spread(got, lambda w: w["p99_ms"], "{:.1f}"),
                             spread(got, lambda w: w["share"] * 100, "{:.2f}"),
                             spread(got, lambda w: w["cpu_per_request_us"], "{:.0f}")])  # fmt: skip
        header = ["app", "requests/s", "HTTP p99 ms", "% via the store", "CPU µs/request"]
        parts += [table(header, rows), ""]
    parts.append("### Goals\n")
    parts.append(
        table(
            ["goal", "measured", "met"],
            ([g.text, g.measured, "met" if g.met else "not met"] for g in goals(r)),
        )
    )
    if r.failures:
        parts += ["", "Cases that failed in this run:", ""]
        parts += [f"- {f}" for f in r.failures]
    return "\n".join(parts) + "\n"


def chart(r: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, cpu, rates = [], [], []
    for case, _ in CONTENDERS[1:]:
        got = r.get(case)
        if got:
            labels.append(case)
            cpu.append(median(got, cpu_us))
            rates.append(median(got, rate))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.barh(labels, cpu, color="#4c72b0")
    left.set_xlabel("client CPU µs per message (median)")
    left.invert_yaxis()
    right.barh(labels, rates, color="#55a868")
    right.set_xlabel("messages/s (median)")
    right.invert_yaxis()
    right.set_yticklabels([])
    fig.suptitle("256 B persistent messages, same broker, one run")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


START, END = "<!-- harness report: start -->", "<!-- harness report: end -->"


def write_between_markers(path: Path, text: str) -> None:
    """Put ``text`` between the report markers of ``path``; the rest stays as it is."""
    old = path.read_text() if path.exists() else ""
    if START in old and END in old:
        head, rest = old.split(START, 1)
        tail = rest.split(END, 1)[1]
    else:
        head, tail = old + "\n", "\n"
    path.write_text(f"{head}{START}\n{text}{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--serial-messages", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--web-seconds", type=int, default=15, help="0: no web load")
    parser.add_argument("--no-node", action="store_true", help="no private node: no faults")
    parser.add_argument("--node-port", type=int, default=5699)
    parser.add_argument("--out", type=Path, help="write the report (markdown) here")
    parser.add_argument("--chart", type=Path, default=ROOT / "docs" / "img" / "benchmarks.png")
    args = parser.parse_args(argv)
    command = "python -m bench.harness " + " ".join(argv if argv is not None else sys.argv[1:])
    results = run_all(args)
    text = report(results, args, command.strip())
    print()
    print(text)
    for goal in goals(results):
        print(f"{'met    ' if goal.met else 'NOT MET'}  {goal.text}: {goal.measured}")
    if args.out is not None:
        chart(results, args.chart)
        write_between_markers(args.out, text)
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main())
