"""Fixtures shared by every test: the real broker, random queues, temporary stores."""

from __future__ import annotations

import gc
import logging
import os
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import aiosqlite
import pytest

from tests.broker import AMQP_URL, REPAIRS, broker_health
from tests.stores.backends import mongo_backend_line

log = logging.getLogger("tests.broker")

#: The broker as the first fault test found it: whether its app ran, and its watermark.
_BASELINE = pytest.StashKey[tuple[bool, list[str] | None]]()


def pytest_report_header() -> str:
    """Say up front which MongoDB the Mongo tests use: a real server or the stand-in."""
    return mongo_backend_line()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before the first fault test, note the broker's health, to compare at the end."""
    if item.get_closest_marker("fault") and _BASELINE not in item.session.stash:
        item.session.stash[_BASELINE] = broker_health()


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the worker thread of every SQLite connection a failed test left open, and
    collect what PyMongo's async driver leaked before pytest's last collection.

    aiosqlite runs each connection on a thread that is not a daemon: a test that fails
    before it closes its store (the traceback pytest keeps holds the store) would make
    the interpreter wait for that thread at exit, forever, instead of reporting. The
    driver leaks the socket of a connect it cancels (PYTHON-5867; see
    ``tests/stores/conftest.py``), whose warning would fail the run at its very end.
    """
    for obj in gc.get_objects():
        if isinstance(obj, aiosqlite.Connection) and obj._running:
            obj.stop()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a fault test left the broker stopped or its watermark changed.

    The broker is repaired too, so later runs and other users of it find it as it was.
    """
    baseline = session.stash.get(_BASELINE, None)
    if baseline is None:
        return
    was_up, watermark = baseline
    up, now = broker_health()
    problems = []
    if was_up and not up:
        problems.append("the broker's app is not running")
        REPAIRS.owe(("start_app",), ("await_startup",))
    if watermark is not None and now != watermark:
        problems.append(f"the memory watermark is {now}, it was {watermark}")
        REPAIRS.owe(("set_vm_memory_high_watermark", *watermark))
    if problems:
        REPAIRS.run_owed()
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"BROKER LEFT UNHEALTHY (repaired now): {'; '.join(problems)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def broker_repaired() -> Iterator[None]:
    """Run the broker repairs a fault block still owes when its test ends.

    A plain (not async) fixture: it runs even when a test timeout stopped the test's
    event loop in the middle of a block that stopped the broker or raised its alarm.
    """
    yield
    ran = REPAIRS.run_owed()
    if ran:
        log.warning("a fault block did not restore the broker; ran %s", ran)


class _CrashedTasks(logging.Handler):
    """Lines of a producer's background task that raised and was restarted: a bug."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if " task failed; restarting it in " in text:
            self.lines.append(text.splitlines()[0])


@pytest.fixture(autouse=True)
def no_crashed_tasks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test in which a producer's publisher, spiller or replayer raised.

    The producer restarts such a task and carries on, so a test of something else
    would still pass: every test checks here that none did, but those marked
    ``crashing_task`` (which make a task raise on purpose).
    """
    if request.node.get_closest_marker("crashing_task"):
        yield
        return
    handler = _CrashedTasks()
    logger = logging.getLogger("aioproducer")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    if handler.lines:
        pytest.fail("a background task failed: " + "; ".join(handler.lines[:3]), pytrace=False)


@pytest.fixture
def amqp_url() -> str:
    return AMQP_URL


@pytest.fixture
async def amqp() -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    """A robust connection the test itself uses to declare and read queues."""
    connection = await aio_pika.connect_robust(AMQP_URL, reconnect_interval=0.5)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def queue(amqp: aio_pika.abc.AbstractRobustConnection) -> AsyncIterator[str]:
    """A fresh durable queue with a random name, bound to the default exchange.

    Durable, so it survives the broker restarts of the fault tests; deleted afterwards.
    """
    name = f"test-{os.urandom(6).hex()}"
    channel = await amqp.channel()
    await channel.declare_queue(name, durable=True)
    try:
        yield name
    finally:
        try:
            await channel.queue_delete(name)
        finally:
            await channel.close()


@pytest.fixture
def spill_path(tmp_path: Path) -> Path:
    return tmp_path / "spill.db"
