"""The ``aioproducer`` command against the real broker, on SQLite and on MongoDB (nx-27017).

Backlogs are left the way production leaves them: a producer pointed at a closed
port accepts messages and closes, storing every one.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from aioproducer import Message, MongoStore, Properties, Store
from aioproducer._fallback import read_messages, write_messages
from bench.backlog import make_backlog
from tests.broker import AMQP_URL, drain, wait_for_ids
from tests.stores.nx import NxServer
from tests.waiting import wait_until

from .conftest import CliStore

pytestmark = pytest.mark.broker

#: Planted in every URL and body the tests hand over: never printed.
SECRET = "Pl4ntedS3cret"
BODY_MARK = "B0dyM4rker"
BAD_AMQP = f"amqp://ops:{SECRET}@127.0.0.1:1/"


def no_secrets(text: str) -> None:
    assert SECRET not in text
    assert BODY_MARK not in text


async def dead_messages(cli_store: CliStore, n: int, **fields: Any) -> list[Message]:
    """``n`` dead messages put straight into the store, as a producer keeps them."""
    now = time.time()
    messages = [
        Message(
            message_id=f"dead-{os.urandom(4).hex()}-{i}",
            body=f'{{"{BODY_MARK}": {i}}}'.encode(),
            exchange=fields.get("exchange", "gone"),
            routing_key=fields.get("routing_key", "invoices"),
            content_type="application/json",
            timestamp=now - 60 - i,
            headers={"tenant": f"{BODY_MARK}-h"},
            attempts=5,
            last_error="channel_error: NOT_FOUND - no exchange 'gone' in vhost '/'",
            due_at=now,
            dead=True,
        )
        for i in range(n)
    ]
    store = cli_store.open()
    try:
        await store.put(messages)
    finally:
        await store.close()
    return messages


async def backlog(cli_store: CliStore, n: int, queue: str, **kwargs: Any) -> list[str]:
    store = cli_store.open()
    return await make_backlog(store, n, routing_keys=[queue], **kwargs)


async def test_status_json_counts_by_state_and_key_and_checks_the_broker(
    cli: Any, cli_store: CliStore, queue: str
) -> None:
    await backlog(cli_store, 30, queue, to_missing=2)
    await dead_messages(cli_store, 3)
    run = await cli("status", *cli_store.args, "--amqp", AMQP_URL, "--json")
    assert run.status == 0, run.err
    report = json.loads(run.out)
    assert report["backlog"] == {"total": 35, "due": 32, "leased": 0, "held": 0, "dead": 3}
    assert report["oldest_age_seconds"] >= 60
    keys = {(k["exchange"], k["routing_key"]): (k["total"], k["dead"]) for k in report["by_key"]}
    assert keys == {
        ("", queue): (30, 0),
        ("billing.gone", "invoices"): (2, 0),
        ("gone", "invoices"): (3, 3),
    }
    assert report["broker"]["reachable"] is True
    assert "guest:***@" in report["broker"]["url"]

    text = await cli("status", *cli_store.args, "--amqp", AMQP_URL)
    assert text.status == 0
    assert "35 messages: 32 due, 0 leased, 0 held, 3 dead" in text.out
    no_secrets(text.text)


async def test_status_fails_when_the_broker_is_unreachable_and_masks_its_password(
    cli: Any, cli_store: CliStore
) -> None:
    run = await cli("status", *cli_store.args, "--amqp", BAD_AMQP, "--json", "--timeout", "2")
    assert run.status == 1
    assert json.loads(run.out)["broker"]["reachable"] is False
    no_secrets(run.text)
    assert "ops:***@" in run.out


async def test_status_checks_every_node_and_passes_while_one_answers(
    cli: Any, cli_store: CliStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = f"{BAD_AMQP},{AMQP_URL}"
    run = await cli("status", *cli_store.args, "--amqp", nodes, "--json", "--timeout", "2")
    assert run.status == 0, run.err
    broker = json.loads(run.out)["broker"]
    assert broker["reachable"] is True
    assert [node["reachable"] for node in broker["nodes"]] == [False, True]
    assert "ops:***@" in broker["nodes"][0]["url"]
    no_secrets(run.text)
    monkeypatch.setenv("AMQP_URL", nodes)
    text = await cli("status", *cli_store.args, "--timeout", "2")
    assert text.status == 0
    assert "UNREACHABLE" in text.out and "reachable" in text.out
    no_secrets(text.text)


async def test_replay_drains_a_backlog_left_by_a_closed_producer(
    cli: Any, cli_store: CliStore, queue: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    ids = await backlog(cli_store, 400, queue)
    run = await cli("replay", *cli_store.args, "--amqp", AMQP_URL, "--poll", "0.1", "-v")
    assert run.status == 0, run.err
    assert "done: 400 replayed" in run.out
    got = await wait_for_ids(amqp, queue, set(ids), timeout=30)
    assert {r.message_id for r in got} == set(ids)
    store = cli_store.open()
    try:
        assert await store.count() == 0
    finally:
        await store.close()
    no_secrets(run.text)


async def test_dead_list_show_requeue_and_replay_delivers(
    cli: Any, cli_store: CliStore, queue: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    dead = await dead_messages(cli_store, 3)
    listing = await cli("dead", "list", *cli_store.args, "--json")
    assert listing.status == 0
    rows = [json.loads(line) for line in listing.out.splitlines()]
    assert {r["message_id"] for r in rows} == {m.message_id for m in dead}
    assert all(r["attempts"] == 5 and r["exchange"] == "gone" for r in rows)
    assert all(r["age_seconds"] >= 60 and "NOT_FOUND" in r["last_error"] for r in rows)
    table = await cli("dead", "list", *cli_store.args)
    assert dead[0].message_id in table.out and "NOT_FOUND" in table.out
    no_secrets(listing.text + table.text)  # no body, no header value

    show = await cli("dead", "show", dead[0].message_id, *cli_store.args)
    assert show.status == 0 and BODY_MARK in show.out  # the body, only here
    missing = await cli("dead", "show", "no-such-id", *cli_store.args)
    assert missing.status == 1 and "no dead message" in missing.err

    requeue = await cli(
        "dead", "requeue", dead[0].message_id, dead[1].message_id,
        *cli_store.args, "--exchange", "", "--routing-key", queue,
    )  # fmt: skip
    assert requeue.status == 0, requeue.err
    assert "requeued 2 dead messages" in requeue.out
    replay = await cli("replay", *cli_store.args, "--amqp", AMQP_URL, "--poll", "0.1")
    assert replay.status == 0
    got = await wait_for_ids(amqp, queue, {dead[0].message_id, dead[1].message_id}, timeout=30)
    assert {r.routing_key for r in got} == {queue}
    status = await cli("status", *cli_store.args, "--json")
    assert json.loads(status.out)["backlog"]["dead"] == 1


async def test_requeue_refuses_bad_input(cli: Any, cli_store: CliStore) -> None:
    assert (await cli("dead", "requeue", *cli_store.args)).status == 2
    run = await cli("dead", "requeue", "x", *cli_store.args, "--routing-key", "k" * 300)
    assert run.status == 2 and "routing_key is over 255 bytes" in run.err
    unknown = await cli("dead", "requeue", "not-dead", *cli_store.args)
    assert unknown.status == 1 and "requeued 0" in unknown.out


async def test_purge_refuses_without_confirmation_and_deletes_with_yes(
    cli: Any, cli_store: CliStore
) -> None:
    dead = await dead_messages(cli_store, 4)
    refused = await cli("dead", "purge", *cli_store.args)
    assert refused.status == 2
    assert "without confirmation: pass --yes" in refused.err
    assert len(refused.err.strip().splitlines()) == 1
    one = await cli("dead", "purge", dead[0].message_id, *cli_store.args, "--yes")
    assert one.status == 0 and "purged 1 dead messages" in one.out
    rest = await cli("dead", "purge", *cli_store.args, "--yes")
    assert "purged 3 dead messages" in rest.out
    assert "no dead messages" in (await cli("dead", "list", *cli_store.args)).out


async def test_export_then_import_is_idempotent_and_renames_the_file(
    cli: Any, cli_store: CliStore, queue: str, tmp_path: Path
) -> None:
    ids = await backlog(cli_store, 20, queue)
    await dead_messages(cli_store, 2)
    out = tmp_path / "backlog.jsonl"
    run = await cli("export", *cli_store.args, "-o", str(out))
    assert run.status == 0 and "exported 22 messages" in run.err
    exported = list(read_messages(out))
    assert {m.message_id for m in exported} >= set(ids)
    assert sum(m.dead for m in exported) == 2
    stdout = await cli("export", *cli_store.args, "--which", "live")
    assert len(stdout.out.splitlines()) == 20
    assert (await cli("export", *cli_store.args, "-o", str(out))).status == 1  # never overwrites

    copy = tmp_path / "again.jsonl"
    copy.write_bytes(out.read_bytes())
    first = await cli("import", str(out), *cli_store.args)
    assert first.status == 0, first.err
    assert "imported 22 messages" in first.out and "(0 new)" in first.out
    assert not out.exists() and (tmp_path / "backlog.jsonl.imported").exists()
    store = cli_store.open()
    try:
        await store.ack(ids[:5])
    finally:
        await store.close()
    second = await cli("import", str(copy), *cli_store.args)
    assert "(5 new)" in second.out and "the store holds 22" in second.out


async def test_export_and_import_carry_every_property(
    cli: Any, cli_store: CliStore, tmp_path: Path
) -> None:
    every = Properties(
        priority=9, correlation_id="c", reply_to="r", expiration="60000", type="t",
        app_id="a", user_id="guest", content_encoding="gzip", persistent=False,
        mandatory=False,
    )  # fmt: skip
    messages = [
        Message(
            message_id=f"p-{n}",
            body=b"{}",
            exchange="",
            routing_key="q",
            content_type="application/json",
            timestamp=time.time(),
            properties=properties,
        )
        for n, properties in enumerate([every, Properties(priority=0), None])
    ]
    store = cli_store.open()
    try:
        await store.put(messages)
        out = tmp_path / "props.jsonl"
        assert (await cli("export", *cli_store.args, "-o", str(out))).status == 0
        assert {m.message_id: m.properties for m in read_messages(out)} == {
            m.message_id: m.properties for m in messages
        }
        await store.ack([m.message_id for m in messages])
        run = await cli("import", str(out), *cli_store.args)
        assert run.status == 0, run.err
        for message in messages:
            got = await store.get(message.message_id)
            assert got is not None and got.properties == message.properties
    finally:
        await store.close()


async def test_import_validates_every_record_as_publish_would(
    cli: Any, cli_store: CliStore, tmp_path: Path
) -> None:
    good = Message(
        message_id="ok-1", body=b"{}", exchange="", routing_key="q",
        content_type="application/json", timestamp=time.time(),
    )  # fmt: skip
    path = tmp_path / "bad.jsonl"
    write_messages(path, [good])
    lines = path.read_text().splitlines()
    record = json.loads(lines[0])
    for field, value in (
        ("routing_key", "r" * 256),
        ("message_id", ""),
        ("headers", json.dumps({"$d": {"when": {"$x": 1}}})),
        ("body", "not base64!"),
        ("exchange", 5),
        ("properties", {"priority": 256}),
        ("properties", {"expiration": "-1"}),
        ("properties", {"colour": "red"}),
    ):
        bad = path.with_name(f"bad-{field}-{os.urandom(2).hex()}.jsonl")
        bad.write_text(lines[0] + "\n" + json.dumps({**record, field: value}) + "\n")
        run = await cli("import", str(bad), *cli_store.args)
        assert run.status == 2, (field, run.err)
        assert f"{bad}:2: bad record" in run.err
        assert bad.exists()
    store = cli_store.open()
    try:
        assert await store.count() == 0
    finally:
        await store.close()


async def test_bad_input_and_missing_services_fail_with_one_line(cli: Any, tmp_path: Path) -> None:
    missing = await cli("status", "--sqlite", str(tmp_path / "nope.db"))
    assert missing.status == 1
    assert missing.err.strip().count("\n") == 0 and "no SQLite store" in missing.err
    assert not (tmp_path / "nope.db").exists()
    bad_url = await cli("count", "--mongo", f"mongodb://ops:{SECRET}@127.0.0.1:99999/")
    assert bad_url.status == 2
    no_secrets(bad_url.text)
    path = tmp_path / "spill.db"
    path.write_bytes(b"not a database" * 100)
    corrupt = await cli("count", "--sqlite", str(path))
    assert corrupt.status == 1 and corrupt.err.strip().count("\n") == 0
    empty = tmp_path / "empty.db"
    empty.touch()
    no_broker = await cli("replay", "--sqlite", str(empty), "--amqp", BAD_AMQP, "--timeout", "2")
    assert no_broker.status == 1 and "broker unreachable" in no_broker.err
    no_secrets(no_broker.text)
    bad_amqp = await cli("replay", "--sqlite", str(empty), "--amqp", f"http://u:{SECRET}@h/")
    assert bad_amqp.status == 2
    no_secrets(bad_amqp.text)
    usage = await cli("status", "--sqlite", str(empty), "--amqp", BAD_AMQP, "--bogus")
    assert usage.status == 2
    no_secrets(usage.text)
    for seconds in ("0", "-1", "nan", "inf", "soon"):
        run = await cli("replay", "--sqlite", str(empty), "--stop-timeout", seconds)
        assert run.status == 2 and "not a positive number of seconds" in run.err, seconds
    assert (await cli("import", str(tmp_path / "none.jsonl"), "--sqlite", str(empty))).status == 1


# PyMongo's async driver leaks the socket of a connect it cancels (PYTHON-5867).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_an_unreachable_mongodb_fails_with_one_masked_line(cli: Any) -> None:
    mongo = f"mongodb://ops:{SECRET}@127.0.0.1:1/?serverSelectionTimeoutMS=300&timeoutMS=600"
    down = await cli("status", "--mongo", mongo)
    assert down.status == 1 and down.err.startswith("aioproducer: error: ")
    assert down.err.strip().count("\n") == 0
    no_secrets(down.text)
    gc.collect()  # reap the leaked socket here, where its warning is ignored


async def test_store_from_the_environment(
    cli: Any, cli_store: CliStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await dead_messages(cli_store, 1)
    if cli_store.path is not None:
        monkeypatch.setenv("AIOPRODUCER_SQLITE_PATH", str(cli_store.path))
        args = []
    else:
        monkeypatch.setenv("AIOPRODUCER_MONGO_URL", cli_store.url)
        args = ["--database", cli_store.database, "--lease-clock", "host"]
    run = await cli("count", *args)
    assert (run.status, run.out.strip()) == (0, "1")


async def exited(process: asyncio.subprocess.Process, within: float = 30) -> tuple[str, str]:
    """What the process printed once it exits; its threads' stacks if it does not."""
    try:
        out, err = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.send_signal(signal.SIGABRT)  # faulthandler prints where each thread is
        out, err = await process.communicate()
        raise AssertionError(f"no exit within {within}s:\n{out.decode()}\n{err.decode()}") from None
    return out.decode(), err.decode()


