"""The promise under generated inputs and faults: a stateful property test of the whole producer.

A Hypothesis state machine drives a real :class:`~aioproducer.Producer` (live
publisher, spiller, replayer, buffer) against the fakes of :mod:`tests.fakes`: a
broker behind a link that encodes the real AMQP frames, a store with faults, and a
virtual clock, so time passing is a rule and nothing sleeps.

Checked after every step: every move a message makes is one ``MOVES`` lists, every
accepted message is in one state, a message is in memory exactly when the buffer
holds it, nothing accepted fails on the wire, and no background task crashes. At
the end (close, then a second producer on the same store replaying with broker and
store healthy): nothing is in memory, and every accepted id is confirmed or in the
store (as dead, or still failing for a reason of its own). Duplicate deliveries are
counted, and allowed only on the paths docs/guarantees.md names.

``AIOPRODUCER_PROPERTY_PROFILE=long`` runs many more examples than CI does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from aioproducer import (
    BodyNotSerializable,
    BufferFull,
    InvalidMessage,
    Message,
    MessageTooLarge,
    ProducerClosed,
    ProducerState,
)
from aioproducer._fallback import read_messages
from aioproducer._message import MAX_HEADERS_SIZE, MOVES, State
from aioproducer._producer import CLOSE_MARGIN
from tests.fakes import (
    FakeBroker,
    FakeLinkProducer,
    FakeStore,
    Mode,
    Record,
    StoreFault,
    VirtualClockLoop,
)
from tests.waiting import run_without_suspending

settings.register_profile(
    "ci",
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=2_000,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = os.environ.get("AIOPRODUCER_PROPERTY_PROFILE", "ci")

MAX_MESSAGE_SIZE = 512
SPILL_AFTER = 1.0
CONFIRM_TIMEOUT = 3.0
LEASE = 10.0
#: Steps before close() may be called: closing early leaves little to check.
MIN_STEPS_BEFORE_CLOSE = 12
IN_MEMORY = (State.MEMORY, State.IN_FLIGHT)
UNSETTLED = (State.MEMORY, State.IN_FLIGHT, State.STORED_IN_FLIGHT)

#: Duplicate deliveries seen over the whole run, by the path that explains them.
DUPLICATES: Counter[str] = Counter()
RUNS: Counter[str] = Counter()
#: Known library shortcomings met on the way (each has an xfail test of its own).
KNOWN: Counter[str] = Counter()
UNEXPLAINED: list[str] = []


# -- what publish() is given, and what it must do with it ---------------------------------

ErrorTypes = frozenset[type[Exception]]


@dataclass(frozen=True)
class Case:
    """A generated argument and what publish() must make of it.

    ``errors``: what it may raise for it; ``must_fail``: it may not accept it.
    """

    value: Any
    errors: ErrorTypes = frozenset()
    must_fail: bool = False

    def __repr__(self) -> str:
        text = repr(self.value)
        return text if len(text) < 120 else f"{text[:100]}...({len(text)} chars)"


OK = frozenset[type[Exception]]()
INVALID: ErrorTypes = frozenset({InvalidMessage})
UNSERIALISABLE: ErrorTypes = frozenset({BodyNotSerializable, TypeError})


def ok(value: Any) -> Case:
    return Case(value)


def bad(value: Any, errors: ErrorTypes = INVALID) -> Case:
    return Case(value, errors, must_fail=True)


def either(value: Any, errors: ErrorTypes = INVALID) -> Case:
    return Case(value, errors, must_fail=False)


def _combine(make: Callable[[list[Any]], Any], parts: list[Case]) -> Case:
    errors: set[type[Exception]] = set()
    for part in parts:
        errors |= part.errors
    return Case(make([p.value for p in parts]), frozenset(errors), any(p.must_fail for p in parts))


plain_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)

_valid_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([2**63 - 1, -(2**63), 2**31, -(2**31) - 1, 127, -129, 32768]),
    st.floats(allow_nan=False, allow_infinity=False),
    plain_text,
    st.binary(max_size=12),
    st.binary(max_size=4).map(bytearray),
    st.sampled_from([Decimal("1.25"), Decimal(-7), Decimal("0.001"), Decimal(2**31 - 1)]),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2106, 1, 1)),
    st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2106, 1, 1), timezones=st.just(UTC)
    ),
    st.just(datetime(2106, 2, 7, 6, 28, 15, tzinfo=UTC)),
    st.just(datetime(2030, 5, 1, 12, 30, 15, 999_999, tzinfo=timezone(timedelta(hours=-5)))),
).map(ok)

_invalid_leaves = st.sampled_from(
    [
        2**63,
        -(2**63) - 1,
        2**64,
        10**30,
        "lone \ud800 surrogate",
        "\udfff",
        Decimal("NaN"),
        float("nan"),
        float("inf"),
        -float("inf"),
        Decimal(2**31),
        Decimal("1e-300"),
        datetime(1960, 1, 1),
        datetime(2106, 2, 7, 6, 28, 16, tzinfo=UTC),
        datetime(2200, 1, 1),
        object(),
        {1, 2},
        1j,
    ]
).map(bad)

_leaves = st.one_of(_valid_leaves, _valid_leaves, _valid_leaves, _invalid_leaves)


def _big(unit: Any, size: int) -> Any:
    return unit * size


def _long(unit: Any, *sizes: int) -> st.SearchStrategy[Any]:
    """``unit`` repeated to each of ``sizes``, drawn without a long literal in the strategy."""
    return st.builds(_big, st.just(unit), st.sampled_from(sizes))


_keys = st.one_of(
    plain_text.map(ok),
    _long("k", 128).map(ok),
    _long("k", 129).map(bad),
    st.sampled_from(["\ud83d", "x\udc80y", 1, b"key", None, ("t",)]).map(bad),
)


def _nested(children: st.SearchStrategy[Case]) -> st.SearchStrategy[Case]:
    def table(pairs: list[tuple[Case, Case]]) -> Case:
        values = [v for pair in pairs for v in pair]
        return _combine(lambda vs: dict(zip(vs[::2], vs[1::2], strict=True)), values)

    return st.one_of(
        st.lists(children, max_size=3).map(lambda cs: _combine(list, cs)),
        st.lists(children, max_size=3).map(lambda cs: _combine(tuple, cs)),
        st.lists(st.tuples(_keys, children), max_size=3, unique_by=lambda kv: repr(kv[0])).map(
            table
        ),
    )


_values = st.recursive(_leaves, _nested, max_leaves=8)


def _deep(levels: int, as_list: bool) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value] if as_list else {"d": value}
    return value


_extreme_values = st.one_of(
    st.builds(_deep, st.integers(36, 45), st.booleans()).map(bad),
    st.builds(_deep, st.integers(1, 8), st.booleans()).map(ok),
    st.builds(_deep, st.integers(29, 35), st.booleans()).map(either),
    _long("x", MAX_HEADERS_SIZE + 10).map(bad),
    _long(b"y", MAX_HEADERS_SIZE // 2).map(ok),
)


def _header_table(pairs: list[tuple[Case, Case]]) -> Case:
    values = [v for pair in pairs for v in pair]
    return _combine(lambda vs: dict(zip(vs[::2], vs[1::2], strict=True)), values)


valid_headers = st.one_of(
    st.none().map(ok),
    st.lists(
        st.tuples(plain_text.map(ok), st.recursive(_valid_leaves, _nested, max_leaves=6)),
        max_size=4,
        unique_by=lambda kv: kv[0].value,
    ).map(_header_table),
)

headers_cases = st.one_of(
    st.none().map(ok),
    st.just({}).map(ok),
    st.lists(
        st.tuples(_keys, st.one_of(_values, _values, _values, _extreme_values)),
        max_size=4,
        unique_by=lambda kv: repr(kv[0]),
    ).map(_header_table),
    st.sampled_from([[("a", 1)], "a=1", 5]).map(bad),
)

_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        plain_text,
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(plain_text, children, max_size=3)
    ),
    max_leaves=10,
)


def _json_case(value: Any) -> Case:
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    return ok(value) if size <= MAX_MESSAGE_SIZE else bad(value, frozenset({MessageTooLarge}))


def _sized(value: bytes | str) -> Case:
    size = len(value.encode() if isinstance(value, str) else value)
    return ok(value) if size <= MAX_MESSAGE_SIZE else bad(value, frozenset({MessageTooLarge}))


valid_bodies = st.one_of(
    st.binary(max_size=40).map(ok),
    plain_text.map(ok),
    _json.filter(lambda v: _json_case(v).errors == OK).map(ok),
)

body_cases = st.one_of(
    st.binary(max_size=40).map(_sized),
    plain_text.map(_sized),
    _long(b"b", MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE + 1).map(_sized),
    _long("é", MAX_MESSAGE_SIZE // 2, MAX_MESSAGE_SIZE // 2 + 1).map(_sized),
    _json.map(_json_case),
    st.sampled_from(
        [object(), {1, 2}, {"at": complex(1, 2)}, {"x": float("nan")}, "bad \ud800"]
    ).map(lambda v: bad(v, UNSERIALISABLE)),
)

POOL = ("id-0", "id-1", "id-2")

id_cases = st.one_of(
    st.none().map(ok),
    st.none().map(ok),
    st.sampled_from(POOL).map(ok),
    st.one_of(st.just("é-id"), _long("i", 255)).map(ok),
    st.one_of(st.sampled_from(["", 5, "\ud800", b"id"]), _long("i", 256)).map(bad),
)

valid_ids = st.one_of(st.none(), st.none(), st.sampled_from(POOL)).map(ok)

routing_cases = st.one_of(
    st.sampled_from(["q", "", "orders.eu"]).map(ok),
    st.one_of(st.sampled_from([7, "\udfff"]), _long("r", 256)).map(bad),
)
exchange_cases = st.one_of(
    st.sampled_from([None, "", "ex-a", "ex-missing"]).map(ok),
    st.one_of(st.just(3), _long("e", 300)).map(bad),
)
content_type_cases = st.one_of(
    st.sampled_from([None, "application/x-test"]).map(ok),
    _long("t", 256).map(bad),
)


# -- the record of every message's life ----------------------------------------------------


@dataclass(eq=False)
class Incarnation:
    """One accepted message: an id as published once (an id can be reused once settled)."""

    serial: int
    message: Message
    state: State = State.MEMORY
    history: list[State] = field(default_factory=lambda: [State.MEMORY])

    @property
    def message_id(self) -> str:
        return self.message.message_id


class Tracker:
    """Told of every move of every message (``Producer._observer``); keeps each one's state."""

    def __init__(self) -> None:
        self.accepted: list[Incarnation] = []
        self._by_object: dict[int, Incarnation] = {}
        self.by_id: dict[str, list[Incarnation]] = {}
        self.violations: list[str] = []
        self.reconfirmed: Counter[str] = Counter()

    def of(self, message: Message) -> Incarnation | None:
        found = self._by_object.get(id(message))
        return found if found is not None and found.message is message else None

    def observe(self, message: Message, state: State) -> None:
        known = self.of(message)
        if known is None:
            if state is State.MEMORY:
                self._accept(message)
            else:
                self._observe_copy(message, state)
            return
        self._move(known, state)

    def _accept(self, message: Message) -> None:
        incarnation = Incarnation(len(self.accepted), message)
        for other in self.by_id.get(message.message_id, []):
            if other.state in UNSETTLED:
                self.violations.append(
                    f"{message.message_id} accepted again while {other.state.value}"
                )
        self.accepted.append(incarnation)
        self._by_object[id(message)] = incarnation
        self.by_id.setdefault(message.message_id, []).append(incarnation)

    def _move(self, incarnation: Incarnation, state: State) -> None:
        if state not in MOVES[incarnation.state]:
            self.violations.append(
                f"{incarnation.message_id} moved {incarnation.state.value} -> {state.value}"
            )
        incarnation.state = state
        incarnation.history.append(state)

    def _observe_copy(self, message: Message, state: State) -> None:
        """A move the replayer reports for a copy it claimed from the store."""
        incarnations = self.by_id.get(message.message_id, [])
        stored = [i for i in incarnations if i.state is State.STORED]
        if stored:
            for incarnation in stored:
                self._move(incarnation, state)
        elif state is State.CONFIRMED and any(
            i.state in (State.CONFIRMED, State.DEAD) for i in incarnations
        ):
            # A copy left in the store after its message was settled, replayed again.
            self.reconfirmed[message.message_id] += 1
        else:
            states = [i.state.value for i in incarnations]
            self.violations.append(
                f"replay moved {message.message_id} to {state.value}; its states: {states}"
            )

    def where(self, *states: State) -> list[Incarnation]:
        return [i for i in self.accepted if i.state in states]


