"""The order of broker addresses: shuffled once, then in order, one backoff per full round."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import UnderlayConnection
from yarl import URL

from aioproducer import Backoff, Producer, SQLiteStore
from aioproducer._config import check_urls, split_urls
from aioproducer._connection import AmqpLink, _connection_class
from aioproducer._failover import Rotation
from tests.fakes import VirtualClockLoop
from tests.waiting import wait_until

A, B, C = "amqp://a/", "amqp://b/", "amqp://c/"
#: Delays without jitter: round n waits 1, 2, 4, 8… seconds.
STEPS = Backoff(base=1.0, cap=100.0, jitter=0.0)


def keep_order(addresses: list[str]) -> None:
    """A shuffle that leaves the list as given."""


def test_a_failure_moves_on_at_once_and_a_full_round_backs_off() -> None:
    rotation = Rotation([A, B, C], STEPS, shuffle=keep_order)
    tried, delays = [], []
    for _ in range(9):
        tried.append(rotation.address)
        delays.append(rotation.failed())
    assert tried == [A, B, C] * 3
    assert delays == [0, 0, 1, 0, 0, 2, 0, 0, 4]


def test_a_connection_starts_the_rounds_afresh_where_it_connected() -> None:
    rotation = Rotation([A, B, C], STEPS, shuffle=keep_order)
    assert [rotation.failed() for _ in range(4)] == [0, 0, 1, 0]
    assert rotation.address == B
    rotation.connected()
    assert rotation.address == B
    assert rotation.failures == 0
    assert [rotation.failed() for _ in range(3)] == [0, 0, 1]


def test_a_lost_connection_moves_to_the_next_address_without_waiting() -> None:
    rotation = Rotation([A, B, C], STEPS, shuffle=keep_order)
    rotation.connected()
    rotation.lost()
    assert rotation.address == B
    assert rotation.after == C
    rotation.connected()
    rotation.lost()
    rotation.lost()
    assert rotation.address == A


def test_one_address_backs_off_after_every_failure() -> None:
    rotation = Rotation([A], STEPS)
    assert [rotation.failed() for _ in range(4)] == [1, 2, 4, 8]
    rotation.lost()
    assert rotation.address == A


def test_the_shuffle_spreads_producers_over_the_nodes() -> None:
    firsts = {
        Rotation([A, B, C], STEPS, shuffle=random.Random(seed).shuffle).address
        for seed in range(30)
    }
    assert firsts == {A, B, C}


def test_after_the_shuffle_the_order_is_kept_for_good() -> None:
    rotation = Rotation([A, B, C], STEPS, shuffle=random.Random(7).shuffle)
    order = list(rotation.addresses)
    assert sorted(order) == [A, B, C]
    tried = []
    for _ in range(7):
        tried.append(rotation.address)
        rotation.failed()
    assert tried == (order * 3)[:7]


def test_no_address_is_refused() -> None:
    with pytest.raises(ValueError) as raised:
        Rotation([], STEPS)
    assert str(raised.value) == "at least one broker address is needed"


# -- the addresses as the producer takes them ---------------------------------------


def test_commas_separate_urls_but_not_inside_a_password() -> None:
    assert split_urls(" amqp://a/ , amqps://u:p,w@b/,amqp://c/ ") == [A, "amqps://u:p,w@b/", C]
    assert check_urls([A, B]) == (A, B)
    assert check_urls(A) == (A,)


@pytest.mark.parametrize(
    ("urls", "fragment"),
    [
        ("", "no broker URL"),
        ([], "no broker URL"),
        ([A, A], "given twice"),
        ([A, "amqp://b/?heartbeat=5"], "same query options"),
        ("amqp://h1,h2/", "several hosts in one URL"),
        ("amqp://u:secret@h1:5672,h2:5672/", "malformed"),
        ([A, "http://b/"], "amqp://"),
        (b"amqp://a/", "not bytes"),
        (5, "not int"),
    ],
)
def test_bad_address_lists_are_refused_without_the_password(urls: Any, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as caught:
        check_urls(urls)
    assert "secret" not in str(caught.value)


# -- aio-pika's reconnection loop, driven through what it reads per attempt ---------


class FakeAmqp:
    """Stands in for an aiormq connection: open until closed or dropped."""

    def __init__(self) -> None:
        self.closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.is_closed = False
        #: The close ends the connection but fails (a reset while closing).
        self.close_fails = False

    async def ready(self) -> None:
        pass

    async def close(self, exc: object = None) -> None:
        self.is_closed = True
        if self.close_fails:
            if not self.closing.done():
                self.closing.set_result(None)
            raise ConnectionResetError("reset while closing")
        if not self.closing.done():
            self.closing.set_result(None)

    def drop(self) -> None:
        """The broker's side goes away: a connection reset."""
        self.is_closed = True
        self.closing.set_exception(ConnectionResetError("reset by peer"))


