"""The link's bookkeeping of publishes, without a broker.

A batch numbers its messages after the channel's last delivery tag, writes their
frames in one piece, and settles each from what aiormq's channel reader hands it: an
ack, a nack, a returned message, the channel's close, or nothing before the timeout.
The channel below has just the attributes the batched path uses of an aiormq channel
(``check_internals()`` checks that a real one has them, and the integration tests run
the same path against RabbitMQ). Also here: how a failure maps to an outcome, the
one-at-a-time publish, and the replacement of a channel that only gets nacks.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any, cast

import aiormq
import aiormq.abc
import pytest
from aiormq.abc import ChannelFrame
from pamqp import commands

from aioproducer import Backoff, Message
from aioproducer._connection import (
    AmqpLink,
    NackRun,
    _failure,
    _is_blocked,
    check_internals,
    message_properties,
    publish_frames,
)
from aioproducer._link import Outcome, Result
from aioproducer._message import Properties, encode_headers_wire
from tests.fakes import VirtualClockLoop
from tests.waiting import wait_until


def message(n: int, *, routing_key: str = "q", mandatory: bool | None = None) -> Message:
    return Message(
        message_id=f"{n:032x}",
        body=b"body %d" % n,
        exchange="",
        routing_key=routing_key,
        content_type="text/plain",
        timestamp=1_700_000_000.0,
        headers={},
        properties=None if mandatory is None else Properties(mandatory=mandatory),
    )


def returned_with(delivery: Any) -> aiormq.abc.DeliveredMessage:
    return aiormq.abc.DeliveredMessage(
        delivery=delivery,
        header=None,  # type: ignore[arg-type]
        body=b"",
        channel=None,  # type: ignore[arg-type]
    )


class Hanging:
    """A channel whose ``basic_publish`` never returns; ``started`` is set when called."""

    def __init__(self, started: asyncio.Event) -> None:
        self.started = started

    async def basic_publish(self, body: bytes, **kwargs: Any) -> Any:
        self.started.set()
        await asyncio.Event().wait()


class Channel:
    """The attributes and methods of an aiormq channel the batched path uses."""

    def __init__(self, *, delivery_tag: int = 0, queue_size: int = 0) -> None:
        self.number = 7
        self.max_content_size = 4
        self.delivery_tag = delivery_tag
        self.confirmations: dict[int, Any] = {}
        self.message_id_delivery_tag: dict[str, int] = {}
        self.write_queue: asyncio.Queue[ChannelFrame] = asyncio.Queue(queue_size)
        self.is_closed = False
        self.futures: list[asyncio.Future[Any]] = []

    def create_future(self) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future

    def close(self, exc: BaseException | None) -> None:
        """What aiormq does to the futures of a channel that closes."""
        for future in self.futures:
            if not future.done():
                if exc is None:
                    future.cancel()
                else:
                    future.set_exception(exc)


class Results:
    """``on_result``: what each message ended as, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Result]] = []

    def __call__(self, message: Message, result: Result) -> None:
        self.seen.append((message.message_id, result))

    def outcomes(self) -> dict[str, Outcome]:
        return {message_id: result.outcome for message_id, result in self.seen}


@pytest.fixture
async def link() -> AmqpLink:
    return AmqpLink("amqp://app:s3cret@rabbit:5672/", backoff=Backoff(), name="test")


def send(
    link: AmqpLink,
    channel: Any,
    messages: list[Message],
    results: Results,
    *,
    timeout: float = 60.0,
    mandatory: bool = False,
) -> Any:
    return link.send(
        channel,
        messages,
        mandatory=mandatory,
        persistent=True,
        timeout=timeout,
        on_result=results,
    )


async def test_a_batch_is_numbered_after_the_last_tag_and_written_in_one_piece(
    link: AmqpLink,
) -> None:
    channel = Channel(delivery_tag=5)
    messages = [message(n, mandatory=n == 1) for n in range(3)]
    sent = send(link, channel, messages, Results())
    assert sorted(channel.confirmations) == [6, 7, 8]
    assert channel.delivery_tag == 8
    assert channel.message_id_delivery_tag == {m.message_id: 6 + n for n, m in enumerate(messages)}
    frame = channel.write_queue.get_nowait()
    assert channel.write_queue.empty()
    expected: list[bytes] = []
    for m in messages:
        properties = message_properties(m, persistent=True)
        publish_frames(7, m, properties, m.mandatory_or(False), 4, expected)
    assert frame.payload == b"".join(expected)
    assert not frame.should_close
    # The bodies are cut to the channel's frame size (4 bytes here): two frames each.
    assert frame.payload.count(b"\x00\x04body\xce") == 3
    assert not sent.done
    writing = asyncio.create_task(sent.written())
    await asyncio.sleep(0)
    assert not writing.done()
    assert frame.drain_future is not None
    frame.drain_future.set_result(None)
    await writing