async def test_sigterm_mid_replay_loses_nothing_and_releases_leases(
    cli_store: CliStore, queue: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    ids = await backlog(cli_store, 3000, queue)
    command = [sys.executable, "-m", "aioproducer", "replay", *cli_store.args, "--no-bar"]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "faulthandler", *command[1:], "--batch", "1", "-v",
        "--amqp", AMQP_URL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    store = cli_store.open()
    try:

        async def some_replayed() -> bool:
            return await store.count() < len(ids) - 50

        await wait_until(some_replayed, timeout=60, what="the worker to replay some messages")
        process.send_signal(signal.SIGTERM)
        out, err = await exited(process)
        assert process.returncode == 128 + signal.SIGTERM, err
        assert "stopped by SIGTERM" in out
        left = await store.backlog()
        assert left.leased == 0 and left.total > 0  # stopped mid-way, every lease handed back
        stored = {m.message_id async for m in store.scan()}
    finally:
        await store.close()
    delivered = {r.message_id for r in await drain(amqp, queue)}
    assert delivered | stored == set(ids)  # nothing lost
    rest = await asyncio.create_subprocess_exec(
        *command, "--amqp", AMQP_URL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await exited(rest, 60)
    assert rest.returncode == 0, err
    await wait_for_ids(amqp, queue, stored, timeout=30)


@dataclass
class Stuck:
    """A replay worker whose store froze mid-way through a backlog."""

    server: NxServer
    database: str
    store: Store
    ids: list[str]
    process: asyncio.subprocess.Process

    async def thaw_and_finish(self, queue: str, amqp: aio_pika.abc.AbstractConnection) -> None:
        """Thaw the store, let a second worker replay what is left (once the leases of
        the first expire), and check that every message reached the queue."""
        self.server.thaw()
        rest = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aioproducer", "replay", "--mongo", self.server.url,
            "--database", self.database, "--lease-clock", "host", "--no-bar",
            "--amqp", AMQP_URL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await exited(rest, 60)
        assert rest.returncode == 0, err
        assert await self.store.count() == 0
        await wait_for_ids(amqp, queue, set(self.ids), timeout=30)


@pytest.fixture
async def stuck(tmp_path: Path, queue: str) -> AsyncIterator[Callable[..., Awaitable[Stuck]]]:
    """Starts a replay worker on a MongoDB store of its own (nx-27017), lets it replay
    some messages, then freezes the store (SIGSTOP): no store call returns after that."""
    server = NxServer(tmp_path / "nx")
    database = f"stuck_{os.urandom(4).hex()}"
    store = MongoStore.from_url(server.url, database, "spill", clock=time.time)
    processes: list[asyncio.subprocess.Process] = []

    async def start(*options: str) -> Stuck:
        server.start()
        ids = await make_backlog(store, 200, routing_keys=[queue])
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-X", "faulthandler", "-m", "aioproducer", "replay",
            "--mongo", server.url, "--database", database, "--lease-clock", "host",
            "--no-bar", "--batch", "1", "--lease", "11", "--amqp", AMQP_URL, "-v", *options,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        processes.append(process)

        async def some_replayed() -> bool:
            if process.returncode is not None:
                _, err = await exited(process)
                raise AssertionError(f"the worker exited with {process.returncode}:\n{err}")
            return await store.count() < len(ids) - 20

        await wait_until(some_replayed, timeout=60, what="the worker to replay some messages")
        server.freeze()
        return Stuck(server, database, store, ids, process)

    yield start
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.communicate()
    server.kill()
    await store.close()


async def test_a_stop_stuck_on_a_frozen_store_ends_at_its_deadline_and_loses_nothing(
    stuck: Callable[..., Awaitable[Stuck]], queue: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    worker = await stuck("--stop-timeout", "1")
    worker.process.send_signal(signal.SIGTERM)
    out, err = await exited(worker.process)
    assert worker.process.returncode == 1, err
    assert "did not stop within 1s; exiting with" in err
    assert "Still running:" in err and "aioproducer._cli:" in err  # where each task is
    assert "stopped by" not in out
    await worker.thaw_and_finish(queue, amqp)


async def test_a_second_signal_while_stopping_exits_at_once_and_loses_nothing(
    stuck: Callable[..., Awaitable[Stuck]], queue: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    worker = await stuck("--stop-timeout", "600")
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.stderr is not None
    seen = b""
    while b"SIGTERM: stopping" not in seen:
        line = await asyncio.wait_for(worker.process.stderr.readline(), 30)
        assert line, f"exited before it logged its stop:\n{seen.decode()}"
        seen += line
    # The stop cannot end while the store is frozen (each store call waits 5 s at least).
    worker.process.send_signal(signal.SIGINT)
    out, err = await exited(worker.process)
    assert worker.process.returncode == 1, err
    assert "a second signal (SIGINT) while stopping; exiting with" in err
    assert "stopped by" not in out
    await worker.thaw_and_finish(queue, amqp)


async def test_replay_follow_keeps_running_and_delivers_what_arrives_later(
    cli_store: CliStore, queue: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aioproducer", "replay", *cli_store.args, "--no-bar",
        "--follow", "--amqp", AMQP_URL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        ids = await backlog(cli_store, 50, queue)  # stored after the worker started
        await wait_for_ids(amqp, queue, set(ids), timeout=60)
        assert process.returncode is None  # an empty store does not end it
        process.send_signal(signal.SIGINT)
        out, err = await exited(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()
    assert process.returncode == 128 + signal.SIGINT, err
    assert "stopped by SIGINT: 50 replayed" in out
