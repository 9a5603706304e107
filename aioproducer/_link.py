"""What the producer's policy needs of a link to the broker, and how a publish can end.

:class:`~aioproducer._connection.AmqpLink` is the link over aio-pika; tests drive
the same policy through other implementations of :class:`Link`.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ._message import Message


class Outcome(enum.Enum):
    """How one publish ended."""

    ACKED = "acked"
    NACKED = "nacked"
    RETURNED = "returned"
    CHANNEL_ERROR = "channel_error"
    LOST = "lost"
    TIMEOUT = "timeout"
    FAILED = "failed"
    """The client could not send this message (an error of its own, not the link's)."""


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one publish, with the broker's reply code and text if any."""

    outcome: Outcome
    detail: str = ""
    code: int = 0
    missing_exchange: str | None = None


ACKED = Result(Outcome.ACKED)

ErrorSink = Callable[[str], None]

#: Told how each message of a :meth:`Link.send` ended, once per message.
OnResult = Callable[[Message, Result], None]


class Sent(Protocol):
    """The publishes of one :meth:`Link.send`, their confirms still coming in."""

    async def written(self) -> None:
        """Return once the frames are handed to the connection (or could not be)."""

    def abandon(self) -> None:
        """Stop reporting: ``on_result`` is not called again for these messages."""

    @property
    def done(self) -> bool:
        """Whether every message has been reported (or the batch abandoned)."""


class Link(Protocol):
    """A connection to the broker with named publishing channels (``live``, ``replay``)."""

    @property
    def connected(self) -> bool:
        """Whether the connection is up."""

    @property
    def address(self) -> str | None:
        """The broker address connected to, its password masked; None while not connected."""

    @property
    def blocked(self) -> bool:
        """Whether the broker has blocked the connection (a resource alarm)."""

    @property
    def connections(self) -> int:
        """Connections made, the first one included."""

    def start(self) -> None:
        """Connect in the background; return at once."""

    async def channel(self, which: str) -> Any:
        """Wait until channel ``which`` can take publishes; return it."""

    async def publish(
        self,
        channel: Any,
        message: Message,
        *,
        mandatory: bool,
        persistent: bool,
        timeout: float,
    ) -> Result:
        """Publish ``message`` on ``channel``; wait for its confirm at most ``timeout`` s.

        ``mandatory`` and ``persistent`` are the producer's defaults; the message's own
        properties win. Never raises but for the calling task's own cancellation.
        """

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
        """Publish ``messages`` on ``channel`` at once; report each outcome to ``on_result``.

        ``mandatory`` and ``persistent`` are defaults, as for :meth:`publish`.
        Returns without waiting; ``on_result`` is called once per message when its
        confirm (or failure, or ``timeout``) comes, possibly before this returns.
        """

    async def close(self, timeout: float) -> None:
        """Close the connection, waiting at most ``timeout`` seconds for the broker."""


class _EachSent:
    """A :class:`Sent` made of one task per message, each awaiting :meth:`Link.publish`."""

    def __init__(self, tasks: list[asyncio.Task[None]]) -> None:
        self._tasks = tasks

    async def written(self) -> None:
        # Let the publishes write their frames before the caller takes more.
        await asyncio.sleep(0)

    def abandon(self) -> None:
        for task in self._tasks:
            task.cancel()

    @property
    def done(self) -> bool:
        return all(task.done() for task in self._tasks)


def send_each(
    link: Link,
    channel: Any,
    messages: Sequence[Message],
    *,
    mandatory: bool,
    persistent: bool,
    timeout: float,
    on_result: OnResult,
) -> Sent:
    """:meth:`Link.send` for a link that publishes one message at a time."""

    async def one(message: Message) -> None:
        result = await link.publish(
            channel, message, mandatory=mandatory, persistent=persistent, timeout=timeout
        )
        on_result(message, result)

    return _EachSent([asyncio.create_task(one(message)) for message in messages])