async def test_acks_nacks_returns_and_errors_each_settle_their_own_message(
    link: AmqpLink,
) -> None:
    channel = Channel()
    results = Results()
    messages = [message(n) for n in range(5)]
    sent = send(link, channel, messages, results, mandatory=True)
    entries = channel.confirmations
    entries[1].set_result(commands.Basic.Ack(delivery_tag=1))
    entries[2].set_exception(aiormq.exceptions.DeliveryError(None, commands.Basic.Nack(2)))
    returned = returned_with(commands.Basic.Return(reply_code=312, reply_text="NO_ROUTE"))
    entries[3].set_result(returned)
    entries[4].set_result(commands.Basic.Nack(delivery_tag=4))
    assert not sent.done
    entries[5].set_exception(ConnectionResetError("reset"))
    assert sent.done
    by_id = dict(results.seen)
    ids = [m.message_id for m in messages]
    assert by_id[ids[0]] == Result(Outcome.ACKED)
    assert by_id[ids[1]] == Result(Outcome.NACKED, "nacked by the broker")
    assert by_id[ids[2]] == Result(Outcome.RETURNED, "312 NO_ROUTE", 312)
    assert by_id[ids[3]].outcome is Outcome.NACKED
    assert by_id[ids[4]].outcome is Outcome.LOST and "reset" in by_id[ids[4]].detail
    assert len(results.seen) == 5
    # Each id's tag is dropped once settled; the batch's future is resolved.
    assert channel.message_id_delivery_tag == {}
    watch = channel.futures[0]
    assert watch.done() and not watch.cancelled()
    # A late second confirm for a settled entry changes nothing.
    assert entries[1].done() and entries[1].cancelled()
    entries[1].set_result(commands.Basic.Nack(delivery_tag=1))
    assert len(results.seen) == 5


async def test_what_is_unconfirmed_at_the_timeout_ends_timed_out(link: AmqpLink) -> None:
    channel = Channel()
    results = Results()
    messages = [message(n) for n in range(3)]
    sent = send(link, channel, messages, results, timeout=0.05)
    channel.confirmations[2].set_result(commands.Basic.Ack(delivery_tag=2))
    await wait_until(lambda: sent.done, timeout=10, every=0)
    outcomes = results.outcomes()
    assert outcomes[messages[1].message_id] is Outcome.ACKED
    for m in (messages[0], messages[2]):
        assert outcomes[m.message_id] is Outcome.TIMEOUT
    assert dict(results.seen)[messages[0].message_id].detail == "no confirm within 0.05s"
    assert len(results.seen) == 3


async def test_a_closing_channel_settles_the_rest_with_its_error(link: AmqpLink) -> None:
    channel = Channel()
    results = Results()
    messages = [message(n) for n in range(3)]
    sent = send(link, channel, messages, results)
    channel.confirmations[1].set_result(commands.Basic.Ack(delivery_tag=1))
    error = aiormq.exceptions.ChannelNotFoundEntity("NOT_FOUND - no exchange 'gone' in vhost '/'")
    channel.close(error)
    await wait_until(lambda: sent.done, timeout=10, every=0)
    by_id = dict(results.seen)
    assert by_id[messages[0].message_id].outcome is Outcome.ACKED
    for m in messages[1:]:
        result = by_id[m.message_id]
        assert (result.outcome, result.code, result.missing_exchange) == (
            Outcome.CHANNEL_ERROR,
            404,
            "gone",
        )
    assert len(results.seen) == 3


async def test_a_channel_closed_without_an_error_loses_what_is_unconfirmed(
    link: AmqpLink,
) -> None:
    channel = Channel()
    results = Results()
    sent = send(link, channel, [message(n) for n in range(2)], results)
    channel.close(None)
    await wait_until(lambda: sent.done, timeout=10, every=0)
    assert [r.outcome for _, r in results.seen] == [Outcome.LOST, Outcome.LOST]