class Attempts:
    """Stands in for aio-pika's socket work: an attempt fails unless its URL is up."""

    def __init__(self) -> None:
        self.up: set[str] = set()
        self.tried: list[str] = []
        self.current: FakeAmqp | None = None

    async def __call__(self, url: URL, timeout: object = None, **kwargs: Any) -> FakeAmqp:
        self.tried.append(str(url))
        if str(url) not in self.up:
            raise ConnectionRefusedError(f"{url} refuses")
        self.current = FakeAmqp()
        return self.current


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> Iterator[Attempts]:
    fake = Attempts()

    async def make_connection(cls: Any, /, url: URL, timeout: object = None, **kwargs: Any) -> Any:
        return await fake(url, timeout, **kwargs)

    monkeypatch.setattr(UnderlayConnection, "make_connection", classmethod(make_connection))
    yield fake


QUICK = Backoff(base=0.001, cap=0.002)


async def test_aio_pika_aims_every_attempt_at_the_next_address(attempts: Attempts) -> None:
    attempts.up = {C}
    link = AmqpLink([A, B, C], backoff=QUICK, shuffle=keep_order)
    connection = await aio_pika.connect_robust(
        A, connection_class=_connection_class(QUICK, link._rotation, link), fail_fast=False
    )
    try:
        assert attempts.tried == [A, B, C]
        assert str(connection.url) == C
        assert link._shown == C
    finally:
        await connection.close()


async def test_rounds_repeat_until_a_node_comes_up(attempts: Attempts) -> None:
    link = AmqpLink([A, B], backoff=QUICK, shuffle=keep_order)
    connection = _connection_class(QUICK, link._rotation, link)(URL(A), fail_fast=False)
    opening = asyncio.create_task(connection.connect())
    try:
        await wait_until(lambda: len(attempts.tried) >= 5, timeout=10, what="five attempts")
        attempts.up = {B}
        await asyncio.wait_for(opening, 10)
        assert attempts.tried[:5] == [A, B, A, B, A]
        assert attempts.tried[-1] == B
    finally:
        await connection.close()


async def test_a_loss_sends_the_next_attempt_to_the_next_node(attempts: Attempts) -> None:
    attempts.up = {A, B, C}
    link = AmqpLink([A, B, C], backoff=QUICK, shuffle=keep_order)
    connection = _connection_class(QUICK, link._rotation, link)(URL(A), fail_fast=False)
    try:
        await connection.connect()
        assert attempts.tried == [A]
        first = attempts.current
        assert first is not None
        first.drop()
        await wait_until(
            lambda: attempts.tried == [A, B] and connection.connected.is_set(),
            timeout=10,
            what="a connection to B",
        )
        assert str(connection.url) == B
    finally:
        await connection.close()


async def test_after_a_connection_a_loss_waits_the_first_delay_of_the_backoff(
    attempts: Attempts,
) -> None:
    attempts.up = {A}
    policy = Backoff(base=0.001, factor=2.0, cap=0.004, jitter=0)
    link = AmqpLink([A], backoff=policy, shuffle=keep_order)
    connection = _connection_class(policy, link._rotation, link)(URL(A), fail_fast=False)
    try:
        await connection.connect()
        # What aio-pika sleeps once this connection is lost: the first delay, not a later one.
        assert connection.reconnect_interval == 0.001
    finally:
        await connection.close()


def test_the_producer_checks_its_addresses_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="given twice"):
        Producer([A, A], store=SQLiteStore(tmp_path / "s.db"), fallback_dir=tmp_path)
    producer = Producer(f"{A},{B}", store=SQLiteStore(tmp_path / "s.db"), fallback_dir=tmp_path)
    assert producer.stats().broker is None


async def test_aio_pika_names_the_address_that_failed(
    attempts: Attempts, caplog: pytest.LogCaptureFixture
) -> None:
    attempts.up = {"amqp://u:pw@c/"}
    # A password is masked; an address without one is named as it is.
    addresses = ["amqp://u:pw@a/", "amqp://b/", "amqp://u:pw@c/"]
    link = AmqpLink(addresses, backoff=QUICK, shuffle=keep_order)
    with caplog.at_level(logging.WARNING, logger="aio_pika"):
        connection = await aio_pika.connect_robust(
            addresses[0],
            connection_class=_connection_class(QUICK, link._rotation, link),
            fail_fast=False,
        )
    try:
        # As written when logged (a record formatted later names the connection as it is
        # by then).
        failed = [line for line in caplog.text.splitlines() if "Connection attempt" in line]
        assert len(failed) == 2
        assert '"amqp://u:******@a/" failed' in failed[0] and "amqp://u:pw@a/ refuses" in failed[0]
        assert '"amqp://b/" failed' in failed[1] and "amqp://b/ refuses" in failed[1]
    finally:
        await connection.close()


