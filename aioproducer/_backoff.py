"""Exponential backoff with jitter, as a pure policy: it computes delays, never sleeps."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry number ``attempt`` (0-based): ``base * factor**attempt``, capped.

    The delay is then spread by ``jitter`` (0.5 draws uniformly from 50% to 100% of
    it), so that many producers recovering from one outage do not retry in step.
    """

    base: float = 0.1
    cap: float = 1.0
    factor: float = 2.0
    jitter: float = 0.5
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (self.base > 0 and self.cap >= self.base and self.factor >= 1):
            raise ValueError("backoff needs 0 < base <= cap and factor >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter is a fraction from 0 to 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt``."""
        exponent = min(max(attempt, 0), 64)
        ceiling = min(self.cap, self.base * self.factor**exponent)
        return ceiling * (1 - self.jitter * self.random())