async def test_an_abandoned_batch_reports_nothing_more(link: AmqpLink) -> None:
    channel = Channel()
    results = Results()
    sent = send(link, channel, [message(n) for n in range(2)], results)
    channel.confirmations[1].set_result(commands.Basic.Ack(delivery_tag=1))
    sent.abandon()
    assert sent.done
    channel.confirmations[2].set_result(commands.Basic.Ack(delivery_tag=2))
    channel.close(None)
    await asyncio.sleep(0)
    assert [r.outcome for _, r in results.seen] == [Outcome.ACKED]


async def test_a_message_that_cannot_be_encoded_fails_alone(link: AmqpLink) -> None:
    channel = Channel()
    results = Results()
    bad = message(1, routing_key="k" * 256)
    good = message(2)
    sent = send(link, channel, [bad, good], results)
    assert results.seen == [
        (bad.message_id, Result(Outcome.FAILED, "properties could not be encoded: ValueError"))
    ]
    assert list(channel.confirmations) == [1]
    assert channel.message_id_delivery_tag == {good.message_id: 1}
    channel.confirmations[1].set_result(commands.Basic.Ack(delivery_tag=1))
    assert sent.done and results.outcomes()[good.message_id] is Outcome.ACKED


async def test_nothing_is_written_to_a_closed_channel(link: AmqpLink) -> None:
    channel = Channel()
    channel.is_closed = True
    results = Results()
    sent = send(link, channel, [message(n) for n in range(2)], results)
    assert channel.write_queue.empty() and channel.confirmations == {}
    assert [r.outcome for _, r in results.seen] == [Outcome.LOST, Outcome.LOST]
    assert sent.done


async def test_a_full_write_queue_is_waited_for_in_order(link: AmqpLink) -> None:
    channel = Channel(queue_size=1)
    earlier = ChannelFrame(payload=b"earlier", should_close=False)
    channel.write_queue.put_nowait(earlier)
    results = Results()
    sent = send(link, channel, [message(1)], results)
    writing = asyncio.create_task(sent.written())
    await asyncio.sleep(0)
    assert not writing.done()
    assert channel.write_queue.get_nowait() is earlier
    frame = await asyncio.wait_for(channel.write_queue.get(), 10)
    assert frame.payload.startswith(b"\x01\x00\x07")
    assert frame.drain_future is not None
    frame.drain_future.set_result(None)
    await asyncio.wait_for(writing, 10)


async def test_a_raising_on_result_is_logged_and_the_others_still_settle(
    link: AmqpLink, caplog: pytest.LogCaptureFixture
) -> None:
    channel: Any = Channel()
    seen: list[str] = []

    def on_result(m: Message, result: Result) -> None:
        seen.append(m.message_id)
        if len(seen) == 1:
            raise RuntimeError("hook")

    messages = [message(n) for n in range(2)]
    sent = link.send(
        channel, messages, mandatory=False, persistent=True, timeout=60, on_result=on_result
    )
    for tag in (1, 2):
        channel.confirmations[tag].set_result(commands.Basic.Ack(delivery_tag=tag))
    assert seen == [m.message_id for m in messages] and sent.done
    assert any(
        r.levelno == logging.ERROR
        and f"settling message {messages[0].message_id} failed" in r.msg % r.args
        for r in caplog.records
    )


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            aiormq.exceptions.ChannelNotFoundEntity("NOT_FOUND - no exchange 'x' in vhost '/'"),
            Result(
                Outcome.CHANNEL_ERROR,
                "NOT_FOUND - no exchange 'x' in vhost '/'",
                404,
                missing_exchange="x",
            ),
        ),
        (
            aiormq.exceptions.ChannelAccessRefused("ACCESS_REFUSED - no exchange 'x' in vhost"),
            Result(Outcome.CHANNEL_ERROR, "ACCESS_REFUSED - no exchange 'x' in vhost", 403),
        ),
        (
            aiormq.exceptions.ChannelClosed(406, "PRECONDITION_FAILED - no"),
            Result(Outcome.CHANNEL_ERROR, "PRECONDITION_FAILED - no", 406),
        ),
        (
            aiormq.exceptions.ChannelClosed(404, "NOT_FOUND - no queue 'q' in vhost '/'"),
            Result(Outcome.CHANNEL_ERROR, "NOT_FOUND - no queue 'q' in vhost '/'", 404),
        ),
        (
            aiormq.exceptions.ChannelClosed(),
            Result(Outcome.CHANNEL_ERROR, "<ChannelClosed: ()>", 0),
        ),
        (
            asyncio.CancelledError(),
            Result(Outcome.LOST, "confirm cancelled by a closing connection"),
        ),
        (ConnectionResetError("reset"), Result(Outcome.LOST, "ConnectionResetError('reset')")),
        (
            aiormq.exceptions.ChannelInvalidStateError("closed"),
            Result(Outcome.LOST, "ChannelInvalidStateError('closed')"),
        ),
        (
            aiormq.exceptions.ConnectionClosed(320, "CONNECTION_FORCED"),
            Result(Outcome.LOST, "<ConnectionClosed: (320, 'CONNECTION_FORCED')>"),
        ),
        (KeyError("secret"), Result(Outcome.FAILED, "KeyError while publishing")),
    ],
    ids=[
        "404-exchange",
        "403",
        "406-two-args",
        "404-queue",
        "no-args",
        "cancelled",
        "reset",
        "invalid-state",
        "connection-closed",
        "other",
    ],
)
def test_each_failure_maps_to_its_outcome(exc: BaseException, expected: Result) -> None:
    assert _failure(exc) == expected


