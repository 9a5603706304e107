"""The order in which a producer tries its broker addresses, as a pure policy (no I/O)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from yarl import URL

from ._backoff import Backoff


class Rotation:
    """Which address to connect to next, and how long to wait before it.

    The addresses are shuffled once, so that many producers given the same list
    spread over the nodes; from then on they are tried in that order. A failed
    attempt moves on to the next address at once; only a full round of failures
    waits, for the next delay of ``backoff``. A lost connection moves on to the next
    address too. A successful connection starts the rounds afresh.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        backoff: Backoff,
        *,
        shuffle: Callable[[list[str]], None] = random.shuffle,
    ) -> None:
        if not addresses:
            raise ValueError("at least one broker address is needed")
        self.addresses = list(addresses)
        shuffle(self.addresses)
        self._urls = [URL(address) for address in self.addresses]
        self._backoff = backoff
        self._index = 0
        #: Failed attempts since the last connection.
        self._failures = 0

    @property
    def address(self) -> str:
        """The address the next attempt goes to."""
        return self.addresses[self._index]

    @property
    def url(self) -> URL:
        """:attr:`address`, parsed."""
        return self._urls[self._index]

    @property
    def after(self) -> str:
        """The address after :attr:`address`, where a loss or a failure moves to."""
        return self.addresses[(self._index + 1) % len(self.addresses)]

    @property
    def failures(self) -> int:
        """Attempts failed in a row since the last connection."""
        return self._failures

    def failed(self) -> float:
        """The attempt at :attr:`address` failed: move on; return seconds to wait first."""
        self._failures += 1
        self._advance()
        rounds, rest = divmod(self._failures, len(self.addresses))
        return self._backoff.delay(rounds - 1) if rest == 0 else 0.0

    def connected(self) -> None:
        """The attempt at :attr:`address` succeeded."""
        self._failures = 0

    def lost(self) -> None:
        """The connection to :attr:`address` was lost: the next attempt goes to the next."""
        self._advance()

    def _advance(self) -> None:
        self._index = (self._index + 1) % len(self.addresses)
