"""The fault plan: which fault each cycle applies, and for how long, drawn from a seed."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

BROKER = "broker"
ALARM = "alarm"
CUT = "cut"
HALF_OPEN = "half-open"
STORE_KILL = "store-kill"
STORE_FREEZE = "store-freeze"
STORE_LOCK = "store-lock"
CLOSE_REOPEN = "close-reopen"
BROKER_AND_STORE = "broker+store"
WARM_UP = "warm-up"
"""Not a fault: what the load publishes before the first cycle is counted under it."""

_COMMON = (BROKER, ALARM, CUT, HALF_OPEN)
#: The fault kinds each store supports, in table order. A MongoDB server can be killed or
#: frozen; an SQLite file is made unavailable by another connection's exclusive lock.
KINDS_BY_STORE: dict[str, tuple[str, ...]] = {
    "nx": (*_COMMON, STORE_KILL, STORE_FREEZE, CLOSE_REOPEN, BROKER_AND_STORE),
    "sqlite": (*_COMMON, STORE_LOCK, CLOSE_REOPEN, BROKER_AND_STORE),
}


@dataclass(frozen=True, slots=True)
class Cycle:
    """One cycle of the soak: a fault held for ``seconds``, then an up period."""

    number: int
    kind: str
    seconds: float


def parse_kinds(text: str | None, store: str) -> tuple[str, ...]:
    """The fault kinds named in ``text`` (comma-separated; all for ``store`` if empty).

    Raises ``ValueError`` for a kind the store does not support, or a repeated one.
    """
    known = KINDS_BY_STORE[store]
    if not text:
        return known
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in known]
    if unknown:
        raise ValueError(
            f"unknown fault kind(s) for --store {store}: {', '.join(unknown)} "
            f"(choose from {', '.join(known)})"
        )
    if len(set(kinds)) != len(kinds):
        raise ValueError("a fault kind is named twice")
    if not kinds:
        raise ValueError("no fault kind given")
    return kinds


def draw_plan(seed: int, cycles: int, kinds: Sequence[str], fault_seconds: float) -> list[Cycle]:
    """``cycles`` cycles drawn from ``seed``: the same seed gives the same plan.

    Kinds are drawn in rounds: each run of ``len(kinds)`` cycles holds every kind once, in
    a random order, so a short soak covers them all. Each fault lasts between half and
    one and a half times ``fault_seconds``.
    """
    if cycles < 0 or fault_seconds <= 0 or not kinds:
        raise ValueError("cycles must be >= 0, fault_seconds > 0, and kinds not empty")
    rng = random.Random(seed)
    plan: list[Cycle] = []
    bag: list[str] = []
    for number in range(1, cycles + 1):
        if not bag:
            bag = list(kinds)
            rng.shuffle(bag)
        kind = bag.pop()
        plan.append(Cycle(number, kind, round(fault_seconds * rng.uniform(0.5, 1.5), 2)))
    return plan