class OneByOne:
    """A channel for :meth:`AmqpLink.publish`: ``basic_publish`` answers as told."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[dict[str, Any]] = []

    async def basic_publish(self, body: bytes, **kwargs: Any) -> Any:
        self.calls.append({"body": body, **kwargs})
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


async def publish_one(link: AmqpLink, answer: Any, m: Message | None = None) -> Result:
    channel: Any = OneByOne(answer)
    return await link.publish(
        channel, m or message(1), mandatory=True, persistent=False, timeout=3.0
    )


async def test_publish_one_at_a_time_maps_each_answer(link: AmqpLink) -> None:
    returned = returned_with(commands.Basic.Return(reply_code=312, reply_text="NO_ROUTE"))
    assert await publish_one(link, commands.Basic.Ack(delivery_tag=1)) == Result(Outcome.ACKED)
    assert await publish_one(link, returned) == Result(Outcome.RETURNED, "312 NO_ROUTE", 312)
    assert await publish_one(link, commands.Basic.Nack(delivery_tag=1)) == Result(
        Outcome.NACKED, "nacked by the broker"
    )
    assert await publish_one(link, TimeoutError()) == Result(
        Outcome.TIMEOUT, "no confirm within 3s"
    )
    error = aiormq.exceptions.ChannelAccessRefused("ACCESS_REFUSED - x")
    assert await publish_one(link, error) == Result(
        Outcome.CHANNEL_ERROR, "ACCESS_REFUSED - x", 403
    )
    assert await publish_one(link, asyncio.CancelledError()) == Result(
        Outcome.LOST, "confirm cancelled by a closing connection"
    )
    assert await publish_one(link, ValueError("v")) == Result(
        Outcome.FAILED, "ValueError while publishing"
    )


async def test_publish_one_at_a_time_sends_the_message_with_its_settings(link: AmqpLink) -> None:
    channel: Any = OneByOne(commands.Basic.Ack(delivery_tag=1))
    m = message(3, mandatory=False)
    assert await link.publish(channel, m, mandatory=True, persistent=False, timeout=3.0) == Result(
        Outcome.ACKED
    )
    (call,) = channel.calls
    assert call["body"] == m.body and call["exchange"] == "" and call["routing_key"] == "q"
    assert call["mandatory"] is False and call["timeout"] == 3.0
    assert call["properties"].delivery_mode == 1
    assert call["properties"].message_id == m.message_id


async def test_a_publish_whose_task_is_cancelled_is_cancelled(link: AmqpLink) -> None:
    started = asyncio.Event()

    hanging: Any = Hanging(started)
    task = asyncio.create_task(
        link.publish(hanging, message(1), mandatory=False, persistent=True, timeout=60)
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class RobustChannel:
    """What the link keeps of an aio-pika robust channel."""

    def __init__(self) -> None:
        self.close_callbacks: set[Any] = set()
        self.reopen_callbacks: set[Any] = set()
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class Connection:
    """An aio-pika robust connection that opens channels, or fails to."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.opened: list[RobustChannel] = []

    async def channel(self, **kwargs: Any) -> RobustChannel:
        assert kwargs == {"publisher_confirms": True, "on_return_raises": False}
        if self.fail:
            raise aiormq.exceptions.ChannelInvalidStateError("connection closed")
        channel = RobustChannel()
        self.opened.append(channel)
        return channel


