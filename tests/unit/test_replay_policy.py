"""The replayer settles each claimed message from its own result, through a scripted link.

The link stands in for the broker: each publish's outcome is decided by a rule
of the test, and the messages it confirmed are recorded. The store is a real
SQLite file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from aioproducer import Backoff, Message, Producer, SQLiteStore
from aioproducer._context import Context
from aioproducer._link import ACKED, Link, OnResult, Outcome, Result, Sent, send_each
from tests.waiting import wait_until

Rule = Callable[[Message, list[Message]], Result]


class ScriptedLink:
    """A link whose publishes end as ``rule`` says, given the publishes in flight with it."""

    connected = True
    blocked = False
    address: str | None = "scripted://broker/"
    connections = 1

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.confirmed: Counter[str] = Counter()
        self.published: Counter[str] = Counter()
        self._in_flight: list[Message] = []

    def start(self) -> None:
        pass

    async def channel(self, which: str) -> Any:
        return which

    async def publish(
        self, channel: Any, message: Message, *, mandatory: bool, persistent: bool, timeout: float
    ) -> Result:
        self.published[message.message_id] += 1
        self._in_flight.append(message)
        # Publishes started together share their channel's fate, as on a real channel.
        await asyncio.sleep(0)
        result = self.rule(message, list(self._in_flight))
        await asyncio.sleep(0)
        self._in_flight.remove(message)
        if result.outcome is Outcome.ACKED:
            self.confirmed[message.message_id] += 1
        return result

    def send(
        self,
        channel: Any,
        messages: Sequence[Message],
        *,
        mandatory: bool,
        persistent: bool,
        timeout: float,
        on_result: OnResult,
    ) -> Sent:
        return send_each(
            self,
            channel,
            messages,
            mandatory=mandatory,
            persistent=persistent,
            timeout=timeout,
            on_result=on_result,
        )

    async def close(self, timeout: float = 0.0) -> None:
        pass


class ScriptedProducer(Producer):
    def __init__(self, link: ScriptedLink, **kwargs: Any) -> None:
        super().__init__("amqp://guest:guest@127.0.0.1:1/", **kwargs)
        self.link = link

    def _make_link(self, context: Context) -> Link:
        return self.link


def stored(n: int, **fields: Any) -> Message:
    return Message(
        message_id=f"m{n}",
        body=b"x",
        exchange="",
        routing_key="q",
        content_type="application/octet-stream",
        timestamp=1_000.0 + n,
        due_at=0.0,
        **fields,
    )


def due_times(path: Path) -> dict[str, float]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return dict(db.execute("SELECT message_id, due_at FROM messages"))


def attempts(path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return dict(db.execute("SELECT message_id, attempts FROM messages"))


async def replaying(
    link: ScriptedLink, tmp_path: Path, messages: list[Message], **kwargs: Any
) -> Producer:
    store = SQLiteStore(tmp_path / "s.db")
    await store.put(messages)
    await store.close()
    options: dict[str, Any] = {
        "replay_interval": 0.05,
        "store_backoff": Backoff(base=0.01, cap=0.05),
        "fallback_dir": tmp_path,
        **kwargs,
    }
    producer = ScriptedProducer(link, store=SQLiteStore(tmp_path / "s.db"), **options)
    await producer.start()
    return producer


async def test_after_a_confirm_timeout_replay_waits_before_publishing_again(tmp_path: Path) -> None:
    link = ScriptedLink(lambda m, _: Result(Outcome.TIMEOUT, "no confirm"))
    producer = await replaying(
        link, tmp_path, [stored(n) for n in range(10)], retry_backoff=Backoff(base=30, cap=60)
    )
    await wait_until(lambda: len(link.published) == 10, what="one replay of each")
    await wait_until(lambda: producer.stats().retried >= 10, what="their timeouts settled")
    await producer.close(timeout=1)
    assert set(link.published.values()) == {1}
    # Each is due again only after the pause, and a timeout is no attempt of its own.
    later = time.time() + 10
    assert all(due >= later for due in due_times(tmp_path / "s.db").values())
    assert set(attempts(tmp_path / "s.db").values()) == {0}


async def test_an_unnamed_channel_error_holds_back_only_its_culprit(tmp_path: Path) -> None:
    def rule(message: Message, in_flight: list[Message]) -> Result:
        if any(m.message_id == "m3" for m in in_flight):
            return Result(Outcome.CHANNEL_ERROR, "PRECONDITION_FAILED", 406)
        return ACKED

    link = ScriptedLink(rule)
    producer = await replaying(
        link, tmp_path, [stored(n) for n in range(8)], retry_backoff=Backoff(base=60, cap=60)
    )
    good = {f"m{n}" for n in range(8)} - {"m3"}
    await wait_until(lambda: set(link.confirmed) == good, what="every other message confirmed")
    await producer.close(timeout=1)
    assert set(link.confirmed.values()) == {1}
    assert attempts(tmp_path / "s.db") == {"m3": 1}
    assert due_times(tmp_path / "s.db")["m3"] >= time.time() + 20


async def test_a_named_missing_exchange_holds_back_only_its_messages(tmp_path: Path) -> None:
    def rule(message: Message, in_flight: list[Message]) -> Result:
        if any(m.exchange == "gone" for m in in_flight):
            return Result(Outcome.CHANNEL_ERROR, "NOT_FOUND", 404, missing_exchange="gone")
        return ACKED

    link = ScriptedLink(rule)
    messages = [stored(n) for n in range(6)]
    messages[1].exchange = messages[4].exchange = "gone"
    producer = await replaying(link, tmp_path, messages, retry_backoff=Backoff(base=60, cap=60))
    await wait_until(
        lambda: set(link.confirmed) == {"m0", "m2", "m3", "m5"}, what="the others confirmed"
    )
    await producer.close(timeout=1)
    assert attempts(tmp_path / "s.db") == {"m1": 1, "m4": 1}


async def test_a_message_that_fails_for_itself_does_not_stall_its_batch(tmp_path: Path) -> None:
    def rule(message: Message, in_flight: list[Message]) -> Result:
        if message.message_id in ("m2", "m4"):
            return Result(Outcome.FAILED, "InvalidMessage while publishing")
        return ACKED

    link = ScriptedLink(rule)
    producer = await replaying(
        link, tmp_path, [stored(n) for n in range(6)], retry_backoff=Backoff(base=60, cap=60)
    )
    await wait_until(lambda: len(link.confirmed) == 4, what="the good ones confirmed")
    await producer.close(timeout=1)
    assert set(link.confirmed) == {"m0", "m1", "m3", "m5"} and producer.stats().failed == 2
    assert attempts(tmp_path / "s.db") == {"m2": 1, "m4": 1}


class ClaimLog(SQLiteStore):
    """A SQLite store that records each claim that found messages: its limit and ids."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.claims: list[tuple[int, list[str]]] = []
        self.empty_claims = 0

    async def claim(self, owner: str, *, limit: int, lease: float) -> list[Message]:
        claimed = await super().claim(owner, limit=limit, lease=lease)
        if claimed:
            self.claims.append((limit, [m.message_id for m in claimed]))
        else:
            self.empty_claims += 1
        return claimed


