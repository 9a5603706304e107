"""What the producer's policy needs of a link to the broker, and how a publish can end.

:class:`~aioproducer._connection.AmqpLink` is the link over aio-pika; tests drive
the same policy through other implementations of :class:`Link`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
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

        Never raises but for the calling task's own cancellation.
        """

    async def close(self, timeout: float = ...) -> None:
        """Close the connection, waiting at most ``timeout`` seconds for the broker."""
