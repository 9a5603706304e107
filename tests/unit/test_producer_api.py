"""The Producer's surface: stats() before start, flush(), error texts, defaults, and every
argument of publish_nowait() and publish_many() carried through, with and without
middleware. The broker and the store are in-process fakes on a virtual clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import re
import socket
from pathlib import Path
from typing import Any, cast

import pytest

from aioproducer import (
    Backoff,
    BodyNotSerializable,
    InvalidMessage,
    Outgoing,
    Producer,
    ProducerClosed,
    ProducerState,
    ProducerStats,
    Settlement,
    SQLiteStore,
)
from aioproducer._config import Settings
from aioproducer._context import Context
from aioproducer._fallback import read_messages
from aioproducer._link import Link
from aioproducer._live import LivePublisher
from aioproducer._message import Message, Properties, State
from aioproducer._outgoing import Finish
from aioproducer._replay import Replayer
from aioproducer._spill import Spiller
from aioproducer._stores._base import Store
from tests.fakes import (
    FakeBroker,
    FakeLink,
    FakeLinkProducer,
    FakeStore,
    Mode,
    StoreFault,
    VirtualClockLoop,
)
from tests.unit.test_promises import NOWHERE, Rig

#: Every argument publish() takes but the body, each set to a value that is not its default.
EVERY_ARGUMENT: dict[str, Any] = {
    "routing_key": "orders",
    "exchange": "shop",
    "headers": {"tenant": "acme"},
    "message_id": "m-1",
    "content_type": "text/x-order",
    "priority": 7,
    "correlation_id": "c-1",
    "reply_to": "replies",
    "expiration": 60_000,
    "type": "order.placed",
    "app_id": "shop-web",
    "user_id": "guest",
    "content_encoding": "gzip",
    "persistent": False,
    "mandatory": False,
}
#: The properties EVERY_ARGUMENT gives a message.
EVERY_PROPERTY = Properties(
    priority=7,
    correlation_id="c-1",
    reply_to="replies",
    expiration="60000",
    type="order.placed",
    app_id="shop-web",
    user_id="guest",
    content_encoding="gzip",
    persistent=False,
    mandatory=False,
)
SERIALIZER_SHAPE = "the serializer must return (bytes, content_type str)"


def unstarted(loop: VirtualClockLoop, tmp_path: Path) -> FakeLinkProducer:
    producer = FakeLinkProducer(NOWHERE, store=FakeStore(loop.wall), fallback_dir=tmp_path)
    producer.broker = FakeBroker()
    return producer


def delivered(rig: Rig) -> dict[str, Message]:
    return {d.message_id: d.message for d in rig.broker.deliveries}


def assert_carries_every_argument(message: Message, body: bytes) -> None:
    assert message.body == body
    assert (message.exchange, message.routing_key) == ("shop", "orders")
    assert message.headers == {"tenant": "acme"}
    assert message.content_type == "text/x-order"
    assert message.properties == EVERY_PROPERTY


# -- stats() and flush() -------------------------------------------------------------


def test_stats_before_start_and_after_a_close_without_start_are_all_zero(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    producer = unstarted(loop, tmp_path)
    zero = ProducerStats(
        accepted=0,
        confirmed=0,
        spilled=0,
        replayed=0,
        returned=0,
        nacked=0,
        channel_errors=0,
        failed=0,
        retried=0,
        exported=0,
        unstorable=0,
        dead=0,
        buffered=0,
        buffered_bytes=0,
        in_flight=0,
        held=0,
        connected=False,
        broker=None,
        blocked=False,
        store_ok=True,
        store_errors=0,
        connections=0,
        state=ProducerState.NEW,
        last_error=None,
    )
    assert producer.stats() == zero
    loop.run(producer.close())
    assert producer.stats() == dataclasses.replace(zero, state=ProducerState.CLOSED)


def test_stats_tell_the_connection_its_address_and_a_block(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path)
    loop.drive(within=0.1)
    stats = rig.stats
    assert (stats.connected, stats.broker, stats.blocked, stats.connections) == (
        True,
        "fake://broker/",
        False,
        1,
    )
    assert stats.state is ProducerState.RUNNING
    rig.broker.set_blocked(True)
    assert (rig.stats.connected, rig.stats.blocked) == (True, True)
    rig.broker.set_blocked(False)
    rig.broker.set_down(took=False)
    stats = rig.stats
    assert (stats.connected, stats.broker, stats.blocked) == (False, None, False)
    rig.close()


def test_buffered_bytes_count_the_headers_as_the_wire_carries_them(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path, spill_after=3600.0)
    rig.broker.set_down(took=False)
    rig.publish(b"body", headers={"tenant": "acme"})
    rig.publish(b"bare")
    # The field table: its length (4 bytes), the key (1 + 6), "S", the value (4 + 4).
    assert rig.stats.buffered_bytes == len(b"body") + 20 + len(b"bare")
    rig.broker.set_up()
    loop.drive(within=1.0)
    assert (rig.stats.buffered, rig.stats.buffered_bytes) == (0, 0)
    assert rig.broker.deliveries[0].message.headers == {"tenant": "acme"}
    rig.close()


@pytest.mark.parametrize(
    ("timeout", "drain"),
    [(None, 8.0), (1.0, 0.5), (2.0, 1.0), (30.0, 28.0)],
    ids=["default", "one", "two", "thirty"],
)
def test_close_gives_the_broker_all_but_the_last_min_half_or_two_seconds(
    loop: VirtualClockLoop, tmp_path: Path, timeout: float | None, drain: float
) -> None:
    rig = Rig(loop, tmp_path, spill_after=3600.0)
    rig.broker.set_down(took=False)
    message_id = rig.publish()
    start = loop.time()
    closing = rig.producer.close() if timeout is None else rig.producer.close(timeout)
    loop.run(closing, within=60.0)
    assert loop.time() - start == pytest.approx(drain)
    assert message_id in rig.store.records
    assert rig.stats.state is ProducerState.CLOSED


def test_flush_before_start_has_nothing_to_wait_for(loop: VirtualClockLoop, tmp_path: Path) -> None:
    producer = unstarted(loop, tmp_path)
    assert loop.run(producer.flush(timeout=0.0)) is True
    loop.run(producer.close())


def test_flush_is_true_once_all_is_confirmed_and_false_after_its_timeout(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path, spill_after=3600.0)
    rig.burst(3)
    assert loop.run(rig.producer.flush(timeout=1.0), within=1.0) is True
    assert rig.stats.confirmed == 3
    rig.broker.set_down(took=False)
    rig.burst(2)
    start = loop.time()
    assert loop.run(rig.producer.flush(timeout=2.5), within=10.0) is False
    assert loop.time() - start == pytest.approx(2.5)
    # The default timeout is five seconds.
    start = loop.time()
    assert loop.run(rig.producer.flush(), within=10.0) is False
    assert loop.time() - start == pytest.approx(5.0)
    assert rig.stats.buffered == 2
    rig.close()


# -- error texts ---------------------------------------------------------------------


def test_a_producer_not_running_refuses_with_its_state_in_the_text(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    producer = unstarted(loop, tmp_path)
    with pytest.raises(ProducerClosed, match=r"^producer is new$"):
        producer.publish_nowait(b"x")
    with pytest.raises(ProducerClosed, match=r"^producer is new$"):
        loop.run(producer.publish_many([b"x"]))
    with pytest.raises(ProducerClosed, match=r"^producer is new$"):
        producer.settled("any")
    loop.run(producer.close())

    rig = Rig(loop, tmp_path)
    rig.close()
    with pytest.raises(ProducerClosed, match=r"^producer is closed$"):
        rig.producer.publish_nowait(b"x")
    with pytest.raises(ProducerClosed, match=r"^producer is closed$"):
        loop.run(rig.producer.publish_many([b"x"]))
    assert rig.stats.accepted == 0


def test_settled_names_the_message_the_producer_closed_before_it_settled(
    loop: VirtualClockLoop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    # Neither the store nor a file takes the message on close.
    monkeypatch.setattr("aioproducer._fallback.write_messages", disk_full)
    rig = Rig(loop, tmp_path, spill_after=3600.0)
    rig.broker.set_down(took=False)
    rig.store.set_fault(StoreFault.DOWN)
    message_id = rig.publish(message_id="lost-1")
    waiting = loop.drive(rig.producer.settled(message_id))
    rig.close()
    assert waiting.done()
    with pytest.raises(
        ProducerClosed, match=r"^the producer closed before message lost-1 settled$"
    ):
        waiting.result()


# -- defaults and arguments ----------------------------------------------------------


def test_the_routing_key_defaults_to_empty_in_each_publish_call(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path)

    async def publish_each_way() -> None:
        await rig.producer.publish(b"a", message_id="a")
        rig.producer.publish_nowait(b"b", message_id="b")
        await rig.producer.publish_many([b"c"])

    loop.run(publish_each_way())
    loop.drive(within=1.0)
    assert [(d.message.body, d.message.routing_key) for d in rig.broker.deliveries] == [
        (b"a", ""),
        (b"b", ""),
        (b"c", ""),
    ]
    rig.close()


def test_publish_nowait_hands_every_argument_to_the_middleware_and_the_wire(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    seen: list[Outgoing] = []

    def record(outgoing: Outgoing) -> None:
        seen.append(dataclasses.replace(outgoing))

    rig = Rig(loop, tmp_path, exchange="default-exchange", middleware=[record])

    async def publish() -> None:
        rig.producer.publish_nowait({"n": 1}, **EVERY_ARGUMENT)
        rig.producer.publish_nowait(b"plain", routing_key="q", message_id="m-2")

    loop.run(publish())
    loop.drive(within=1.0)
    # The middleware sees each argument, the producer's exchange where none was given.
    assert seen == [
        Outgoing({"n": 1}, **EVERY_ARGUMENT),
        Outgoing(b"plain", routing_key="q", exchange="default-exchange", message_id="m-2"),
    ]
    messages = delivered(rig)
    assert_carries_every_argument(messages["m-1"], b'{"n":1}')
    assert messages["m-2"].exchange == "default-exchange"
    assert messages["m-2"].properties is None
    rig.close()


def test_publish_many_gives_every_body_the_shared_arguments_and_counts_each_batch(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path, exchange="default-exchange")
    shared = {k: v for k, v in EVERY_ARGUMENT.items() if k != "message_id"}
    rig.publish()
    first = loop.run(rig.producer.publish_many([{"n": 1}, b"raw"], **shared))
    second = loop.run(rig.producer.publish_many([b"x", b"y", b"z"]))
    assert rig.stats.accepted == 6
    loop.drive(within=1.0)
    messages = delivered(rig)
    assert_carries_every_argument(messages[first[0]], b'{"n":1}')
    assert_carries_every_argument(messages[first[1]], b"raw")
    assert {messages[i].exchange for i in second} == {"default-exchange"}
    assert rig.stats.confirmed == 6
    rig.close()


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        ("routing_key", 1, "routing_key must be a str, not int"),
        ("routing_key", "r" * 256, "routing_key is over 255 bytes"),
        ("exchange", b"shop", "exchange must be a str, not bytes"),
        ("exchange", "x" * 256, "exchange is over 255 bytes"),
        ("message_id", "", "message_id must not be empty"),
        ("content_type", 1.5, "content_type must be a str, not float"),
    ],
    ids=["key-int", "key-long", "exchange-bytes", "exchange-long", "id-empty", "type-float"],
)
def test_a_bad_name_is_refused_naming_its_field(
    loop: VirtualClockLoop, tmp_path: Path, field: str, value: Any, text: str
) -> None:
    rig = Rig(loop, tmp_path)
    arguments = {"routing_key": "q", field: value}
    with pytest.raises(InvalidMessage) as caught:
        rig.producer.publish_nowait(b"x", **arguments)
    assert str(caught.value) == text
    with pytest.raises(InvalidMessage) as caught:
        loop.run(rig.producer.publish_many([Outgoing(b"x", **arguments)]))
    assert str(caught.value) == text
    assert rig.stats.accepted == 0
    rig.close()


# -- serializers ---------------------------------------------------------------------


def shout(body: Any) -> tuple[bytes, str]:
    return str(body).upper().encode(), "text/x-shout"


def test_bytes_like_bodies_go_as_they_are_whatever_the_serializer(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path, serializer=shout)
    rig.publish(bytearray(b"ab"), message_id="1")
    rig.publish(memoryview(b"cd"), message_id="2")
    rig.publish("ef", message_id="3")
    loop.drive(within=1.0)
    assert [(d.message.body, d.message.content_type) for d in rig.broker.deliveries] == [
        (b"ab", "application/octet-stream"),
        (b"cd", "application/octet-stream"),
        (b"EF", "text/x-shout"),
    ]
    rig.close()


def test_a_serializer_that_raises_is_named_in_300_characters_with_its_cause(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    failure = ValueError("no " * 200)

    def broken(body: Any) -> tuple[bytes, str]:
        raise failure

    rig = Rig(loop, tmp_path, serializer=broken)
    with pytest.raises(BodyNotSerializable) as caught:
        rig.publish({"a": 1})
    assert str(caught.value) == f"the serializer failed: ValueError: {failure}"[:300]
    assert len(str(caught.value)) == 300
    assert caught.value.__cause__ is failure
    assert rig.stats.accepted == 0
    rig.close()


@pytest.mark.parametrize(
    "result",
    [
        [b"x", "text/plain"],
        (b"x", "text/plain", "extra"),
        (b"x",),
        ("x", "text/plain"),
        (b"x", b"text/plain"),
        b"x",
    ],
    ids=["list", "three", "one", "str-body", "bytes-type", "bare-bytes"],
)
def test_a_serializer_result_not_bytes_and_str_is_refused(
    loop: VirtualClockLoop, tmp_path: Path, result: Any
) -> None:
    def wrong(body: Any) -> tuple[bytes, str]:
        return result  # type: ignore[no-any-return]

    rig = Rig(loop, tmp_path, serializer=wrong)
    with pytest.raises(BodyNotSerializable) as caught:
        rig.publish({"a": 1})
    assert str(caught.value) == SERIALIZER_SHAPE
    assert rig.stats.accepted == 0
    rig.close()


# -- middleware and the buffer's observer ----------------------------------------------


def test_a_failing_finish_callback_is_logged_with_its_traceback(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[Settlement | BaseException | None] = []

    def finish(outcome: Settlement | BaseException | None) -> None:
        heard.append(outcome)
        raise RuntimeError("finish broke")

    def watch(outgoing: Outgoing) -> Finish:
        return finish

    caplog.set_level(logging.ERROR, logger="aioproducer.producer")
    rig = Rig(loop, tmp_path, middleware=[watch])
    rig.publish()
    loop.drive(within=1.0)
    with pytest.raises(BodyNotSerializable):
        rig.publish({1, 2})
    assert heard[0] is Settlement.CONFIRMED and isinstance(heard[1], BodyNotSerializable)
    failures = [
        r
        for r in caplog.records
        if (r.name, r.levelname) == ("aioproducer.producer", "ERROR")
        and r.getMessage() == "a middleware's finish callback failed"
    ]
    assert len(failures) == 2
    assert all(r.exc_info is not None and r.exc_info[0] is RuntimeError for r in failures)
    assert len(rig.broker.deliveries) == 1
    rig.close()


@pytest.mark.parametrize("hook", [False, True], ids=["alone", "beside-a-hook"])
def test_the_buffer_observer_hears_every_move_with_or_without_a_settlement_hook(
    loop: VirtualClockLoop, tmp_path: Path, hook: bool
) -> None:
    moves: list[tuple[Message, State]] = []
    settled: list[tuple[str, Settlement]] = []
    producer = FakeLinkProducer(
        NOWHERE,
        store=FakeStore(loop.wall),
        fallback_dir=tmp_path,
        on_settled=(lambda i, outcome: settled.append((i, outcome))) if hook else None,
    )
    producer.broker = FakeBroker()
    producer._observer = lambda message, state: moves.append((message, state))
    loop.run(producer.start())
    message_id = loop.run(producer.publish(b"x", message_id="m-1"))
    loop.drive(within=1.0)
    assert [(m.message_id, state) for m, state in moves] == [
        (message_id, State.MEMORY),
        (message_id, State.IN_FLIGHT),
        (message_id, State.CONFIRMED),
    ]
    assert settled == ([(message_id, Settlement.CONFIRMED)] if hook else [])
    loop.run(producer.close(1.0), within=10.0)


def test_the_connection_is_named_after_the_producer(
    loop: VirtualClockLoop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names: list[object] = []

    async def connect_robust(url: str, **options: Any) -> Any:
        names.append(options["client_properties"]["connection_name"])
        await asyncio.Event().wait()  # the broker never answers

    monkeypatch.setattr("aioproducer._connection.aio_pika.connect_robust", connect_robust)
    producer = Producer(NOWHERE, name="web-1", store=FakeStore(loop.wall), fallback_dir=tmp_path)
    loop.run(producer.start())
    loop.drive(within=0.1)
    assert names == ["aioproducer web-1"]
    assert producer.stats().connections == 0
    loop.run(producer.close(0.5), within=10.0)


class CloseHangs(FakeStore):
    """A store whose close() never returns."""

    async def close(self) -> None:
        await asyncio.Event().wait()


def test_closing_a_producer_never_started_gives_its_store_one_second(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    producer = Producer(NOWHERE, name="web-1", store=CloseHangs(loop.wall), fallback_dir=tmp_path)
    start = loop.time()
    with caplog.at_level(logging.WARNING, logger="aioproducer.producer"):
        loop.run(producer.close(), within=30.0)
    assert loop.time() - start == pytest.approx(1.0)
    assert producer.stats().state is ProducerState.CLOSED
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "producer web-1: closing the store failed: TimeoutError from the store")
    ]


def test_close_runs_as_a_task_named_aioproducer_close(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path, spill_after=3600.0)
    rig.broker.set_down(took=False)
    rig.publish()
    closing = loop.drive(rig.producer.close(), within=1.0)
    assert "aioproducer-close" in {task.get_name() for task in asyncio.all_tasks(loop)}
    loop.drive(closing, within=30.0)
    assert closing.done() and rig.stats.state is ProducerState.CLOSED


class ClosingLink(FakeLink):
    """A FakeLink that notes the timeout of every close()."""

    def __init__(self, broker: FakeBroker, timeouts: list[float]) -> None:
        super().__init__(broker)
        self.timeouts = timeouts

    async def close(self, timeout: float) -> None:
        self.timeouts.append(timeout)
        await super().close(timeout)


class ClosingLinkProducer(FakeLinkProducer):
    link_timeouts: list[float]

    def _make_link(self, context: Context) -> Link:
        return ClosingLink(self.broker, self.link_timeouts)


def test_close_gives_the_connection_and_the_store_half_a_second_each(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    producer = ClosingLinkProducer(
        NOWHERE, name="web-1", store=CloseHangs(loop.wall), fallback_dir=tmp_path
    )
    producer.broker = FakeBroker()
    producer.link_timeouts = []
    loop.run(producer.start())
    loop.run(producer.publish(b"x"))
    loop.drive(within=1.0)
    assert producer.stats().confirmed == 1
    start = loop.time()
    with caplog.at_level(logging.WARNING, logger="aioproducer.producer"):
        loop.run(producer.close(5.0), within=30.0)
    # Nothing to drain or store: the store's close is all that takes time.
    assert loop.time() - start == pytest.approx(0.5)
    assert producer.link_timeouts == [0.5]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "producer web-1: closing the store failed: TimeoutError from the store")
    ]


def test_deleting_late_confirmed_copies_on_close_gets_only_what_is_left_of_the_timeout(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path, spill_after=0.5, confirm_timeout=10.0)
    rig.broker.mode = Mode.SLOW  # confirms held until released
    stored = rig.publish()
    loop.drive(within=1.0)
    assert stored in rig.store.records  # copied while in flight
    rig.store.set_fault(StoreFault.HANGING)
    rig.publish()
    loop.drive(within=1.0)  # the spiller's write of the second hangs
    rig.broker.release()  # the stored copy is redundant now; its delete waits for close
    rig.broker.confirm_delay = None
    held = rig.publish()  # never confirmed: the drain waits out its share
    start = loop.time()
    loop.run(rig.producer.close(2.0), within=30.0)
    # The drain ends at 1 s, the write of the held message at the 2 s deadline; the
    # delete of the redundant copy, which hangs too, gets what is left: nothing.
    assert loop.time() - start == pytest.approx(2.0)
    assert stored in rig.store.records  # left: replayed later, a duplicate, never a loss
    [path] = tmp_path.glob("aioproducer-unsent-*.jsonl")
    assert [m.message_id for m in read_messages(path)] == [held]
    assert rig.stats.state is ProducerState.CLOSED


class FailingCloseLink(FakeLink):
    """A FakeLink whose close() fails with an error nothing expects (a bug)."""

    async def close(self, timeout: float) -> None:
        raise RuntimeError("the link could not close")


class FailingCloseLinkProducer(FakeLinkProducer):
    def _make_link(self, context: Context) -> Link:
        return FailingCloseLink(self.broker)


def test_an_unexpected_error_in_closing_reaches_every_close_call_after_the_store_closed(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    store = FakeStore(loop.wall)
    producer = FailingCloseLinkProducer(NOWHERE, store=store, fallback_dir=tmp_path)
    producer.broker = FakeBroker()
    loop.run(producer.start())
    message_id = loop.run(producer.publish(b"x"))
    loop.drive(within=1.0)
    assert [d.message_id for d in producer.broker.deliveries] == [message_id]
    for _ in range(2):
        with pytest.raises(RuntimeError, match=r"^the link could not close$"):
            loop.run(producer.close(1.0), within=10.0)
        assert producer.stats().state is ProducerState.CLOSED


# -- options, start, the background tasks ----------------------------------------------


def test_every_option_left_out_takes_the_default_docs_configuration_md_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    producer = Producer()
    assert producer._settings == Settings(
        url="amqp://guest:guest@127.0.0.1:5672/",
        exchange="",
        spill_after=5.0,
        max_buffer=10_000,
        max_buffer_bytes=256 * 2**20,
        max_message_size=16 * 2**20,
        max_in_flight=1000,
        high_water=0.8,
        persistent=True,
        mandatory=True,
        lease=30.0,
        replay_batch=200,
        replay_interval=1.0,
        confirm_timeout=10.0,
        connect_timeout=10.0,
        max_attempts=None,
        reconnect_backoff=Backoff(0.1, cap=0.5),
        retry_backoff=Backoff(1.0, cap=60.0),
        store_backoff=Backoff(0.2, cap=10.0),
        fallback_dir=Path("."),
    )
    assert (producer.url, producer.exchange) == ("amqp://guest:guest@127.0.0.1:5672/", "")
    assert (producer.spill_after, producer.max_buffer) == (5.0, 10_000)
    assert producer.max_message_size == 16 * 2**20
    assert isinstance(producer.store, SQLiteStore)
    assert repr(producer.store) == "SQLiteStore('aioproducer-spill.db')"
    assert re.fullmatch(
        rf"{re.escape(socket.gethostname())}:{os.getpid()}:[0-9a-f]{{6}}", producer.owner
    )


def test_every_option_given_is_the_one_in_force(tmp_path: Path) -> None:
    store = FakeStore(lambda: 0.0)
    backoffs = Backoff(0.3, cap=0.3), Backoff(3.0, cap=3.0), Backoff(0.7, cap=0.7)
    producer = Producer(
        ["amqp://app:pw@a/", "amqp://app:pw@b/"],
        exchange="shop",
        store=store,
        spill_after=2.0,
        max_buffer=7,
        max_message_size=1000,
        persistent=False,
        max_attempts=3,
        reconnect_backoff=backoffs[0],
        retry_backoff=backoffs[1],
        store_backoff=backoffs[2],
        fallback_dir=tmp_path,
        name="web-1",
    )
    settings = producer._settings
    assert (settings.persistent, settings.max_attempts, settings.fallback_dir) == (
        False,
        3,
        tmp_path,
    )
    assert (settings.reconnect_backoff, settings.retry_backoff, settings.store_backoff) == (
        backoffs
    )
    assert producer.url == ["amqp://app:pw@a/", "amqp://app:pw@b/"]
    assert (producer.exchange, producer.store, producer.owner) == ("shop", store, "web-1")
    assert (producer.spill_after, producer.max_buffer, producer.max_message_size) == (
        2.0,
        7,
        1000,
    )
    assert Producer(store=store, fallback_dir=tmp_path, persistent=True)._settings.persistent


def test_a_closed_producer_cannot_be_started_again(loop: VirtualClockLoop, tmp_path: Path) -> None:
    rig = Rig(loop, tmp_path)
    loop.run(rig.producer.start())  # running: nothing happens
    assert rig.stats.connections == 1
    rig.close()
    with pytest.raises(ProducerClosed, match=r"^a closed producer cannot be started again$"):
        loop.run(rig.producer.start())


def test_a_failing_on_settled_hook_is_logged_with_the_producer_and_the_message(
    loop: VirtualClockLoop, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def hook(message_id: str, outcome: Settlement) -> None:
        raise RuntimeError("hook broke")

    caplog.set_level(logging.ERROR, logger="aioproducer.producer")
    rig = Rig(loop, tmp_path, name="web-1", on_settled=hook)
    rig.publish(message_id="m-1")
    loop.drive(within=1.0)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", "producer web-1: on_settled failed for message m-1 (confirmed)")
    ]
    rig.close()


@pytest.mark.crashing_task
def test_each_background_task_is_named_when_it_fails(
    loop: VirtualClockLoop,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failed: set[str] = set()

    def fail_once(cls: type[Any]) -> None:
        original = cls.run

        async def run(self: Any) -> None:
            if cls.__name__ not in failed:
                failed.add(cls.__name__)
                raise RuntimeError("once")
            await original(self)

        monkeypatch.setattr(cls, "run", run)

    for cls in (LivePublisher, Spiller, Replayer):
        fail_once(cls)
    caplog.set_level(logging.ERROR, logger="aioproducer.producer")
    rig = Rig(loop, tmp_path, name="web-1", store_backoff=Backoff(0.5, cap=0.5, jitter=0))
    loop.drive(within=1.0)
    lines = sorted(r.getMessage().splitlines()[0] for r in caplog.records)
    assert lines == [
        f"producer web-1: {name} task failed; restarting it in 0.5s"
        for name in ("publisher", "replay", "spill")
    ]
    assert rig.publish() in rig.delivered()
    rig.close()


class NoSizeLimit:
    """A store of one's own that names no ``max_body_size``: the option alone bounds a body."""

    async def close(self) -> None:
        pass


