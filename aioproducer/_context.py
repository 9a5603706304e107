"""What the parts of a producer share: settings, buffer, store, link, counters and health."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ._buffer import Buffer, Observer
from ._config import Settings, format_exception, mask
from ._exceptions import StoreError
from ._link import Link, Outcome, Result
from ._message import Message
from ._stores._base import Store

log = logging.getLogger("aioproducer.producer")

#: Longest ``last_error`` text kept.
_ERROR_TEXT_LIMIT = 300


@dataclass(slots=True)
class Counters:
    """The producer's running totals (see :class:`~aioproducer.ProducerStats`)."""

    accepted: int = 0
    confirmed: int = 0
    spilled: int = 0
    replayed: int = 0
    returned: int = 0
    nacked: int = 0
    channel_errors: int = 0
    failed: int = 0
    retried: int = 0
    exported: int = 0
    store_errors: int = 0
    unstorable: int = 0
    dead: int = 0


class Context:
    """The state the live publisher, the spiller and the replayer work on together."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        owner: str,
        *,
        observer: Observer | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.owner = owner
        self.buffer = Buffer(
            capacity=settings.max_buffer,
            high_water=max(1, int(settings.max_buffer * settings.high_water)),
            max_bytes=settings.max_buffer_bytes,
            observer=observer,
        )
        self.counters = Counters()
        self.link: Link | None = None
        self.store_ok = True
        self.last_error: str | None = None
        #: Set when something was stored, to wake the replayer.
        self.stored = asyncio.Event()
        #: Ids of stored copies whose message the broker confirmed after all.
        self.redundant: list[str] = []
        #: Wall-clock seconds; shared with other hosts through the store.
        self.wall: Callable[[], float] = time.time
        self._loop = asyncio.get_running_loop()

    def now(self) -> float:
        """Monotonic seconds, the event loop's clock."""
        return self._loop.time()

    def record_error(self, text: str) -> None:
        """Keep ``text`` (masked, shortened) as the latest connection or store error."""
        text = mask(text)
        if len(text) > _ERROR_TEXT_LIMIT:
            text = text[: _ERROR_TEXT_LIMIT - 3] + "..."
        self.last_error = text

    def store_failed(self, exc: BaseException) -> None:
        if self.store_ok:
            log.warning(
                "producer %s: store %r failing: %s",
                self.owner,
                self.store,
                describe_store_error(exc),
            )
        self.store_ok = False
        self.counters.store_errors += 1
        self.record_error(f"store: {describe_store_error(exc)}")

    def store_worked(self) -> None:
        if not self.store_ok:
            log.info("producer %s: store %r is back", self.owner, self.store)
        self.store_ok = True

    def count_failure(self, outcome: Outcome) -> None:
        counters = self.counters
        if outcome is Outcome.RETURNED:
            counters.returned += 1
        elif outcome is Outcome.NACKED:
            counters.nacked += 1
        elif outcome is Outcome.CHANNEL_ERROR:
            counters.channel_errors += 1
        elif outcome is Outcome.FAILED:
            counters.failed += 1
        else:
            counters.retried += 1

    def fail(self, message: Message, result: Result) -> float:
        """Record a failure of ``message``'s own; return the seconds until it may be retried.

        Marks it ``dead`` once it has failed ``max_attempts`` times.
        """
        message.attempts += 1
        message.last_error = f"{result.outcome.value}: {result.detail}"[:_ERROR_TEXT_LIMIT]
        limit = self.settings.max_attempts
        if limit is not None and message.attempts >= limit and not message.copying:
            message.dead = True
            log.warning(
                "producer %s: message %s failed %d times (%s); keeping it as dead",
                self.owner,
                message.message_id,
                message.attempts,
                message.last_error,
            )
        return self.settings.retry_backoff.delay(message.attempts - 1)


def describe_store_error(exc: BaseException) -> str:
    """A store error's text; of an error the store did not translate, its type only.

    (An untranslated error's text may quote a value of a message.)
    """
    return str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__} from the store"


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    context: Context,
    *,
    clean_after: float = 30.0,
) -> None:
    """Run a background loop; an exception that escapes it is logged and the loop restarted.

    Restarts back off (``store_backoff``); the backoff starts again once the loop has
    run ``clean_after`` seconds without failing.
    """
    failures = 0
    while True:
        started = context.now()
        try:
            await run()
        except Exception as exc:
            if context.now() - started >= clean_after:
                failures = 0
            delay = context.settings.store_backoff.delay(failures)
            failures += 1
            # The type only, as in the log line: the text may quote a value of a message.
            context.record_error(f"{name} task failed: {type(exc).__qualname__}")
            log.error(
                "producer %s: %s task failed; restarting it in %.1fs\n%s",
                context.owner,
                name,
                delay,
                format_exception(exc, with_text=False),
            )
            await asyncio.sleep(delay)
        else:
            return