class _Problems(logging.Handler):
    """Log records that mean a bug: a crashed task, a failed settle, a message given up."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if (
            record.levelno >= logging.CRITICAL
            or "task failed" in text
            or ("settling" in text and "failed" in text and "replayed" not in text)
        ):
            self.records.append(f"{record.levelname} {record.name}: {text.splitlines()[0]}")


# -- the machine ---------------------------------------------------------------------------


class ProducerMachine(RuleBasedStateMachine):
    """Publishes, breaks and heals the broker and the store, lets time pass, closes."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = VirtualClockLoop()
        self.broker = FakeBroker()
        self.store = FakeStore(self.loop.wall)
        self.tracker = Tracker()
        self.folder = Path(tempfile.mkdtemp(prefix="aioproducer-property-"))
        self.problems = _Problems()
        self.logger = logging.getLogger("aioproducer")
        self.logger.addHandler(self.problems)
        self._propagate = self.logger.propagate
        self.logger.propagate = False
        self.producer: FakeLinkProducer | None = None
        self.max_buffer = 0
        self.steps = 0
        self.closed = False
        self.poisoned: set[str] = set()
        #: Ids of confirmed messages whose stored copy a closed producer had not deleted.
        self.undeleted: set[str] = set()

    def _producer(self, name: str, **options: Any) -> FakeLinkProducer:
        producer = FakeLinkProducer(
            "amqp://guest:guest@127.0.0.1:1/",
            store=self.store,
            spill_after=SPILL_AFTER,
            max_message_size=MAX_MESSAGE_SIZE,
            confirm_timeout=CONFIRM_TIMEOUT,
            lease=LEASE,
            replay_batch=4,
            replay_interval=1.0,
            fallback_dir=self.folder,
            name=name,
            **options,
        )
        producer.broker = self.broker
        producer._observer = self.tracker.observe
        producer._wall = self.loop.wall
        return producer

    @property
    def live(self) -> FakeLinkProducer:
        assert self.producer is not None
        return self.producer

    @initialize(
        max_attempts=st.sampled_from([None, 2, 4]),
        max_in_flight=st.integers(1, 4),
        max_buffer=st.integers(2, 8),
        first=st.lists(st.tuples(valid_bodies, valid_ids), max_size=3),
    )
    def start(
        self,
        max_attempts: int | None,
        max_in_flight: int,
        max_buffer: int,
        first: list[tuple[Case, Case]],
    ) -> None:
        """Start a producer, and publish a first few messages so that faults meet traffic."""
        self.max_buffer = max_buffer
        self.producer = self._producer(
            "p1", max_attempts=max_attempts, max_in_flight=max_in_flight, max_buffer=max_buffer
        )
        self.loop.run(self.producer.start())
        for body, message_id in first:
            self.publish_any(body, ok(None), message_id, ok("q"), ok(None), ok(None))

    # -- publishing ---------------------------------------------------------------

    @rule(
        messages=st.lists(
            st.tuples(
                valid_bodies,
                valid_headers,
                valid_ids,
                st.sampled_from([None, "", "ex-a", "ex-missing"]).map(ok),
            ),
            min_size=1,
            max_size=4,
        )
    )
    def publish(self, messages: list[tuple[Case, Case, Case, Case]]) -> None:
        """A burst of well-formed publishes (refused only when full or the id is in use)."""
        for body, headers, message_id, exchange in messages:
            self.publish_any(body, headers, message_id, ok("q"), exchange, ok(None))

    @rule(
        body=body_cases,
        headers=headers_cases,
        message_id=id_cases,
        routing_key=routing_cases,
        exchange=exchange_cases,
        content_type=content_type_cases,
    )
    def publish_any(
        self,
        body: Case,
        headers: Case,
        message_id: Case,
        routing_key: Case,
        exchange: Case,
        content_type: Case,
    ) -> None:
        cases = [body, headers, message_id, routing_key, exchange, content_type]
        errors = set().union(*(c.errors for c in cases))
        must_fail = any(c.must_fail for c in cases)
        producer = self.live
        buffer = producer._context.buffer if producer._context is not None else None
        if self.closed:
            errors, must_fail = {ProducerClosed}, True
        else:
            assert buffer is not None
            if len(buffer) >= self.max_buffer:
                errors.add(BufferFull)
                must_fail = True
            reused = self.tracker.by_id.get(message_id.value, []) if message_id.value else []
            if any(i.state in UNSETTLED for i in reused):
                errors.add(InvalidMessage)
                must_fail = True
        accepted_before = len(self.tracker.accepted)
        in_memory_before = len(buffer) if buffer is not None else 0

        async def call() -> str:
            return run_without_suspending(
                producer.publish(
                    body.value,
                    routing_key=routing_key.value,
                    exchange=exchange.value,
                    headers=headers.value,
                    message_id=message_id.value,
                    content_type=content_type.value,
                )
            )

        try:
            returned = self.loop.run(call())
        except Exception as exc:
            note(f"publish raised {exc!r}")
            assert isinstance(exc, tuple(errors)), f"{exc!r} is none of {errors}"
            assert len(self.tracker.accepted) == accepted_before, "a refused publish enqueued"
            if buffer is not None:
                assert len(buffer) == in_memory_before
            event("publish: refused")
            return
        assert not must_fail, f"publish accepted what it must refuse (may raise {errors})"
        assert len(self.tracker.accepted) == accepted_before + 1
        incarnation = self.tracker.accepted[-1]
        assert incarnation.message_id == returned
        if message_id.value is not None:
            assert returned == message_id.value
        note(f"accepted #{incarnation.serial} {returned}")
        event("publish: accepted")

    # -- the broker ---------------------------------------------------------------------

    @rule(took=st.booleans())
    def broker_down(self, took: bool) -> None:
        self.broker.set_down(took)
        self.loop.drive()

    @rule()
    def broker_up(self) -> None:
        self.broker.set_up()
        self.loop.drive()

    @rule(blocked=st.booleans())
    def broker_blocked(self, blocked: bool) -> None:
        self.broker.set_blocked(blocked)
        self.loop.drive()

    @rule(
        mode=st.sampled_from(Mode),
        delay=st.sampled_from([None, 0.5, 2.0, 5.0]),
    )
    def broker_mode(self, mode: Mode, delay: float | None) -> None:
        self.broker.mode = mode
        self.broker.confirm_delay = delay
        if mode is not Mode.SLOW and not self.broker.blocked:
            self.broker.release()
        self.loop.drive()

    @rule()
    def release_confirms(self) -> None:
        self.broker.release()
        self.loop.drive()

    @precondition(lambda self: bool(self.tracker.accepted))
    @rule(
        data=st.data(),
        mode=st.sampled_from(
            [Mode.NACK, Mode.RETURN, Mode.CHANNEL_ERROR, Mode.CHANNEL_ERROR_NAMED]
        ),
    )
    def poison(self, data: st.DataObject, mode: Mode) -> None:
        incarnation = data.draw(st.sampled_from(self.tracker.accepted))
        self.broker.poison[incarnation.message_id] = mode
        self.poisoned.add(incarnation.message_id)
        self.loop.drive()

    # -- the store ----------------------------------------------------------------------

    @rule(fault=st.sampled_from(StoreFault))
    def store_fault(self, fault: StoreFault) -> None:
        self.store.set_fault(fault)
        self.loop.drive()

    @rule(data=st.data())
    def store_rejects(self, data: st.DataObject) -> None:
        ids = sorted({i.message_id for i in self.tracker.accepted})
        self.store.reject = data.draw(st.sampled_from([None, *ids]))
        self.loop.drive()

    # -- time ------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([0.01, 0.3, 1.0, 2.5, 4.0, 11.0, 45.0]))
    def time_passes(self, seconds: float) -> None:
        self.loop.drive(within=seconds)

    # -- closing ---------------------------------------------------------------------------

    @precondition(lambda self: not self.closed and self.steps >= MIN_STEPS_BEFORE_CLOSE)
    @rule(timeout=st.sampled_from([0.0, 0.5, 3.0, 10.0]))
    def close(self, timeout: float) -> None:
        self._close(self.live, timeout)
        event(f"close({timeout})")

    @precondition(lambda self: not self.closed and self.steps >= MIN_STEPS_BEFORE_CLOSE)
    @rule(
        timeout=st.sampled_from([0.0, 0.5, 3.0, 10.0]),
        after=st.sampled_from([0.0, 0.001, 0.5, 2.0]),
        how=st.sampled_from(["cancel", "wait_for"]),
    )
    def close_cancelled(self, timeout: float, after: float, how: str) -> None:
        producer = self.live
        started = self.loop.time()
        bound = timeout + CLOSE_MARGIN
        if how == "wait_for":
            task = self.loop.drive(asyncio.wait_for(producer.close(timeout), after), within=bound)
        else:
            task = self.loop.drive(producer.close(timeout), within=after)
            if not task.done():
                task.cancel()
            self.loop.drive(within=max(0.0, bound - (self.loop.time() - started)))
        took = self.loop.time() - started
        assert task.done(), f"close({timeout}) cancelled: still running after {took}s"
        assert took <= bound + 1e-6, f"close({timeout}) cancelled took {took}s"
        if not task.cancelled():
            exc = task.exception()
            assert exc is None or isinstance(exc, TimeoutError), repr(exc)
        if producer._closer is None:
            # Cancelled before its first step: close() never ran, the producer runs on.
            assert producer.stats().state is ProducerState.RUNNING
            event("close cancelled before it started")
            return
        self._closed(producer)
        event(f"close cancelled ({how})")

    def _close(self, producer: FakeLinkProducer, timeout: float) -> None:
        started = self.loop.time()
        bound = timeout + CLOSE_MARGIN
        task = self.loop.drive(producer.close(timeout), within=bound)
        took = self.loop.time() - started
        assert task.done(), f"close({timeout}) still running after {took}s"
        task.result()
        assert took <= bound + 1e-6, f"close({timeout}) took {took}s"
        self._closed(producer)

    def _closed(self, producer: FakeLinkProducer) -> None:
        assert producer.stats().state is ProducerState.CLOSED
        context = producer._context
        assert context is not None
        assert len(context.buffer) == 0, "messages left in memory after close"
        self.undeleted.update(context.redundant)
        if producer is self.producer:
            self.closed = True
            assert not self.tracker.where(*UNSETTLED), "a message unsettled after close"

    # -- the invariant ---------------------------------------------------------------------

    @invariant()
    def every_message_is_where_its_state_says(self) -> None:
        self.steps += 1
        assert not self.tracker.violations, self.tracker.violations
        assert not self.broker.encoding_failures, self.broker.encoding_failures
        assert not self.problems.records, self.problems.records
        producer = self.live
        context = producer._context
        assert context is not None
        buffer = context.buffer
        in_memory = self.tracker.where(*IN_MEMORY)
        assert len(buffer) == len(in_memory)
        for incarnation in in_memory:
            assert buffer._unsettled.get(incarnation.message_id) is incarnation.message
        in_flight = {id(m) for m in buffer._in_flight.values()}
        assert in_flight == {
            id(i.message) for i in self.tracker.where(State.IN_FLIGHT, State.STORED_IN_FLIGHT)
        }
        for incarnation in self.tracker.accepted:
            assert incarnation.message.state is incarnation.state or incarnation.state in (
                State.CONFIRMED,
                State.DEAD,
            )
        assert producer.stats().accepted == len(self.tracker.accepted)

    # -- the end ----------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if self.producer is not None:
                self._finish()
        finally:
            self._dispose()

    def _heal(self) -> None:
        self.broker.mode = Mode.ACK
        self.broker.set_up()
        self.broker.set_blocked(False)
        self.broker.release()
        self.store.set_fault(StoreFault.UP)
        self.store.reject = None

    def _finish(self) -> None:
        tracker = self.tracker
        if not self.closed:
            # Healed, the live path must move everything out of memory: no task stalled.
            self._heal()
            self.loop.drive(within=150.0)
            # Only a message the store refused and that cannot be delivered (poisoned, or
            # dead) stays in memory until close, which writes it to the fallback file.
            stuck = [
                i
                for i in tracker.where(*UNSETTLED)
                if not (i.message.unstorable and (i.message_id in self.poisoned or i.message.dead))
            ]
            assert not stuck, f"stalled in memory with broker and store healthy: {stuck}"
            self._close(self.live, 5.0)
        self._import_fallback_files()
        self._heal()
        replayer = self._producer("p2")
        self.loop.run(replayer.start())
        for _ in range(60):
            if not self._replayable():
                break
            self.loop.drive(within=10.0)
        self._close(replayer, 5.0)
        self._heal()
        self.loop.drive()
        self._check_nothing_lost()
        self._count_duplicates()

    def _replayable(self) -> list[str]:
        return [
            r.message.message_id
            for r in self.store.records.values()
            if not r.message.dead and r.message.message_id not in self.poisoned
        ]

    def _import_fallback_files(self) -> None:
        """Put the messages of the close-time files into the store, as the import command does."""
        for path in sorted(self.folder.glob("aioproducer-unsent-*.jsonl")):
            messages = list(read_messages(path))
            event("fallback file written")
            for message in messages:
                stored = [
                    i
                    for i in self.tracker.by_id.get(message.message_id, [])
                    if i.state in (State.STORED, State.DEAD)
                ]
                assert stored, f"{message.message_id} in a fallback file but not stored"
                message.due_at = self.loop.wall()
                self.store.records.setdefault(
                    message.message_id, Record(message, stored[-1].message)
                )
            path.unlink()

    def _check_nothing_lost(self) -> None:
        tracker = self.tracker
        delivered = {d.message_id for d in self.broker.deliveries}
        records = self.store.records
        lost = [
            i.message_id
            for i in tracker.accepted
            if i.message_id not in delivered and i.message_id not in records
        ]
        assert not lost, f"accepted, never delivered and not in the store: {lost}"
        assert not tracker.where(*UNSETTLED), "unsettled at the end"
        stranded = self._replayable()
        assert not stranded, f"left in the store after replay with everything healthy: {stranded}"
        for incarnation in tracker.accepted:
            message_id = incarnation.message_id
            note(
                f"#{incarnation.serial} {message_id}: "
                f"{' -> '.join(s.value for s in incarnation.history)}; "
                f"delivered {sum(d.message_id == message_id for d in self.broker.deliveries)}x"
            )
        for incarnation in tracker.accepted:
            message_id = incarnation.message_id
            if len(tracker.by_id[message_id]) > 1:
                # A reused id: the store keeps one message per id (put is idempotent), so
                # only the id's fate is checked, above.
                continue
            if incarnation.state is State.CONFIRMED:
                assert message_id in delivered, f"{message_id} confirmed, never delivered"
            elif incarnation.state is State.STORED:
                assert message_id in records, f"{message_id} stored, not in the store"
                assert message_id in self.poisoned or records[message_id].message.dead, (
                    f"{message_id} still stored after replay"
                )
            else:
                assert incarnation.state is State.DEAD
                record = records.get(message_id)
                if record is not None and record.message.dead:
                    continue
                # Known (tests/unit/test_store_stale_copy.py): an earlier copy, written by
                # a put that reported failure, outlives the message's dead state.
                assert message_id in self.store.written_but_failed, (
                    f"{message_id} dead, but the store does not keep it as dead"
                )
                KNOWN["dead, but an earlier stored copy was kept (and replayed)"] += 1
                event("known: dead message kept as an earlier copy")
        for incarnation in tracker.accepted:
            event(f"ended {incarnation.state.value}")
        note(f"deliveries: {[(d.message_id, d.channel, d.client) for d in self.broker.deliveries]}")

    def _count_duplicates(self) -> None:
        """Count deliveries beyond the first of each accepted message, by what explains them."""
        by_origin: dict[int, list[Any]] = {}
        for delivery in self.broker.deliveries:
            origin = self.store.origin(delivery.message)
            incarnation = self.tracker.of(origin)
            key = incarnation.serial if incarnation is not None else -1 - len(by_origin)
            by_origin.setdefault(key, []).append(delivery)
        unexplained: list[str] = []
        RUNS["examples"] += 1
        RUNS["deliveries"] += len(self.broker.deliveries)
        RUNS["accepted"] += len(self.tracker.accepted)
        for deliveries in by_origin.values():
            for index, delivery in enumerate(deliveries[1:], start=1):
                earlier = deliveries[:index]
                message_id = delivery.message_id
                if any(d.client != "acked" for d in [*earlier, delivery]):
                    path = "publish lost, timed out or cut short, then published again"
                elif delivery.channel == "replay" and (
                    message_id in self.store.ack_failed or message_id in self.undeleted
                ):
                    path = "stored copy of a confirmed message not deleted, replayed"
                elif message_id in self.store.written_but_failed:
                    path = "stored by a write the store reported as failed, replayed"
                else:
                    path = "unexplained"
                    unexplained.append(
                        f"{message_id}: {[(d.channel, d.client) for d in deliveries]}"
                    )
                    UNEXPLAINED.append(unexplained[-1])
                DUPLICATES[path] += 1
                event(f"duplicate: {path}")
        assert not unexplained, f"duplicates on no documented path: {unexplained}"

    def _dispose(self) -> None:
        loop = self.loop
        try:
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                loop.drive(asyncio.gather(*tasks, return_exceptions=True), within=60.0)
            loop.drive(loop.shutdown_asyncgens())
        finally:
            loop.close()
            shutil.rmtree(self.folder, ignore_errors=True)
            self.logger.removeHandler(self.problems)
            self.logger.propagate = self._propagate


TestProducerProperties = ProducerMachine.TestCase
TestProducerProperties.settings = settings.get_profile(PROFILE)
# A long run outlasts the per-test timeout, which would otherwise count as a failure.
TestProducerProperties.pytestmark = [  # type: ignore[attr-defined]
    pytest.mark.timeout(0 if PROFILE == "long" else 300),
    # The recursive header strategies have long reprs; Hypothesis warns when it prints them.
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning"),
]


@pytest.fixture(scope="module", autouse=True)
def _report_duplicates(request: pytest.FixtureRequest) -> Iterator[None]:
    """Say at the end of the run how many duplicate deliveries were seen, and why."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not RUNS["examples"]:
        return
    lines = [
        f"property test ({PROFILE}): {RUNS['examples']} examples, "
        f"{RUNS['accepted']} messages accepted, {RUNS['deliveries']} deliveries, "
        f"{sum(DUPLICATES.values())} duplicates"
    ]
    lines += [f"  {count:6d}  {path}" for path, count in DUPLICATES.most_common()]
    lines += [f"  known: {count}x {what}" for what, count in KNOWN.most_common()]
    lines += [f"  unexplained duplicate: {text}" for text in UNEXPLAINED[:5]]
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)