def watched(link: AmqpLink, channel: Any, which: str = "live", span: float = 1.0) -> NackRun:
    run = NackRun(which, span)
    link._runs[channel] = run
    return run


async def test_nacks_in_a_row_are_counted_and_an_ack_ends_the_run(link: AmqpLink) -> None:
    underlay = Channel()
    run = watched(link, underlay)
    link._replaced["live"] = 2
    results = Results()
    observe = link._observe(underlay, results)
    loop = asyncio.get_running_loop()
    before = loop.time()
    observe(message(1), Result(Outcome.NACKED, "nacked"))
    assert run.count == 1 and before <= run.since <= loop.time()
    run.since = first = before - 5.0
    for _ in range(2):
        observe(message(1), Result(Outcome.NACKED, "nacked"))
    assert run.count == 3 and run.since == first
    assert link._replaced["live"] == 2
    since = run.since
    observe(message(1), Result(Outcome.TIMEOUT, "slow"))
    assert (run.count, run.since) == (3, since)
    observe(message(1), Result(Outcome.ACKED))
    assert run.count == 0 and link._replaced["live"] == 0
    assert [r.outcome for _, r in results.seen] == [Outcome.NACKED] * 3 + [
        Outcome.TIMEOUT,
        Outcome.ACKED,
    ]
    # A channel not handed out by channel() is not watched.
    assert link._observe(Channel(), results) is results


