"""ThreadedProducer: the producer for threaded code (Flask, Django, WSGI servers, scripts).

One background thread runs an event loop with a :class:`~aioproducer.Producer` in it.
``publish()`` may be called from any thread; it never waits on the broker, the store
or the loop::

    caller's thread                                loop thread
    ───────────────                                ───────────
    Producer._build(...)   serialise and check:
        bad input raises here, nothing shared
    Admission.admit(message)  ── tiny lock ──      (counters, two dicts, a list)
        closed?   -> ProducerClosed
        full?     -> BufferFull  (count and bytes)
        id in use -> InvalidMessage
        count it, queue it
    first in the queue? ── call_soon_threadsafe ─► drain(): take the queue (tiny lock),
                                                    Producer._accept(m): buffer.add
    return message_id                               ...
                                                    buffer moves ─► Admission.observe:
                                                      settled: count and bytes freed;
                                                      off the wire too: the id is free

:class:`Admission` counts every message from the moment it is admitted until the
buffer settles it, so it holds at least what the buffer holds: the buffer can never
refuse a message the admission let in, and ``BufferFull`` is raised in the caller's
thread, at once. The lock is held for a few dictionary operations only.

A fork (gunicorn's pre-fork model) leaves the child with a copy of the parent's loop,
connection and store objects but none of its threads: the child never touches them
(the loop's selector is pointed at a fresh one of its own, so not even a finaliser can
change the parent's registrations), and its first ``publish()`` starts a producer of
its own. ``atexit`` closes every running ThreadedProducer: the rest is stored, the
fallback file last.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import os
import selectors
import signal
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from types import FrameType, TracebackType
from typing import Any, ParamSpec, Self, TypeVar

from ._exceptions import BufferFull, InvalidMessage, ProducerClosed, UnknownMessage
from ._fallback import write_fallback
from ._message import Message, State
from ._outgoing import Finish, Outgoing, outgoing_batch
from ._producer import (
    CLOSE_MARGIN,
    Producer,
    ProducerState,
    ProducerStats,
    _call_finish,
    _empty_stats,
)
from ._settlement import OUTCOMES, RECENT_OUTCOMES, Settlement
from ._stores._base import Store
from ._stores._sqlite import SQLiteStore

log = logging.getLogger("aioproducer.threaded")

P = ParamSpec("P")
T = TypeVar("T")

#: Seconds a caller waits, past the bound of the work itself, for the loop thread to
#: answer (stats, flush) or to finish (close). Only a wedged loop ever needs them.
LOOP_GRACE = 5.0

StoreSpec = Store | Callable[[], Store]

#: Moves after which a message is no longer counted in memory.
_SETTLED = frozenset({State.CONFIRMED, State.STORED, State.STORED_IN_FLIGHT, State.DEAD})


class Admission:
    """What the caller's thread checks and hands over, under one small lock.

    ``count`` and ``bytes`` cover every message admitted and not yet settled, whether
    still in the hand-off queue or in the buffer; an id stays in use until its
    message is settled *and* no publish of it is on the wire (the buffer's own rule).
    The loop thread calls :meth:`take` to drain the queue into the buffer and
    :meth:`observe` (the buffer's observer) as messages move.
    """

    def __init__(self, *, capacity: int, max_bytes: int | None) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0
        self.closed: str | None = None
        self._lock = threading.Lock()
        self._unsettled: dict[str, Message] = {}
        self._in_use: dict[str, Message] = {}
        self._queue: list[Message] = []
        self._queued_bytes = 0
        self._waking = False
        self._waiters: dict[str, tuple[Message, concurrent.futures.Future[Settlement | None]]] = {}
        #: How the latest messages settled, for a settled() that comes after the fact
        #: (the caller's thread may be descheduled between publish() and settled()).
        self._recent: collections.OrderedDict[str, Settlement] = collections.OrderedDict()

    @property
    def count(self) -> int:
        """Messages admitted and not yet settled."""
        return len(self._unsettled)

    def admit(self, message: Message) -> bool:
        """Count and queue ``message``, or raise, changing nothing.

        True when the caller must wake the loop (the queue was idle); later callers
        ride on the same wake-up until the loop takes the queue.
        """
        with self._lock:
            if self.closed is not None:
                raise ProducerClosed(self.closed)
            unsettled = self._unsettled
            if len(unsettled) >= self.capacity:
                raise BufferFull(self.capacity)
            size = message.size
            if self.max_bytes is not None and self.bytes + size > self.max_bytes and unsettled:
                raise BufferFull(self.capacity, self.max_bytes)
            message_id = message.message_id
            if message_id in self._in_use:
                raise InvalidMessage(
                    f"message_id {message_id!r} is already in use, not yet settled"
                )
            unsettled[message_id] = message
            self._in_use[message_id] = message
            self.bytes += size
            self._queue.append(message)
            self._queued_bytes += size
            if self._waking:
                return False
            self._waking = True
            return True

    def admit_all(self, messages: list[Message]) -> bool:
        """Count and queue every message of ``messages``, or raise, changing nothing.

        True when the caller must wake the loop, as for :meth:`admit`.
        """
        with self._lock:
            if self.closed is not None:
                raise ProducerClosed(self.closed)
            unsettled = self._unsettled
            if len(unsettled) + len(messages) > self.capacity:
                raise BufferFull(self.capacity)
            size = sum(m.size for m in messages)
            if (
                self.max_bytes is not None
                and self.bytes + size > self.max_bytes
                and (unsettled or len(messages) > 1)
            ):
                raise BufferFull(self.capacity, self.max_bytes)
            ids = {m.message_id for m in messages}
            if len(ids) < len(messages) or not ids.isdisjoint(self._in_use):
                taken = next(
                    m.message_id
                    for i, m in enumerate(messages)
                    if m.message_id in self._in_use
                    or any(o.message_id == m.message_id for o in messages[:i])
                )
                raise InvalidMessage(f"message_id {taken!r} is already in use, not yet settled")
            for message in messages:
                unsettled[message.message_id] = message
                self._in_use[message.message_id] = message
            self.bytes += size
            self._queue.extend(messages)
            self._queued_bytes += size
            if self._waking:
                return False
            self._waking = True
            return True

    def waiter(self, message_id: str) -> concurrent.futures.Future[Settlement | None]:
        """A future that the first settlement of the admitted message ``message_id`` resolves.

        Raises :class:`UnknownMessage` when no such message is unsettled.
        """
        with self._lock:
            message = self._unsettled.get(message_id)
            if message is None:
                outcome = self._recent.get(message_id)
                if outcome is None:
                    raise UnknownMessage(message_id)
                done: concurrent.futures.Future[Settlement | None] = concurrent.futures.Future()
                done.set_result(outcome)
                return done
            return self._waiter(message)

    def _waiter(self, message: Message) -> concurrent.futures.Future[Settlement | None]:
        entry = self._waiters.get(message.message_id)
        if entry is not None and entry[0] is message:
            return entry[1]
        future: concurrent.futures.Future[Settlement | None] = concurrent.futures.Future()
        self._waiters[message.message_id] = (message, future)
        return future

    def waiters_for(
        self, messages: list[Message]
    ) -> list[concurrent.futures.Future[Settlement | None]]:
        """Futures for admitted ``messages`` (some may have settled: theirs are resolved)."""
        futures = []
        with self._lock:
            for message in messages:
                future = self._waiter(message)
                if self._unsettled.get(message.message_id) is not message:
                    # Settled before this call: its state says how.
                    del self._waiters[message.message_id]
                    future.set_result(OUTCOMES.get(message.state))
                futures.append(future)
        return futures

    def close_waiters(self) -> None:
        """The producer closed: wake every waiter left (None: not settled)."""
        with self._lock:
            waiters, self._waiters = self._waiters, {}
        for _message, future in waiters.values():
            if not future.done():
                future.set_result(None)

    def take(self) -> list[Message]:
        """The queued messages, oldest first; the next admit wakes the loop again."""
        with self._lock:
            batch, self._queue = self._queue, []
            self._queued_bytes = 0
            self._waking = False
        return batch

    def queued(self) -> tuple[int, int]:
        """Messages, and their bytes, admitted but not yet taken into the buffer."""
        with self._lock:
            return len(self._queue), self._queued_bytes

    def close(self, reason: str) -> None:
        """Refuse every later :meth:`admit` with ``ProducerClosed(reason)``."""
        with self._lock:
            self.closed = reason

    def observe(self, message: Message, state: State) -> None:
        """A buffer move: a settled message frees its room, and its id once off the wire."""
        if state not in _SETTLED:
            return
        message_id = message.message_id
        waiter = None
        with self._lock:
            # Identity, not id: a replayed copy of an old message may share the id of a
            # newer one admitted since.
            if self._unsettled.get(message_id) is message:
                del self._unsettled[message_id]
                self.bytes -= message.size
                recent = self._recent
                recent[message_id] = OUTCOMES[state]
                if len(recent) > RECENT_OUTCOMES:
                    recent.popitem(last=False)
            if state is not State.STORED_IN_FLIGHT and self._in_use.get(message_id) is message:
                del self._in_use[message_id]
            if self._waiters:
                entry = self._waiters.get(message_id)
                if entry is not None and entry[0] is message:
                    del self._waiters[message_id]
                    waiter = entry[1]
        if waiter is not None and not waiter.done():
            waiter.set_result(OUTCOMES[state])

    def release(self, message: Message) -> None:
        """Forget ``message`` entirely (it left memory by another way than the buffer)."""
        with self._lock:
            if self._unsettled.get(message.message_id) is message:
                del self._unsettled[message.message_id]
                self.bytes -= message.size
            if self._in_use.get(message.message_id) is message:
                del self._in_use[message.message_id]


class ThreadedProducer:
    """A :class:`~aioproducer.Producer` in a background thread, for code that is not async.

    Takes the same options as ``Producer``; ``store`` may also be a callable that
    builds the store, called once in each process that starts a producer (the safe
    choice when the process forks). ``close_timeout`` is what ``with``, ``atexit``
    and SIGTERM (see :meth:`close_on_sigterm`) give :meth:`close`.

    ``publish()``, ``stats()``, ``flush()`` and ``close()`` may be called from any
    thread; ``flush()`` and ``close()`` wait, so they refuse to run on the producer's
    own loop thread. After ``os.fork()`` the child's first ``publish()`` starts its
    own producer; the parent's is never touched from the child.
    """

    def __init__(
        self,
        url: str | Sequence[str] = "amqp://guest:guest@127.0.0.1:5672/",
        *,
        store: StoreSpec | None = None,
        close_timeout: float = 10.0,
        **options: Any,
    ) -> None:
        self.url = url
        self.close_timeout = close_timeout
        self._options = options
        self._store_spec = store
        #: The process that used a given store instance (a child builds its own).
        self._store_user: int | None = None
        self._pid = os.getpid()
        self._life = threading.Lock()
        self._state = ProducerState.NEW
        #: The parent ran a producer when this process forked: start one on demand.
        self._forked = False
        # Built here so that a bad option raises in the constructor.
        self._producer: Producer | None = self._new_producer()
        self._admission: Admission | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._selector: selectors.BaseSelector | None = None
        self._thread: threading.Thread | None = None
        self._closing: concurrent.futures.Future[None] | None = None
        self._final: ProducerStats | None = None
        self._stranded: list[Message] = []
        _instances.add(self)

    def __repr__(self) -> str:
        owner = self._producer.owner if self._producer is not None else "-"
        return f"<ThreadedProducer {owner} {self._state.value}>"

    @property
    def owner(self) -> str | None:
        """This process's producer's owner id (None in a forked child not started yet)."""
        return self._producer.owner if self._producer is not None else None

    # -- life ------------------------------------------------------------------

    def start(self) -> Self:
        """Start the loop thread and the producer in it; returns once the loop runs.

        Does not wait for the broker. Idempotent; a closed producer cannot start again.
        """
        if self._state is ProducerState.RUNNING and self._pid == os.getpid():
            return self
        self._check_fork()
        with self._life:
            if self._state is ProducerState.RUNNING:
                return self
            if self._state is not ProducerState.NEW:
                raise ProducerClosed("a closed producer cannot be started again")
            if self._producer is None:
                self._producer = self._new_producer()
            producer = self._producer
            settings = producer._settings
            admission = Admission(capacity=settings.max_buffer, max_bytes=settings.max_buffer_bytes)
            previous = producer._observer
            if previous is None:
                producer._observer = admission.observe
            else:

                def both(message: Message, state: State) -> None:
                    previous(message, state)
                    admission.observe(message, state)

                producer._observer = both
            selector = selectors.DefaultSelector()
            loop = asyncio.SelectorEventLoop(selector)
            loop.set_default_executor(_ThreadPerCall())
            ready: concurrent.futures.Future[None] = concurrent.futures.Future()
            thread = threading.Thread(
                target=self._run,
                args=(loop, producer, ready),
                name=f"aioproducer {producer.owner}",
                daemon=True,
            )
            self._selector, self._loop, self._thread = selector, loop, thread
            thread.start()
            try:
                ready.result()
            except BaseException:
                thread.join(LOOP_GRACE)
                self._selector = self._loop = self._thread = None
                self._state = ProducerState.CLOSED
                raise
            self._admission = admission
            self._state = ProducerState.RUNNING
            self._forked = False
        return self

    @staticmethod
    def _run(
        loop: asyncio.AbstractEventLoop,
        producer: Producer,
        ready: concurrent.futures.Future[None],
    ) -> None:
        """The loop thread: start the producer, then run until close() stops the loop."""
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(producer.start())
        except BaseException as exc:
            ready.set_exception(exc)
            loop.close()
            return
        ready.set_result(None)
        try:
            loop.run_forever()
        finally:
            try:
                left = asyncio.all_tasks(loop)
                for task in left:
                    task.cancel()
                if left:
                    loop.run_until_complete(asyncio.wait(left, timeout=1.0))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(self.close_timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting, drain to the broker, store the rest, stop the thread; idempotent.

        ``publish()`` raises ``ProducerClosed`` from the moment close() begins; what was
        handed off before is drained, stored or written to the fallback file like
        everything else in memory (see ``Producer.close``). Returns within ``timeout``
        plus ``CLOSE_MARGIN``, plus the time of a fallback file write. Callable from
        any thread but the producer's own loop thread (RuntimeError there).
        """
        self._refuse_on_loop("close")
        self._check_fork()
        with self._life:
            state = self._state
            if state is ProducerState.NEW:
                self._state = ProducerState.CLOSED
                self._forked = False
                _instances.discard(self)
                return
            if state is ProducerState.RUNNING:
                assert self._admission is not None and self._loop is not None
                self._state = ProducerState.CLOSING
                self._admission.close("producer is closed")
                self._closing = asyncio.run_coroutine_threadsafe(
                    self._close_in_loop(timeout), self._loop
                )
            closing = self._closing
        if closing is None:
            return
        done, _ = concurrent.futures.wait([closing], timeout + CLOSE_MARGIN + LOOP_GRACE)
        if not done:
            log.error(
                "producer %s: close did not finish within %.1fs; its thread goes on",
                self.owner,
                timeout + CLOSE_MARGIN + LOOP_GRACE,
            )
            return
        if not closing.cancelled() and closing.exception() is not None:
            log.error("producer %s: close failed", self.owner, exc_info=closing.exception())
        self._stop_thread()

    async def _close_in_loop(self, timeout: float) -> None:
        producer = self._producer
        assert producer is not None
        # Everything handed off before close() refused more goes in with the rest.
        self._drain()
        try:
            await producer.close(timeout)
        finally:
            if self._stranded:
                self._write_stranded()
            self._final = producer.stats()
            if self._admission is not None:
                self._admission.close_waiters()

    def _stop_thread(self) -> None:
        with self._life:
            if self._state is not ProducerState.CLOSING:
                return
            loop, thread = self._loop, self._thread
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # already closed
                    loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(LOOP_GRACE)
            self._state = ProducerState.CLOSED
            _instances.discard(self)

    def close_on_sigterm(self) -> None:
        """Make SIGTERM a graceful exit, so that ``atexit`` closes this producer.

        Python's default for SIGTERM ends the process at once, without ``atexit``:
        whatever was in memory would be lost. The handler installed here raises
        ``SystemExit(143)`` in the main thread instead (as Ctrl-C raises
        KeyboardInterrupt); a handler installed before it (a server's own graceful
        shutdown) is called instead and is expected to end the process normally.
        A SIGTERM that arrives while the producers close at exit is ignored.
        Signal handlers can only be installed from the main thread: elsewhere this
        raises ValueError.
        """
        if threading.current_thread() is not threading.main_thread():
            raise ValueError("close_on_sigterm() must be called from the main thread")
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if _exiting.is_set():
                return
            if callable(previous):
                previous(signum, frame)
                return
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, on_sigterm)

    # -- publishing ------------------------------------------------------------

    def publish(
        self,
        body: Any,
        *,
        routing_key: str = "",
        exchange: str | None = None,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        content_type: str | None = None,
        priority: int | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        expiration: int | timedelta | str | None = None,
        type: str | None = None,
        app_id: str | None = None,
        user_id: str | None = None,
        content_encoding: str | None = None,
        persistent: bool | None = None,
        mandatory: bool | None = None,
    ) -> str:
        """Accept a message for delivery and return its ``message_id``; from any thread.

        The same hand-off, and the same arguments, as ``Producer.publish``: serialised
        and checked in the caller's thread, counted, and queued for the loop; no network
        or disk I/O, no lock held across anything slow. Raises at once, accepting
        nothing, for a body that cannot be serialised or is too large, a bad name,
        header, id (also an id still unsettled) or property, a full buffer
        (``BufferFull``) and a producer not started or closed (``ProducerClosed``). In
        a forked child the first call starts the child's own producer.
        """
        admission, producer = self._ready()
        if not producer._middleware:
            properties = producer._properties(
                priority,
                correlation_id,
                reply_to,
                expiration,
                type,
                app_id,
                user_id,
                content_encoding,
                persistent,
                mandatory,
            )
            message = producer._build(
                body, routing_key, exchange, headers, message_id, content_type, properties
            )
            if admission.admit(message):
                self._wake()
            return message.message_id
        outgoing = Outgoing(
            body,
            routing_key,
            exchange,
            headers,
            message_id,
            content_type,
            priority,
            correlation_id,
            reply_to,
            expiration,
            type,
            app_id,
            user_id,
            content_encoding,
            persistent,
            mandatory,
        )
        return self._publish_all([outgoing])[0]

    def publish_many(
        self,
        messages: Iterable[Any],
        *,
        routing_key: str = "",
        exchange: str | None = None,
        headers: Mapping[str, Any] | None = None,
        content_type: str | None = None,
        priority: int | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        expiration: int | timedelta | str | None = None,
        type: str | None = None,
        app_id: str | None = None,
        user_id: str | None = None,
        content_encoding: str | None = None,
        persistent: bool | None = None,
        mandatory: bool | None = None,
    ) -> list[str]:
        """Accept every message of a batch, or none, from any thread (see
        ``Producer.publish_many``); return their ids in order."""
        shared = Outgoing(
            None,
            routing_key,
            exchange,
            headers,
            None,
            content_type,
            priority,
            correlation_id,
            reply_to,
            expiration,
            type,
            app_id,
            user_id,
            content_encoding,
            persistent,
            mandatory,
        )
        return self._publish_all(outgoing_batch(messages, shared))

    def _ready(self) -> tuple[Admission, Producer]:
        """The admission and producer to publish through; raise if closed or not started.

        In a forked child the first call starts the child's own producer.
        """
        if self._pid != os.getpid():
            self._check_fork()
        admission = self._admission
        if admission is None:
            if not self._forked:
                state = self._state
                hint = ": call start() first" if state is ProducerState.NEW else ""
                raise ProducerClosed(f"producer is {state.value}{hint}")
            admission = self.start()._admission
            assert admission is not None
        if admission.closed is not None:
            raise ProducerClosed(admission.closed)
        producer = self._producer
        assert producer is not None
        return admission, producer

    def _wake(self) -> None:
        """Have the loop drain the hand-off queue."""
        loop = self._loop
        assert loop is not None
        try:
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            # The loop has closed: close() refused admissions first, then drained
            # the queue, these messages included, into the buffer it stored.
            pass

    def _publish_all(self, batch: list[Outgoing]) -> list[str]:
        admission, producer = self._ready()
        if not batch:
            return []
        finishes: list[tuple[int, Finish]] = []
        if producer._middleware:
            # Middleware changes copies: the caller's Outgoing objects stay as they were.
            batch = [producer._for_middleware(outgoing) for outgoing in batch]
        try:
            for index, outgoing in enumerate(batch):
                for middleware in producer._middleware:
                    finish = middleware(outgoing)
                    if finish is not None:
                        finishes.append((index, finish))
            messages = [producer._build_outgoing(outgoing) for outgoing in batch]
            wake = (
                admission.admit(messages[0])
                if len(messages) == 1
                else admission.admit_all(messages)
            )
        except BaseException as exc:
            for _index, finish in finishes:
                _call_finish(finish, exc)
            raise
        if wake:
            self._wake()
        if finishes:
            futures = admission.waiters_for([messages[index] for index, _ in finishes])
            for (_index, finish), future in zip(finishes, futures, strict=True):
                future.add_done_callback(functools.partial(_finish_settled, finish))
        return [message.message_id for message in messages]

    def settled(self, message_id: str, *, timeout: float | None = None) -> Settlement:
        """Wait until the message ``message_id`` settles; return how: CONFIRMED, STORED, DEAD.

        The blocking form of ``Producer.settled`` (the same rules): call it after
        publish() returned the id, from any thread but the producer's own loop thread.
        A message that settled already is answered from the outcomes of the latest
        :data:`RECENT_OUTCOMES` settled messages. Raises :class:`UnknownMessage` for
        an id it does not know, TimeoutError after ``timeout`` seconds, and
        ``ProducerClosed`` if the producer closed before the message settled.
        """
        self._refuse_on_loop("settled")
        admission = self._admission
        if admission is None:
            raise ProducerClosed(f"producer is {self._state.value}")
        future = admission.waiter(message_id)
        try:
            outcome = future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"message {message_id} not settled within {timeout}s") from None
        if outcome is None:
            raise ProducerClosed(f"the producer closed before message {message_id} settled")
        return outcome

    def _drain(self) -> None:
        """Loop thread: move what was handed off into the buffer."""
        admission, producer = self._admission, self._producer
        assert admission is not None and producer is not None
        for message in admission.take():
            try:
                producer._accept(message)
            except Exception:
                # Admission holds at least what the buffer holds, so this is a bug;
                # the message is still kept, and written to the fallback file on close.
                log.exception(
                    "producer %s: the buffer refused admitted message %s; kept for the file",
                    producer.owner,
                    message.message_id,
                )
                admission.release(message)
                self._stranded.append(message)

    def _write_stranded(self) -> None:
        producer = self._producer
        assert producer is not None
        stranded, self._stranded = self._stranded, []
        path = write_fallback(producer._settings.fallback_dir, producer.owner, stranded)
        if path is None:
            log.critical(
                "producer %s: %d messages could not be written to a file",
                producer.owner,
                len(stranded),
            )
        else:
            log.error(
                "producer %s: %d messages written to %s: import them with "
                "'python -m aioproducer import %s'",
                producer.owner,
                len(stranded),
                path,
                path,
            )

    # -- state -----------------------------------------------------------------

    def stats(self) -> ProducerStats:
        """A snapshot of the counters and state, from any thread.

        Messages handed off and not yet in the buffer count as accepted and buffered.
        """
        self._check_fork()
        loop, admission = self._loop, self._admission
        if self._state is ProducerState.CLOSED or loop is None or admission is None:
            if self._final is not None:
                return self._final
            return _empty_stats(self._state)
        if self._on_loop():
            return self._snapshot()
        answer: concurrent.futures.Future[ProducerStats] = concurrent.futures.Future()

        def snapshot() -> None:
            try:
                answer.set_result(self._snapshot())
            except Exception as exc:
                answer.set_exception(exc)

        try:
            loop.call_soon_threadsafe(snapshot)
            return answer.result(LOOP_GRACE)
        except (RuntimeError, concurrent.futures.TimeoutError):
            # The loop closed meanwhile, or does not answer: read without it.
            return self._final if self._final is not None else self._snapshot()

    def _snapshot(self) -> ProducerStats:
        producer, admission = self._producer, self._admission
        assert producer is not None and admission is not None
        stats = producer.stats()
        queued, queued_bytes = admission.queued()
        if not queued:
            return stats
        return dataclasses.replace(
            stats,
            accepted=stats.accepted + queued,
            buffered=stats.buffered + queued,
            buffered_bytes=stats.buffered_bytes + queued_bytes,
        )

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until nothing handed off is buffered or in flight; False if ``timeout`` passes.

        Callable from any thread but the producer's own loop thread (RuntimeError there).
        """
        self._refuse_on_loop("flush")
        self._check_fork()
        loop, closing = self._loop, self._closing
        if self._state is ProducerState.CLOSING and closing is not None:
            # close() drains, and stores the rest: wait for it.
            concurrent.futures.wait([closing], timeout)
            return closing.done() and (self._final is None or self._final.buffered == 0)
        if self._state is not ProducerState.RUNNING or loop is None:
            return self._final is None or self._final.buffered == 0
        future = asyncio.run_coroutine_threadsafe(self._flush_in_loop(timeout), loop)
        try:
            return future.result(timeout + LOOP_GRACE)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return False

    async def _flush_in_loop(self, timeout: float) -> bool:
        producer, admission = self._producer, self._admission
        assert producer is not None and admission is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._drain()
            if admission.count == 0:
                return True
            remaining = deadline - loop.time()
            if remaining <= 0 or not await producer.flush(remaining):
                return False

    # -- threads and processes ---------------------------------------------------

    def _on_loop(self) -> bool:
        # The Thread object, not its ident: a finished thread's ident is reused.
        return self._thread is threading.current_thread()

    def _refuse_on_loop(self, what: str) -> None:
        if self._on_loop():
            raise RuntimeError(
                f"ThreadedProducer.{what}() was called on the producer's own event loop "
                "thread, where it would wait on itself; call it from another thread, or "
                "use an asyncio Producer in async code"
            )

    def _check_fork(self) -> None:
        """Catch a fork that did not run the at-fork hooks (``os.fork`` always does)."""
        if self._pid != os.getpid():
            with _fork_guard:
                self._after_fork()

    def _after_fork(self) -> None:
        """In a forked child: leave the parent's producer alone, start our own on demand."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._life = threading.Lock()
        if self._loop is not None:
            _neutralise(self._selector)
            # Kept, never used: their finalisers must not run on the parent's behalf.
            _inherited.append((self._loop, self._thread, self._producer, self._admission))
            self._loop = self._thread = self._selector = None
            self._admission = None
            self._producer = None
            self._closing = None
            self._stranded = []
            self._final = None
            if self._state is ProducerState.RUNNING:
                self._state, self._forked = ProducerState.NEW, True
            else:
                self._state = ProducerState.CLOSED
        elif self._state is ProducerState.NEW and not isinstance(self._store_spec, Store):
            # Never started (gunicorn --preload): the store the parent's factory built
            # was never used, but a child builds its own all the same.
            self._producer = None

    def _new_producer(self) -> Producer:
        return Producer(self.url, store=self._store_here(), **self._options)

    def _store_here(self) -> Store | None:
        """The store for a producer in this process."""
        spec = self._store_spec
        if spec is None:
            return None
        if not isinstance(spec, Store):
            return spec()
        pid = os.getpid()
        if self._store_user is None or self._store_user == pid:
            self._store_user = pid
            return spec
        # A forked child: the parent's store object holds the parent's connections.
        if isinstance(spec, SQLiteStore):
            return SQLiteStore(spec.path)
        raise ProducerClosed(
            f"this process was forked from one that used {spec!r}, which a child cannot "
            "share: pass store= a callable that builds the store, so that each process "
            "builds its own"
        )


