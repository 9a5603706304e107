"""Fixtures of the unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes import VirtualClockLoop


@pytest.fixture
def loop() -> Iterator[VirtualClockLoop]:
    """An event loop on a virtual clock: a test drives it, and time moves only then."""
    loop = VirtualClockLoop()
    try:
        yield loop
    finally:
        loop.close()
