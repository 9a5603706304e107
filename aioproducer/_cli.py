"""The ``aioproducer`` command: see and steer what a store holds, and replay it.

Every command reads its store from ``--sqlite PATH`` or ``--mongo URL`` (else from
``AIOPRODUCER_MONGO_URL`` or ``AIOPRODUCER_SQLITE_PATH``, so that credentials stay
out of ``ps`` and shell history; else ``aioproducer-spill.db``), and its broker from
``--amqp URL`` or ``AMQP_URL`` (the nodes of a cluster: several URLs separated by
commas). Passwords are masked in everything it prints. A
failure prints one line, ``aioproducer: error: ...``, and exits non-zero:
1 for an unreachable service or a failed operation, 2 for bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from ._config import check_urls, mask
from ._exceptions import InvalidMessage, StoreError
from ._fallback import _from_dict, _to_dict, write_messages
from ._message import Message, check_name, prepare_headers
from ._stores._base import Store

if TYPE_CHECKING:
    from ._worker import ReplayWorker

#: Exit status for a failed operation or an unreachable service.
FAILED = 1
#: Exit status for bad input (usage, a bad file, a bad name).
BAD_INPUT = 2

DEFAULT_SQLITE = "aioproducer-spill.db"
ENV_MONGO = "AIOPRODUCER_MONGO_URL"
ENV_SQLITE = "AIOPRODUCER_SQLITE_PATH"
ENV_AMQP = "AMQP_URL"

log = logging.getLogger("aioproducer.cli")

#: Third-party loggers that log every reconnection attempt (aiormq at ERROR, with a
#: traceback); quiet unless ``--verbose``.
NOISY_LOGGERS = ("aiormq", "aio_pika")


class Failure(Exception):
    """A command failed; the text is the one line shown, ``status`` the exit status."""

    def __init__(self, text: str, status: int = FAILED) -> None:
        super().__init__(text)
        self.status = status


# -- output ----------------------------------------------------------------------------


def say(text: str = "", *, file: TextIO | None = None) -> None:
    """Print one line (or several), URL passwords masked."""
    print(mask(text), file=file or sys.stdout, flush=True)


class _MaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


def quiet_noisy_loggers(level: int = logging.CRITICAL) -> None:
    """Keep aio-pika's and aiormq's reconnection chatter out of the log."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level)


def _setup_logging(verbose: int) -> logging.Handler:
    """Log to stderr, passwords masked: warnings, ``-v`` our INFO lines, ``-vv`` DEBUG and
    aio-pika's and aiormq's own lines. Returns the handler, to remove when done."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    ours = logging.getLogger("aioproducer")
    ours.setLevel([logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)])
    quiet_noisy_loggers(logging.NOTSET if verbose >= 2 else logging.CRITICAL)
    return handler


def _age(seconds: float) -> str:
    """A short human age: 42s, 7m03s, 5h12m, 3d04h."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _table(rows: list[list[str]], header: list[str]) -> Iterator[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        yield "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()


def _short(text: str | None, limit: int) -> str:
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- settings --------------------------------------------------------------------------


def _store(args: argparse.Namespace) -> Store:
    """The store the arguments (or the environment) name; SQLite files must exist."""
    mongo = args.mongo or (None if args.sqlite else os.environ.get(ENV_MONGO))
    if mongo:
        from ._stores._mongo import MongoStore

        clock = time.time if args.lease_clock == "host" else None
        try:
            return MongoStore.from_url(
                mongo, database=args.database, collection=args.collection, clock=clock
            )
        except (ValueError, ImportError) as exc:
            raise Failure(str(exc), BAD_INPUT) from None
    path = args.sqlite or os.environ.get(ENV_SQLITE) or DEFAULT_SQLITE
    if not os.path.isfile(path):
        raise Failure(f"no SQLite store at {path!r} (give --sqlite PATH or --mongo URL)")
    from ._stores._sqlite import SQLiteStore

    return SQLiteStore(path)


def _amqp(args: argparse.Namespace, *, required: bool) -> tuple[str, ...] | None:
    """The broker addresses given (one, or several separated by commas), checked."""
    url: str | None = args.amqp or os.environ.get(ENV_AMQP)
    if url is None:
        if required:
            raise Failure(f"no broker: give --amqp URL or set {ENV_AMQP}", BAD_INPUT)
        return None
    try:
        return check_urls(url)
    except ValueError as exc:
        raise Failure(str(exc), BAD_INPUT) from None