async def test_after_an_unnamed_channel_error_replay_goes_one_at_a_time_for_a_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aioproducer.replay")

    def rule(message: Message, in_flight: list[Message]) -> Result:
        if any(m.message_id == "m3" for m in in_flight):
            return Result(Outcome.CHANNEL_ERROR, "PRECONDITION_FAILED", 406)
        return ACKED

    link = ScriptedLink(rule)
    store = ClaimLog(tmp_path / "s.db")
    producer = ScriptedProducer(
        link,
        store=store,
        replay_batch=4,
        replay_interval=0.05,
        retry_backoff=Backoff(base=60, cap=60),
        fallback_dir=tmp_path,
    )
    await producer.start()
    # Stored by another producer sharing the file, once this one found the store empty.
    await wait_until(lambda: store.empty_claims > 0, what="a claim of an empty store")
    seed = SQLiteStore(tmp_path / "s.db")
    await seed.put([stored(n) for n in range(8)])
    await seed.close()
    good = {f"m{n}" for n in range(8)} - {"m3"}
    await wait_until(lambda: set(link.confirmed) == good, what="every other message confirmed")
    await producer.close(timeout=1)
    # The batch of four broke its channel with no culprit named: as many messages as it
    # held go alone, one for each that went through (those due since the start first),
    # and a second batch with the culprit in it starts the count again. The culprit,
    # alone, is held back and does not count; then batches of four again, empty here.
    assert store.claims == [
        (4, ["m0", "m1", "m2", "m3"]),
        (1, ["m4"]),
        (1, ["m5"]),
        (1, ["m6"]),
        (1, ["m7"]),
        (4, ["m0", "m1", "m2", "m3"]),
        (1, ["m0"]),
        (1, ["m1"]),
        (1, ["m2"]),
        (1, ["m3"]),
    ]
    assert set(link.confirmed.values()) == {1}
    assert attempts(tmp_path / "s.db") == {"m3": 1}
    # Confirmed ids are logged by batch; a batch with none confirmed logs no such line.
    prefix = f"producer {producer.owner}: replayed and confirmed "
    logged = [
        message_id
        for r in caplog.records
        if r.getMessage().startswith(prefix)
        for message_id in r.getMessage().removeprefix(prefix).split(" ")
    ]
    assert sorted(logged) == sorted(good)


async def test_a_batch_with_a_missing_confirm_waits_out_the_pause_whole(tmp_path: Path) -> None:
    # m0's confirm never comes; the others are caught by a channel error naming no one.
    def rule(message: Message, in_flight: list[Message]) -> Result:
        if message.message_id == "m0":
            return Result(Outcome.TIMEOUT, "no confirm")
        if any(m.message_id == "m3" for m in in_flight):
            return Result(Outcome.CHANNEL_ERROR, "PRECONDITION_FAILED", 406)
        return ACKED

    link = ScriptedLink(rule)
    producer = await replaying(
        link,
        tmp_path,
        [stored(n) for n in range(4)],
        replay_batch=4,
        retry_backoff=Backoff(base=60, cap=60),
    )
    await wait_until(
        lambda: producer.stats().retried == 1 and producer.stats().channel_errors == 3,
        what="the batch settled",
    )
    await producer.close(timeout=1)
    # Every message of the batch, those due again at once after the channel error too,
    # waits for the pause: the slow broker is not sent any of them again meanwhile.
    later = time.time() + 20
    assert set(link.published.values()) == {1}
    assert all(due >= later for due in due_times(tmp_path / "s.db").values())