class _ThreadPerCall(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor: every call in a new daemon thread.

    A ThreadPoolExecutor refuses work once the interpreter starts to shut down,
    before ``atexit`` runs; the close at exit may still need a thread (to open a
    SQLite file, or resolve a host name).
    """

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=run, name="aioproducer-call", daemon=True).start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to stop: each call has its own thread."""


def _finish_settled(finish: Finish, future: concurrent.futures.Future[Settlement | None]) -> None:
    _call_finish(finish, future.result())


def _neutralise(selector: selectors.BaseSelector | None) -> None:
    """Point an inherited selector's descriptor at a fresh, empty one of this process.

    An epoll instance is shared across fork: a child unregistering a descriptor from
    it (a finaliser closing a transport would) removes the parent's registration.
    """
    fileno = getattr(selector, "fileno", None)
    if selector is None or fileno is None:
        return
    try:
        fd = fileno()
        if fd < 0:
            return
        fresh: Any = type(selector)()
    except (OSError, ValueError):
        return
    try:
        os.dup2(fresh.fileno(), fd, inheritable=False)
    finally:
        fresh.close()


#: Every ThreadedProducer of this process, for the at-fork hook and atexit.
_instances: weakref.WeakSet[ThreadedProducer] = weakref.WeakSet()
#: What forked children keep of their parents' producers: never used, never closed.
_inherited: list[object] = []
_fork_guard = threading.Lock()
#: Set once the producers close at exit; a SIGTERM then changes nothing.
_exiting = threading.Event()


def _after_fork_in_child() -> None:
    global _fork_guard
    _fork_guard = threading.Lock()
    for producer in list(_instances):
        producer._after_fork()


def _close_all_at_exit() -> None:
    _exiting.set()
    for producer in list(_instances):
        try:
            producer.close(producer.close_timeout)
        except Exception:
            log.exception("producer %s: closing at exit failed", producer.owner)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all_at_exit)