async def test_an_opening_that_fails_is_logged_dropped_and_tried_again_after_the_backoff(
    attempts: Attempts, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "amqp://u:pw@a/"
    attempts.up = {url}
    errors: list[str] = []
    link = AmqpLink(url, backoff=Backoff(base=0.1, cap=0.4, jitter=0), on_error=errors.append)
    opened: list[FakeAmqp] = []
    asked: list[tuple[str, FakeAmqp]] = []

    async def failing_channel(connection: Any, which: str) -> object:
        assert attempts.current is not None
        asked.append((which, attempts.current))
        if which == "live":
            return object()  # the live channel opens; the replay channel fails
        # The first connection's close fails too: the link still tries again.
        attempts.current.close_fails = not opened
        opened.append(attempts.current)
        if len(opened) == 4:
            await asyncio.Event().wait()  # the fourth waits until the link closes
        raise LookupError(f"no {which} channel")

    monkeypatch.setattr(link, "_new_channel", failing_channel)
    with caplog.at_level(logging.INFO, logger="aioproducer.connection"):
        link.start()
        await wait_until(lambda: len(opened) == 4, timeout=10, what="a fourth opening")
        await link.close(timeout=2.0)
    # Closing stops the opening under way: no task of the link is left.
    assert [t for t in asyncio.all_tasks() if t.get_name() == "aioproducer-connect"] == []
    # Each failed opening: its connection closed (not told as lost), the error told with
    # its traceback, and the next one after the backoff's next delay.
    assert [amqp.is_closed for amqp in opened] == [True] * 4
    # A channel of a dropped connection is not kept: each opening asks for both again.
    assert asked == [(which, amqp) for amqp in opened for which in ("live", "replay")]
    lines = [r.getMessage() for r in caplog.records]
    connected = "connected to amqp://u:***@a/"
    assert [line.split("\n")[0] for line in lines] == [
        connected,
        "connecting to amqp://u:***@a/ failed; retrying in 0.1s",
        connected,
        "connecting to amqp://u:***@a/ failed; retrying in 0.2s",
        connected,
        "connecting to amqp://u:***@a/ failed; retrying in 0.4s",
        connected,
        "connection to amqp://u:***@a/ closed",
    ]
    lines = [line for line in lines if "failed; retrying" in line]
    assert all("Traceback" in line and "LookupError: no replay channel" in line for line in lines)
    assert errors == ["connecting to amqp://u:***@a/ failed: LookupError('no replay channel')"] * 3


async def test_a_close_while_no_address_answers_stops_the_attempts(attempts: Attempts) -> None:
    link = AmqpLink([A, B], backoff=QUICK, shuffle=keep_order)
    link.start()
    await wait_until(lambda: len(attempts.tried) >= 4, timeout=10, what="four attempts")
    assert [t.get_name() for t in asyncio.all_tasks() if not t.done()].count(
        "aioproducer-connect"
    ) == 1
    await link.close(timeout=2.0)
    assert [t for t in asyncio.all_tasks() if t.get_name() == "aioproducer-connect"] == []


class RefusedRestore:
    """A channel aio-pika restores on each new connection; on one it fails to reopen."""

    def __init__(self, fail_on: int) -> None:
        self.fail_on = fail_on
        self.restores = 0

    async def restore(self) -> None:
        self.restores += 1
        if self.restores == self.fail_on:
            raise ConnectionResetError("the broker refused the channel")


async def test_a_new_connection_whose_channels_cannot_be_restored_counts_as_failed_not_lost(
    attempts: Attempts,
) -> None:
    attempts.up = {A, B, C}
    link = AmqpLink([A, B, C], backoff=QUICK, shuffle=keep_order)
    connection = _connection_class(QUICK, link._rotation, link)(URL(A), fail_fast=False)
    channel = RefusedRestore(fail_on=1)
    try:
        await connection.connect()
        connection._RobustConnection__channels.add(channel)  # type: ignore[attr-defined]
        first = attempts.current
        assert first is not None
        first.drop()
        await wait_until(
            lambda: len(attempts.tried) == 3 and connection.connected.is_set(),
            timeout=10,
            what="a connection after the failed restore",
        )
        # Lost at A, so B; B's restore failed, so C: one step each, none skipped.
        assert attempts.tried == [A, B, C]
        assert str(connection.url) == C
    finally:
        await connection.close()


def test_a_channel_that_cannot_open_is_tried_again_after_each_delay_of_the_backoff(
    attempts: Attempts, loop: VirtualClockLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts.up = {A}
    asked: list[tuple[str, float]] = []

    link = loop.call(lambda: AmqpLink(A, backoff=Backoff(base=0.1, cap=1.0, jitter=0)))

    async def channel(connection: Any, which: str) -> object | None:
        asked.append((which, loop.time()))
        # The live channel fails to open three times (each failure logged by the real
        # _new_channel); then both open.
        return None if len(asked) <= 3 else object()

    monkeypatch.setattr(link, "_new_channel", channel)

    loop.call(link.start)
    loop.drive(within=5.0)
    assert [which for which, _ in asked] == ["live"] * 4 + ["replay"]
    times = [at for _, at in asked]
    assert [round(b - a, 3) for a, b in itertools.pairwise(times)] == [0.1, 0.2, 0.4, 0.0]
    # All on the one connection: a channel that fails to open is not a failed connection.
    assert attempts.tried == [A] and link.connections == 1
    assert link._channels.keys() == {"live", "replay"}
    loop.run(link.close(timeout=1.0), within=5.0)