def test_a_store_without_a_size_limit_leaves_max_message_size_as_given(tmp_path: Path) -> None:
    store = cast(Store, NoSizeLimit())
    producer = Producer(store=store, fallback_dir=tmp_path, max_message_size=1234)
    assert producer.max_message_size == 1234
    assert Producer(store=store, fallback_dir=tmp_path).max_message_size == 16 * 2**20


@pytest.mark.parametrize(
    ("urls", "allowed", "refused"),
    [
        ("amqp://app:pw@127.0.0.1:1/", "app", "guest"),
        ("amqp://127.0.0.1:1/", "guest", "app"),
        (["amqp://app:pw@127.0.0.1:1/", "amqp://app:pw@127.0.0.1:2/"], "app", "guest"),
    ],
    ids=["named", "unnamed", "several"],
)
def test_user_id_is_the_user_the_urls_name_or_guest(
    loop: VirtualClockLoop, tmp_path: Path, urls: str | list[str], allowed: str, refused: str
) -> None:
    producer = FakeLinkProducer(urls, store=FakeStore(loop.wall), fallback_dir=tmp_path)
    producer.broker = FakeBroker()
    loop.run(producer.start())
    assert producer.publish_nowait(b"x", user_id=allowed)
    with pytest.raises(InvalidMessage, match=rf"^user_id '{refused}' is not the user"):
        producer.publish_nowait(b"x", user_id=refused)
    loop.run(producer.close(1.0), within=10.0)


def test_a_close_cancelled_twice_raises_cancelled_even_when_the_second_lands_at_its_end(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path, spill_after=3600.0)
    rig.broker.set_down(took=False)
    message_id = rig.publish()
    closing = loop.drive(rig.producer.close(), within=1.0)
    assert not closing.done()
    closer = rig.producer._closer
    assert closer is not None
    # Once during the drain, once more just as the closing work ends.
    closing.cancel()
    closer.add_done_callback(lambda _: closing.cancel())
    loop.drive(within=30.0)
    assert closing.cancelled()
    assert message_id in rig.store.records
    assert rig.stats.state is ProducerState.CLOSED


def test_a_close_cancelled_just_as_its_work_ends_still_raises_cancelled(
    loop: VirtualClockLoop, tmp_path: Path
) -> None:
    rig = Rig(loop, tmp_path, spill_after=3600.0)
    rig.broker.set_down(took=False)
    message_id = rig.publish()
    closing = loop.drive(rig.producer.close(), within=1.0)
    closer = rig.producer._closer
    assert closer is not None
    closer.add_done_callback(lambda _: closing.cancel())
    loop.drive(within=30.0)
    assert closing.cancelled()
    assert message_id in rig.store.records
    assert rig.stats.state is ProducerState.CLOSED