async def test_a_channel_with_only_nacks_is_replaced_on_the_same_connection(
    link: AmqpLink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aioproducer.connection")
    errors: list[str] = []
    link._on_error = errors.append
    connection = Connection()
    old = RobustChannel()
    link._connection = connection  # type: ignore[assignment]
    link._channels["live"] = old  # type: ignore[assignment]
    run = watched(link, Channel())
    run.count, run.since = 5, 10.0
    link._replaced["live"] = 2
    await link._replace("live", run, 12.5)
    (new,) = connection.opened
    assert link._channels["live"] is cast(Any, new) and old.closed
    assert link._replaced["live"] == 3
    assert new.close_callbacks == {link._on_channel_event}
    assert new.reopen_callbacks == {link._on_channel_event}
    assert errors == [
        "the live channel to amqp://app:***@rabbit:5672/ nacked every publish; replaced"
    ]
    assert [r.getMessage() for r in caplog.records] == [
        "the live channel to amqp://app:***@rabbit:5672/ nacked every publish (5 in a row, "
        "for 2.5s); replacing it with a new channel"
    ]


async def test_a_replacement_that_cannot_open_keeps_the_channel_and_waits_a_span(
    link: AmqpLink, caplog: pytest.LogCaptureFixture
) -> None:
    connection = Connection(fail=True)
    old = RobustChannel()
    link._connection = connection  # type: ignore[assignment]
    link._channels["replay"] = old  # type: ignore[assignment]
    run = watched(link, Channel(), "replay")
    run.count, run.since = 5, 10.0
    errors: list[str] = []
    link._on_error = errors.append
    with caplog.at_level(logging.WARNING, logger="aioproducer.connection"):
        await link._replace("replay", run, 12.5)
    assert link._channels["replay"] is cast(Any, old) and not old.closed
    assert run.since == 12.5 and not run.stuck(13.0)
    assert link._replaced.get("replay", 0) == 0
    assert errors[-1] == (
        "opening the replay channel failed: ChannelInvalidStateError('connection closed')"
    )
    assert caplog.records[-1].getMessage() == (
        "opening the replay channel failed: ChannelInvalidStateError('connection closed')"
    )


class OpenChannel(RobustChannel):
    """A robust channel that is open, over an aiormq channel on an unblocked connection."""

    def __init__(self) -> None:
        super().__init__()
        self.is_closed = False
        underlay: Any = Channel()
        underlay.connection = object()  # not blocked
        self.underlay = underlay

    async def get_underlay_channel(self) -> Any:
        return self.underlay


class OpenConnection(Connection):
    """A connected robust connection whose new channels are open."""

    def __init__(self) -> None:
        super().__init__()
        self.connected = asyncio.Event()
        self.connected.set()
        self.transport = None
        self.made: list[OpenChannel] = []

    async def channel(self, **kwargs: Any) -> OpenChannel:
        channel = OpenChannel()
        self.made.append(channel)
        return channel


def test_a_channel_that_nacks_everything_for_its_span_is_replaced_each_span_twice_longer(
    loop: VirtualClockLoop,
) -> None:
    link = loop.call(
        lambda: AmqpLink("amqp://app:s3cret@rabbit:5672/", backoff=Backoff(), name="test")
    )
    connection = OpenConnection()
    link._connection = connection  # type: ignore[assignment]
    link._channels["live"] = first = OpenChannel()  # type: ignore[assignment]
    results = Results()

    def told(underlay: Any, *outcomes: Outcome) -> None:
        def observe() -> None:  # on the loop, as the link's publishes report
            on_result = link._observe(underlay, results)
            for outcome in outcomes:
                on_result(message(1), Result(outcome, outcome.value))

        loop.call(observe)

    def nacked(underlay: Any) -> None:
        told(underlay, Outcome.NACKED, Outcome.NACKED, Outcome.NACKED)

    def channel() -> Any:
        return loop.run(link.channel("live"), within=2.0)

    underlay = channel()
    assert underlay is first.underlay
    # One second of nacks (nack_span(0)), then the next use replaces the channel.
    nacked(underlay)
    loop.drive(within=0.9)
    assert channel() is underlay
    loop.drive(within=0.1)
    underlay = channel()
    assert [c.underlay for c in connection.made] == [underlay] and first.closed
    # Its replacement is given two seconds (nack_span(1)).
    nacked(underlay)
    loop.drive(within=1.9)
    assert channel() is underlay
    loop.drive(within=0.1)
    underlay = channel()
    assert [c.underlay for c in connection.made][1:] == [underlay]
    # A confirm on the new channel ends the doubling: the next span is one second again.
    told(underlay, Outcome.ACKED)
    assert link._replaced["live"] == 0
    # While the connection is down, no channel is handed out, open as it may look.
    connection.connected.clear()
    waiting = loop.drive(link.channel("live"), within=1.5)
    assert not waiting.done()
    connection.connected.set()
    loop.drive(within=1.0)
    assert waiting.result() is underlay


async def test_no_replacement_without_a_channel_to_replace(link: AmqpLink) -> None:
    connection = Connection()
    link._connection = connection  # type: ignore[assignment]
    run = watched(link, Channel())
    run.count, run.since = 5, 10.0
    await link._replace("live", run, 12.5)
    assert connection.opened == [] and "live" not in link._channels


async def test_a_replaced_channel_that_does_not_close_is_left_after_the_connect_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    link = AmqpLink("amqp://app:s3cret@rabbit:5672/", backoff=Backoff(), connect_timeout=0.05)

    class Stuck(RobustChannel):
        async def close(self) -> None:
            await asyncio.Event().wait()

    connection = Connection()
    link._connection = connection  # type: ignore[assignment]
    link._channels["live"] = Stuck()  # type: ignore[assignment]
    run = watched(link, Channel())
    run.count, run.since = 5, 10.0
    with caplog.at_level(logging.DEBUG, logger="aioproducer.connection"):
        await asyncio.wait_for(link._replace("live", run, 12.5), 10)
    assert link._channels["live"] is cast(Any, connection.opened[0])
    assert link._replaced["live"] == 1
    assert caplog.records[-1].getMessage() == (
        "closing the replaced live channel failed: TimeoutError()"
    )


async def test_without_the_batched_path_each_message_is_published_on_its_own(
    link: AmqpLink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback for an aiormq the batched path does not know: a task per message."""
    monkeypatch.setattr("aioproducer._connection.BATCHED", False)
    channel: Any = OneByOne(commands.Basic.Ack(delivery_tag=1))
    results = Results()
    messages = [message(n) for n in range(3)]
    sent = send(link, channel, messages, results, mandatory=True)
    assert not sent.done
    await sent.written()
    await wait_until(lambda: sent.done, timeout=10, every=0)
    assert [c["body"] for c in channel.calls] == [m.body for m in messages]
    # The producer's defaults and the timeout reach each publish.
    assert {
        (c["mandatory"], c["properties"].delivery_mode, c["timeout"]) for c in channel.calls
    } == {(True, 2, 60.0)}
    assert results.outcomes() == {m.message_id: Outcome.ACKED for m in messages}


async def test_an_abandoned_one_by_one_send_stops_its_publishes(
    link: AmqpLink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("aioproducer._connection.BATCHED", False)
    started = asyncio.Event()

    hanging: Any = Hanging(started)
    results = Results()
    sent = send(link, hanging, [message(1), message(2)], results)
    await started.wait()
    assert not sent.done
    sent.abandon()
    await wait_until(lambda: sent.done, timeout=10, every=0)
    assert results.seen == []


#: A returned message whose frame carries no code or text, and one with empty ones.
BARE = [
    (object(), Result(Outcome.RETURNED, "0 returned", 0)),
    (commands.Basic.Return(reply_code=0, reply_text=""), Result(Outcome.RETURNED, "0 returned", 0)),
]


@pytest.mark.parametrize(("delivery", "expected"), BARE, ids=["no-fields", "empty-fields"])
async def test_a_return_without_code_or_text_is_still_a_return(
    link: AmqpLink, delivery: Any, expected: Result
) -> None:
    assert await publish_one(link, returned_with(delivery)) == expected
    channel = Channel()
    results = Results()
    send(link, channel, [message(1)], results)
    channel.confirmations[1].set_result(returned_with(delivery))
    assert [r for _, r in results.seen] == [expected]


async def test_the_producer_s_mandatory_and_persistent_apply_when_the_message_sets_none(
    link: AmqpLink,
) -> None:
    one: Any = OneByOne(commands.Basic.Ack(delivery_tag=1))
    m = message(1)
    await link.publish(one, m, mandatory=True, persistent=True, timeout=3.0)
    (call,) = one.calls
    assert call["mandatory"] is True and call["properties"].delivery_mode == 2
    channel = Channel()
    send(link, channel, [m], Results(), mandatory=True)
    expected: list[bytes] = []
    publish_frames(7, m, message_properties(m, persistent=True), True, 4, expected)
    frame = channel.write_queue.get_nowait()
    assert frame.payload == b"".join(expected)
    assert frame.should_close is False
    # The routing key "q", then the mandatory bit.
    assert b"\x01q\x01\xce" in frame.payload


async def test_a_message_whose_headers_cannot_be_encoded_fails_alone_one_at_a_time(
    link: AmqpLink,
) -> None:
    m = message(1)
    m.headers = {"x": object()}
    m.headers_wire = None
    one: Any = OneByOne(commands.Basic.Ack(delivery_tag=1))
    result = await link.publish(one, m, mandatory=False, persistent=True, timeout=3.0)
    assert result.outcome is Outcome.FAILED
    assert result.detail.startswith("properties could not be encoded: ")
    assert result.detail != "properties could not be encoded: NoneType"
    assert one.calls == []


async def test_an_unexpected_error_is_logged_by_type_without_its_text(
    link: AmqpLink, caplog: pytest.LogCaptureFixture
) -> None:
    m = message(1)
    assert await publish_one(link, ValueError("secret value"), m) == Result(
        Outcome.FAILED, "ValueError while publishing"
    )
    (record,) = [r for r in caplog.records if r.name == "aioproducer.connection"]
    text = record.getMessage()
    assert text.startswith(f"publishing message {m.message_id} failed unexpectedly\n")
    assert text.endswith("ValueError") and "secret value" not in text


def test_headers_are_encoded_once_and_kept_on_the_message() -> None:
    m = message(1)
    m.headers = {"tenant": "a", "n": 1}
    m.headers_wire = None
    properties = message_properties(m, persistent=True)
    assert m.headers_wire is not None and len(m.headers_wire) > 4
    assert properties.encode_property("headers", None) == m.headers_wire
    assert m.headers_wire == encode_headers_wire(m.headers)
    # Without headers, none go on the wire.
    assert message_properties(message(2), persistent=True).headers is None


def test_the_timestamp_is_the_message_s_whole_second_in_utc() -> None:
    m = message(1)
    m.timestamp = 1_700_000_123.9
    stamp = message_properties(m, persistent=True).timestamp
    assert isinstance(stamp, datetime) and stamp.tzinfo is UTC
    assert stamp == datetime(2023, 11, 14, 22, 15, 23, tzinfo=UTC)


def test_short_strings_are_up_to_255_bytes() -> None:
    out: list[bytes] = []
    m = message(1, routing_key="k" * 255)
    publish_frames(1, m, message_properties(m, persistent=True), False, 4096, out)
    assert b"\xff" + b"k" * 255 in b"".join(out)
    with pytest.raises(ValueError, match="longer than 255 bytes"):
        publish_frames(
            1,
            message(2, routing_key="k" * 256),
            message_properties(m, persistent=True),
            False,
            4096,
            [],
        )


def test_is_blocked_reads_aiormq_s_unblocked_event() -> None:
    class Amqp:
        def __init__(self, event: asyncio.Event | None) -> None:
            if event is not None:
                self._Connection__connection_unblocked = event

    unblocked = asyncio.Event()
    assert _is_blocked(Amqp(unblocked)) is True  # type: ignore[arg-type]
    unblocked.set()
    assert _is_blocked(Amqp(unblocked)) is False  # type: ignore[arg-type]
    assert _is_blocked(Amqp(None)) is False  # type: ignore[arg-type]


def test_every_missing_internal_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_internals() == []
    monkeypatch.delattr(aiormq.Channel, "_on_return_frame")
    monkeypatch.setattr("aioproducer._connection.CHANNEL_FIELDS", ("confirmations", "gone"))
    monkeypatch.setattr(aiormq.abc.ChannelFrame, "__dataclass_fields__", {"payload": None})
    assert check_internals() == [
        "Channel._on_return_frame()",
        "Channel.gone",
        "ChannelFrame.should_close",
        "ChannelFrame.drain_future",
    ]
    monkeypatch.delattr(aiormq.abc.ChannelFrame, "__dataclass_fields__")
    assert "ChannelFrame.payload" in check_internals()


async def test_a_batch_with_nothing_sendable_needs_no_waiting_or_abandoning(
    link: AmqpLink,
) -> None:
    channel = Channel()
    results = Results()
    sent = send(link, channel, [message(1, routing_key="k" * 256)], results)
    assert sent.done
    await asyncio.wait_for(sent.written(), 10)
    sent.abandon()
    assert channel.write_queue.empty() and len(results.seen) == 1


async def test_a_closed_channel_names_itself_in_what_it_lost(link: AmqpLink) -> None:
    channel = Channel()
    channel.is_closed = True
    results = Results()
    send(link, channel, [message(1)], results)
    assert results.seen[0][1] == Result(Outcome.LOST, f"{channel!r} closed")


async def test_the_last_unconfirmed_message_still_times_out(link: AmqpLink) -> None:
    channel = Channel()
    results = Results()
    messages = [message(1), message(2)]
    sent = send(link, channel, messages, results, timeout=0.05)
    channel.confirmations[1].set_result(commands.Basic.Ack(delivery_tag=1))
    assert not sent.done and not channel.futures[0].done()
    await wait_until(lambda: sent.done, timeout=10, every=0)
    assert results.outcomes()[messages[1].message_id] is Outcome.TIMEOUT


async def test_written_gives_up_at_the_timeout_on_a_socket_that_takes_nothing(
    link: AmqpLink,
) -> None:
    channel = Channel()
    sent = send(link, channel, [message(1)], Results(), timeout=0.05)
    await asyncio.wait_for(sent.written(), 10)
    assert sent.done


async def test_a_batch_future_resolved_without_an_error_loses_the_rest(link: AmqpLink) -> None:
    channel = Channel()
    results = Results()
    sent = send(link, channel, [message(1)], results)
    channel.futures[0].set_result(None)
    await wait_until(lambda: sent.done, timeout=10, every=0)
    assert [r for _, r in results.seen] == [Result(Outcome.LOST, "channel closed")]


async def test_a_raising_on_result_is_logged_by_type_only(
    link: AmqpLink, caplog: pytest.LogCaptureFixture
) -> None:
    channel: Any = Channel()

    secret = "secret value"

    def on_result(m: Message, result: Result) -> None:
        raise RuntimeError(secret)

    m = message(1)
    link.send(channel, [m], mandatory=False, persistent=True, timeout=60, on_result=on_result)
    channel.confirmations[1].set_result(commands.Basic.Ack(delivery_tag=1))
    (record,) = [r for r in caplog.records if r.name == "aioproducer.connection"]
    text = record.getMessage()
    assert text.startswith(f"settling message {m.message_id} failed\nTraceback")
    assert text.endswith("RuntimeError") and "secret value" not in text