async def _probe_all(urls: Sequence[str], timeout: float) -> dict[str, str | None]:
    """Each address with why it could not be reached (None: it could)."""
    from ._connection import probe

    problems = await asyncio.gather(*(probe(url, timeout=timeout) for url in urls))
    return dict(zip(urls, problems, strict=True))


def _name(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    try:
        return check_name(value, what)
    except InvalidMessage as exc:
        raise Failure(str(exc), BAD_INPUT) from None


# -- commands --------------------------------------------------------------------------


async def _status(args: argparse.Namespace, store: Store) -> int:
    urls = _amqp(args, required=False)
    backlog = await store.backlog()
    keys = await store.by_key()
    broker: dict[str, Any] = {"checked": urls is not None}
    problems: dict[str, str | None] = {}
    if urls is not None:
        problems = await _probe_all(urls, args.timeout)
        failed = [problem for problem in problems.values() if problem is not None]
        broker.update(
            url=",".join(mask(url) for url in urls),
            # One node that answers is enough: a producer moves to it.
            reachable=len(failed) < len(urls),
            error="; ".join(failed) or None,
            nodes=[
                {"url": mask(url), "reachable": problem is None, "error": problem}
                for url, problem in problems.items()
            ],
        )
    now = time.time()
    oldest_age = None if backlog.oldest is None else max(0.0, now - backlog.oldest)
    if args.json:
        report = {
            "store": mask(repr(store)),
            "backlog": {
                "total": backlog.total,
                "due": backlog.due,
                "leased": backlog.leased,
                "held": backlog.held,
                "dead": backlog.dead,
            },
            "oldest_age_seconds": oldest_age,
            "by_key": [
                {
                    "exchange": k.exchange,
                    "routing_key": k.routing_key,
                    "total": k.total,
                    "dead": k.dead,
                }
                for k in keys
            ],
            "broker": broker,
        }
        say(json.dumps(report, indent=2))
    else:
        say(f"store    {store!r}")
        say(
            f"backlog  {backlog.total} messages: {backlog.due} due, {backlog.leased} leased, "
            f"{backlog.held} held, {backlog.dead} dead"
        )
        say(f"oldest   {'-' if oldest_age is None else _age(oldest_age) + ' ago'}")
        if urls is None:
            say(f"broker   not checked (no --amqp or {ENV_AMQP})")
        for url, problem in problems.items():
            if problem is None:
                say(f"broker   {mask(url)} reachable")
            else:
                say(f"broker   UNREACHABLE: {problem}")
        if keys:
            say()
            rows = [
                [k.exchange or '""', k.routing_key or '""', str(k.total), str(k.dead)]
                for k in keys[: args.keys]
            ]
            for line in _table(rows, ["EXCHANGE", "ROUTING KEY", "MESSAGES", "DEAD"]):
                say(line)
            if len(keys) > args.keys:
                say(f"... and {len(keys) - args.keys} more keys")
    return FAILED if broker.get("reachable") is False else 0


async def _count(args: argparse.Namespace, store: Store) -> int:
    say(str(await store.count()))
    return 0


async def _dead_list(args: argparse.Namespace, store: Store) -> int:
    dead = [m async for m in store.scan(dead=True)]
    dead.sort(key=lambda m: (m.timestamp, m.message_id))
    now = time.time()
    if args.json:
        for m in dead:
            record = {
                "message_id": m.message_id,
                "exchange": m.exchange,
                "routing_key": m.routing_key,
                "attempts": m.attempts,
                "last_error": m.last_error,
                "age_seconds": max(0.0, now - m.timestamp),
            }
            say(json.dumps(record))
        return 0
    if not dead:
        say("no dead messages")
        return 0
    rows = [
        [
            m.message_id,
            m.exchange or '""',
            m.routing_key or '""',
            str(m.attempts),
            _short(m.last_error, 60),
            _age(now - m.timestamp),
        ]
        for m in dead[: args.limit]
    ]
    for line in _table(rows, ["ID", "EXCHANGE", "ROUTING KEY", "ATTEMPTS", "LAST ERROR", "AGE"]):
        say(line)
    if len(dead) > args.limit:
        say(f"... {len(dead)} dead messages in all (--limit N to see more)")
    return 0


async def _dead_show(args: argparse.Namespace, store: Store) -> int:
    message = await store.get(args.id)
    if message is None or not message.dead:
        raise Failure(f"no dead message {args.id!r} in the store")
    try:
        body = message.body.decode()
        encoding = "utf-8"
    except UnicodeDecodeError:
        body, encoding = base64.b64encode(message.body).decode(), "base64"
    now = time.time()
    if args.json:
        say(json.dumps({**_to_dict(message), "age_seconds": now - message.timestamp}))
        return 0
    say(f"id            {message.message_id}")
    say(f"exchange      {message.exchange or '(default)'}")
    say(f"routing key   {message.routing_key}")
    say(f"content type  {message.content_type}")
    say(f"accepted      {_age(now - message.timestamp)} ago")
    say(f"attempts      {message.attempts}")
    say(f"last error    {message.last_error or '-'}")
    say(f"headers       {json.dumps(_to_dict(message)['headers'])}")
    say(f"properties    {json.dumps(_to_dict(message)['properties'])}")
    say(f"body ({encoding}, {len(message.body)} bytes)")
    print(body, flush=True)
    return 0


async def _dead_requeue(args: argparse.Namespace, store: Store) -> int:
    exchange = _name(args.exchange, "exchange")
    routing_key = _name(args.routing_key, "routing_key")
    if args.all == bool(args.ids):
        raise Failure("name the dead messages to requeue, or pass --all", BAD_INPUT)
    ids = [m.message_id async for m in store.scan(dead=True)] if args.all else args.ids
    done = await store.requeue(ids, exchange=exchange, routing_key=routing_key)
    where = ""
    if exchange is not None or routing_key is not None:
        where = f" to exchange {exchange!r}" if exchange is not None else ""
        where += f" with routing key {routing_key!r}" if routing_key is not None else ""
    say(f"requeued {done} dead messages{where}; they are due now")
    if not args.all and done < len(ids):
        say(f"{len(ids) - done} of the ids given are not dead messages in the store")
        return FAILED
    return 0


async def _dead_purge(args: argparse.Namespace, store: Store) -> int:
    ids: list[str] | None = args.ids or None
    backlog = await store.backlog()
    what = f"{len(ids)} dead messages" if ids else f"all {backlog.dead} dead messages"
    if not args.yes:
        if not sys.stdin.isatty():
            raise Failure(f"not purging {what} without confirmation: pass --yes", BAD_INPUT)
        prompt = mask(f"delete {what} from {store!r} for good? [y/N] ")
        answer = await asyncio.to_thread(input, prompt)
        if answer.strip().lower() not in ("y", "yes"):
            say("nothing purged")
            return FAILED
    done = await store.purge_dead(ids)
    say(f"purged {done} dead messages")
    return 0


#: Fields of a close-time record that must be JSON strings.
_TEXT_FIELDS = ("message_id", "body", "exchange", "routing_key", "content_type")


def _read_file(path: Path, max_body: int) -> list[Message]:
    """Every record of a close-time file, checked as publish() checks a message."""
    messages: list[Message] = []
    try:
        source = open(path, encoding="utf-8")
    except OSError as exc:
        raise Failure(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    with source:
        try:
            for number, line in enumerate(source, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    if not isinstance(record, dict):
                        raise ValueError("not a JSON object")
                    for key in _TEXT_FIELDS:
                        if not isinstance(record[key], str):
                            raise ValueError(f"{key} is not a string")
                    message = _from_dict(record)
                    check_name(message.message_id, "message_id", empty=False)
                    check_name(message.exchange, "exchange")
                    check_name(message.routing_key, "routing_key")
                    check_name(message.content_type, "content_type")
                    if message.headers is not None:
                        message.headers, message.headers_wire = prepare_headers(message.headers)
                    if len(message.body) > max_body:
                        raise ValueError(f"body of {len(message.body)} bytes is over {max_body}")
                    if message.attempts < 0:
                        raise ValueError("attempts is negative")
                except (
                    ValueError,
                    KeyError,
                    TypeError,
                    InvalidMessage,
                    binascii.Error,
                    RecursionError,
                ) as exc:
                    reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
                    raise Failure(
                        f"{path}:{number}: bad record: {_short(reason, 120)}", BAD_INPUT
                    ) from None
                messages.append(message)
        except UnicodeDecodeError:
            raise Failure(f"{path}: not UTF-8 text", BAD_INPUT) from None
    return messages


async def _import(args: argparse.Namespace, store: Store) -> int:
    paths = [Path(name) for name in args.files]
    _check_files(paths)
    for path in paths:
        messages = await asyncio.to_thread(_read_file, path, store.max_body_size)
        now = time.time()
        for message in messages:
            message.due_at = now
        before = await store.count()
        for start in range(0, len(messages), 500):
            await store.put(messages[start : start + 500])
        after = await store.count()
        done = await asyncio.to_thread(_mark_imported, path)
        say(
            f"imported {len(messages)} messages from {path} ({max(0, after - before)} new); "
            f"renamed it to {done.name}; the store holds {after}"
        )
    return 0


def _write_new(path: Path, messages: list[Message]) -> int:
    if path.exists():
        raise Failure(f"{str(path)!r} exists; export writes a new file")
    try:
        return write_messages(path, messages)
    except OSError as exc:
        raise Failure(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None


def _check_files(paths: list[Path]) -> None:
    for path in paths:
        if not path.is_file():
            raise Failure(f"no file {str(path)!r}")


def _mark_imported(path: Path) -> Path:
    """Rename an imported file to ``FILE.imported``, so it is not imported again."""
    done = path.with_name(path.name + ".imported")
    if done.exists():
        raise Failure(f"imported {path}, but cannot rename it: {str(done)!r} exists")
    path.rename(done)
    return done


async def _export(args: argparse.Namespace, store: Store) -> int:
    dead = {"all": None, "live": False, "dead": True}[args.which]
    if args.output is None or args.output == "-":
        count = 0
        async for message in store.scan(dead=dead):
            sys.stdout.write(json.dumps(_to_dict(message), separators=(",", ":")) + "\n")
            count += 1
        sys.stdout.flush()
        say(f"exported {count} messages", file=sys.stderr)
        return 0
    path = Path(args.output)
    messages = [m async for m in store.scan(dead=dead)]
    count = await asyncio.to_thread(_write_new, path, messages)
    say(f"exported {count} messages to {path}", file=sys.stderr)
    return 0


async def _replay(args: argparse.Namespace, store: Store) -> int:
    from ._worker import ReplayWorker

    urls = _amqp(args, required=True)
    assert urls is not None
    problems = await _probe_all(urls, args.timeout)
    if all(problem is not None for problem in problems.values()):
        raise Failure(f"broker unreachable: {'; '.join(filter(None, problems.values()))}")
    backlog = await store.backlog()
    try:
        worker = ReplayWorker(
            urls,
            store,
            lease=args.lease,
            replay_batch=args.batch,
            max_attempts=args.max_attempts,
        )
    except ValueError as exc:
        raise Failure(str(exc), BAD_INPUT) from None
    stop = asyncio.Event()
    stopped_by: list[int] = []
    loop = asyncio.get_running_loop()
    deadline_set = False

    def stopping() -> None:
        # The stop gets --stop-timeout seconds from the moment it is asked for; only
        # in the main thread, where the process is the command's own to end.
        nonlocal deadline_set
        if not deadline_set and handled:
            deadline_set = True
            why = f"did not stop within {args.stop_timeout:g}s"
            loop.call_later(args.stop_timeout, _give_up, why, worker)

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stopped_by:
            _give_up(f"a second signal ({name}) while stopping", worker)
        stopped_by.append(signum)
        stop.set()
        stopping()
        log.info("%s: stopping, handing back the leases held (a second signal exits at once)", name)

    handled: list[int] = []
    for number in (signal.SIGINT, signal.SIGTERM):
        # Only the main thread can take signals (the tests run commands in threads).
        with contextlib.suppress(ValueError, RuntimeError):
            loop.add_signal_handler(number, on_signal, number)
            handled.append(number)
    progress = _progress_bar(backlog.due + backlog.leased + backlog.held, args)
    empty_polls = 0
    worker.start()
    try:
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.poll)
                try:
                    now = await worker.progress()
                except StoreError as exc:
                    progress.note(f"store: {exc}")
                    continue
                progress.update(
                    now.replayed, now.backlog.due + now.backlog.leased + now.backlog.held
                )
                if now.backlog.due == 0 and now.backlog.leased == 0:
                    empty_polls += 1
                    if empty_polls >= 2 and not args.follow:
                        break
                else:
                    empty_polls = 0
        finally:
            stopping()
            try:
                await worker.stop()
            finally:
                progress.close()
        left = await store.backlog()
        await store.close()
    finally:
        # The deadline stays armed: the loop's own ending (cancelling the tasks left,
        # joining the executor's threads) comes after this and may hang as well.
        for taken in handled:
            loop.remove_signal_handler(taken)
    why = f"stopped by {signal.Signals(stopped_by[0]).name}" if stopped_by else "done"
    last_ack = worker.store.last_ack
    if last_ack is not None:
        # From the start to the last deletion of confirmed messages.
        seconds, replayed = last_ack - progress.started, worker.replayed
    else:
        seconds, replayed = progress.elapsed, 0
    say(
        f"{why}: {worker.replayed} replayed ({replayed} in {seconds:.2f}s, "
        f"{replayed / max(seconds, 1e-9):.0f} msg/s); the store holds "
        f"{left.total}: {left.due} due, {left.leased} leased, {left.held} held, {left.dead} dead"
    )
    return 128 + stopped_by[0] if stopped_by else 0


def _give_up(why: str, worker: ReplayWorker) -> NoReturn:
    """End a replay whose stop is stuck, now: log what still runs, then exit (status 1).

    Nothing is lost: a message whose lease is not handed back is replayed by the next
    worker once the lease expires (a duplicate at worst).
    """
    running = sorted(_awaiting(task) for task in asyncio.all_tasks())
    log.error(
        "replay worker %s: %s; exiting with %d leases held and %d claims unanswered "
        "(their leases expire by themselves). Still running:\n%s",
        worker.owner,
        why,
        worker.leases_held,
        worker.claims_unanswered,
        "\n".join(running),
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(FAILED)


def _awaiting(task: asyncio.Task[Any]) -> str:
    """One line: where a task is, down its chain of awaits (``get_stack`` stops at the
    first coroutine)."""
    steps: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(steps) < 20:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            steps.append(type(awaited).__name__)
            break
        module = frame.f_globals.get("__name__", "?")
        steps.append(f"{module}:{frame.f_lineno} {frame.f_code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return f"  {task.get_name()}: {' > '.join(steps)}"


def _seconds(text: str) -> float:
    """An argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


class _Progress:
    """Replay progress: a tqdm bar on a terminal, else a plain line every few seconds."""

    def __init__(self, total: int, *, bar: Any, every: float) -> None:
        self.started = time.monotonic()
        self._bar = bar
        self._every = every
        self._shown = 0
        self._last_line = self.started
        self._total = total
        self._done = 0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def update(self, done: int, left: int) -> None:
        # Messages kept as dead leave the total: they are not coming.
        self._total = done + left
        self._done = done
        if self._bar is not None:
            self._bar.total = self._total
            self._bar.update(done - self._shown)
            self._shown = done
            return
        now = time.monotonic()
        if now - self._last_line >= self._every:
            self._last_line = now
            rate = done / max(self.elapsed, 1e-9)
            eta = _age(left / rate) if rate > 0 and left else "-"
            say(f"replayed {done}/{self._total}  {rate:.0f} msg/s  ETA {eta}", file=sys.stderr)

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(mask(text), file=sys.stderr)
        else:
            say(text, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler) and isinstance(
                    handler.stream, _AboveBar
                ):
                    handler.setStream(sys.stderr)


class _AboveBar:
    """A stream that writes through a tqdm bar, above it."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def write(self, text: str) -> int:
        if text.strip():
            self._bar.write(text.rstrip("\n"), file=sys.stderr)
        return len(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _progress_bar(total: int, args: argparse.Namespace) -> _Progress:
    bar = None
    if sys.stderr.isatty() and not args.no_bar:
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            width = shutil.get_terminal_size().columns
            bar = tqdm(
                total=total,
                unit="msg",
                desc="replay",
                file=sys.stderr,
                smoothing=0.1,
                ncols=width if width >= 40 else 100,  # a terminal that reports no width
            )
            # Log lines go above the bar instead of through it.
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler) and isinstance(
                    handler.formatter, _MaskingFormatter
                ):
                    handler.setStream(_AboveBar(bar))
    return _Progress(total, bar=bar, every=args.every)


# -- parsing ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("store")
    chosen = where.add_mutually_exclusive_group()
    chosen.add_argument(
        "--sqlite", metavar="PATH", help=f"SQLite store file (env {ENV_SQLITE}; must exist)"
    )
    chosen.add_argument("--mongo", metavar="URL", help=f"MongoDB URL (better: set {ENV_MONGO})")
    where.add_argument("--database", default="aioproducer", help="MongoDB database")
    where.add_argument("--collection", default="spill", help="MongoDB collection")
    where.add_argument(
        "--lease-clock",
        choices=("server", "host"),
        default="server",
        help="MongoDB: leases on the server's clock (default) or this host's",
    )
    common.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")

    parser = argparse.ArgumentParser(
        prog="aioproducer",
        description="See and steer what an aioproducer store holds, and replay it.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def broker(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--amqp",
            metavar="URL",
            help=f"broker URL, or several separated by commas (better: set {ENV_AMQP})",
        )
        sub.add_argument(
            "--timeout", type=float, default=5.0, help="seconds to wait for the broker"
        )

    status = commands.add_parser("status", parents=[common], help="what the store holds")
    broker(status)
    status.add_argument("--json", action="store_true", help="one JSON document")
    status.add_argument("--keys", type=int, default=20, help="keys listed at most")
    status.set_defaults(run=_status)

    count = commands.add_parser("count", parents=[common], help="how many messages are held")
    count.set_defaults(run=_count)

    replay = commands.add_parser(
        "replay", parents=[common], help="replay the store to the broker (a standalone worker)"
    )
    broker(replay)
    replay.add_argument("--follow", action="store_true", help="keep running when empty")
    replay.add_argument("--batch", type=int, default=200, help="messages claimed at once")
    replay.add_argument("--lease", type=float, default=30.0, help="lease seconds")
    replay.add_argument(
        "--max-attempts", type=int, default=None, help="keep a message as dead after N failures"
    )
    replay.add_argument("--poll", type=float, default=0.5, help="seconds between progress reads")
    replay.add_argument(
        "--every", type=float, default=5.0, help="seconds between progress lines (no terminal)"
    )
    replay.add_argument("--no-bar", action="store_true", help="plain progress lines")
    replay.add_argument(
        "--stop-timeout",
        type=_seconds,
        default=20.0,
        help="seconds a stop (signal or end) may take before the worker exits anyway",
    )
    replay.set_defaults(run=_replay)

    dead = commands.add_parser("dead", help="messages kept as dead").add_subparsers(
        dest="dead_command", required=True, metavar="ACTION"
    )
    listing = dead.add_parser("list", parents=[common], help="id, names, attempts, error, age")
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    listing.add_argument("--limit", type=int, default=100, help="rows shown at most")
    listing.set_defaults(run=_dead_list)
    show = dead.add_parser("show", parents=[common], help="one dead message, with its body")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=_dead_show)
    requeue = dead.add_parser("requeue", parents=[common], help="make dead messages due again")
    requeue.add_argument("ids", nargs="*", metavar="ID")
    requeue.add_argument("--all", action="store_true", help="every dead message")
    requeue.add_argument("--exchange", help="publish them to this exchange instead")
    requeue.add_argument("--routing-key", help="with this routing key instead")
    requeue.set_defaults(run=_dead_requeue)
    purge = dead.add_parser("purge", parents=[common], help="delete dead messages for good")
    purge.add_argument("ids", nargs="*", metavar="ID", help="these only (default: all)")
    purge.add_argument("--yes", action="store_true", help="do not ask (for scripts)")
    purge.set_defaults(run=_dead_purge)

    importing = commands.add_parser(
        "import", parents=[common], help="put files written on close back into the store"
    )
    importing.add_argument("files", nargs="+", metavar="FILE")
    importing.set_defaults(run=_import)

    export = commands.add_parser(
        "export", parents=[common], help="the store's messages as JSON lines"
    )
    export.add_argument("-o", "--output", metavar="FILE", help="a new file (default: stdout)")
    export.add_argument(
        "--which", choices=("all", "live", "dead"), default="all", help="which messages"
    )
    export.set_defaults(run=_export)
    return parser


async def _run(
    command: Callable[[argparse.Namespace, Store], Awaitable[int]], args: argparse.Namespace
) -> int:
    store = _store(args)
    try:
        return await command(args, store)
    finally:
        with contextlib.suppress(Exception):
            await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    _mask_usage_errors(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else BAD_INPUT
    handler = _setup_logging(args.verbose)
    try:
        return asyncio.run(_run(args.run, args))
    except Failure as exc:
        say(f"aioproducer: error: {exc}", file=sys.stderr)
        return exc.status
    except StoreError as exc:
        say(f"aioproducer: error: {exc}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        say("aioproducer: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        logging.getLogger().removeHandler(handler)


def _mask_usage_errors(parser: argparse.ArgumentParser) -> None:
    """argparse quotes bad arguments (a URL among them) in its errors: mask them."""

    def masking(sub: argparse.ArgumentParser) -> Callable[[str], NoReturn]:
        def error(message: str) -> NoReturn:
            sub.print_usage(sys.stderr)
            sub.exit(BAD_INPUT, mask(f"{sub.prog}: error: {message}\n"))

        return error

    for sub in _all_parsers(parser):
        sub.error = masking(sub)  # type: ignore[method-assign,assignment]


def _all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)
