"""A message as the caller describes it, before it is checked: for publish_many and middleware."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from ._settlement import Settlement


@dataclass(slots=True)
class Outgoing:
    """One message to publish, with the arguments :meth:`Producer.publish` takes.

    An item of :meth:`Producer.publish_many`, and what a middleware sees (and may
    change) before the message is serialised and checked.
    """

    body: Any
    routing_key: str = ""
    exchange: str | None = None
    headers: Mapping[str, Any] | None = None
    message_id: str | None = None
    content_type: str | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: int | timedelta | str | None = None
    type: str | None = None
    app_id: str | None = None
    user_id: str | None = None
    content_encoding: str | None = None
    persistent: bool | None = None
    mandatory: bool | None = None


def outgoing_batch(items: Iterable[Any], shared: Outgoing) -> list[Outgoing]:
    """The items of a ``publish_many()`` call as :class:`Outgoing` messages: each one
    that is not already one is a body, sent with the arguments of ``shared``."""
    return [
        item if isinstance(item, Outgoing) else dataclasses.replace(shared, body=item)
        for item in items
    ]


class Finish(Protocol):
    """Told how a message a middleware saw ended: its :class:`Settlement`; the exception
    publish() raised for it (nothing was accepted); or None when the producer closed
    before the message settled."""

    def __call__(self, outcome: Settlement | BaseException | None, /) -> None: ...


class Middleware(Protocol):
    """Runs in publish() before the message is checked: may change the :class:`Outgoing`
    (add headers, say) and may return a :class:`Finish` callback."""

    def __call__(self, outgoing: Outgoing, /) -> Finish | None: ...
