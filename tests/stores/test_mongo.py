"""MongoStore beyond the shared contract: options, documents, indexes, and a server
that is down, frozen or restarted (nx-27017, driven through the real driver)."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import subprocess
import sys
import textwrap
import time
import types
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from pymongo import AsyncMongoClient, ReadPreference, WriteConcern, monitoring
from pymongo.errors import AutoReconnect

from aioproducer._exceptions import StoreUnavailable
from aioproducer._message import Properties
from aioproducer._stores._base import KeyCount, Store
from aioproducer._stores._mongo import (
    CLAIM_INDEX_KEYS,
    DEFAULT_TIMEOUTS_MS,
    MongoCollection,
    MongoStore,
)
from aioproducer._stores._sqlite import SQLiteStore
from tests.waiting import wait_until

from .backends import MONGO_NX, MONGO_URL, NO_PIPELINES, Backend, FakeClock
from .conftest import Messages
from .nx import NxServer

LEASE = 30.0


def test_from_url_does_no_io_and_needs_no_event_loop() -> None:
    store = MongoStore.from_url("mongodb://127.0.0.1:1/", "db", "coll")
    assert repr(store) == "MongoStore('db.coll')"
    assert store.write_concern == WriteConcern(w="majority", j=True)
    assert store.server_clock


def test_from_url_names_its_collection_and_client_by_default() -> None:
    store = MongoStore.from_url("mongodb://127.0.0.1:1/")
    assert repr(store) == "MongoStore('aioproducer.spill')"
    assert store._client is not None
    assert store._client.options.pool_options.metadata["application"] == {"name": "aioproducer"}
    mine = MongoStore.from_url("mongodb://127.0.0.1:1/", appname="billing")
    assert mine._client is not None
    assert mine._client.options.pool_options.metadata["application"] == {"name": "billing"}


def test_an_old_pymongo_is_named_in_the_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    old = types.ModuleType("pymongo")
    old.version = "4.9.2"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pymongo", old)
    with pytest.raises(ImportError) as raised:
        MongoStore.from_url("mongodb://127.0.0.1/")
    assert str(raised.value) == (
        "MongoStore needs PyMongo 4.10 or later: pip install 'aioproducer[mongo]' "
        "(found PyMongo 4.9.2)"
    )


def test_from_url_bounds_every_wait_by_default() -> None:
    store = MongoStore.from_url("mongodb://127.0.0.1:1/")
    options = store._client.options if store._client else None
    assert options is not None
    seconds = {name: ms / 1000 for name, ms in DEFAULT_TIMEOUTS_MS.items()}
    assert options.server_selection_timeout == seconds["serverSelectionTimeoutMS"]
    assert options.pool_options.connect_timeout == seconds["connectTimeoutMS"]
    assert options.timeout == seconds["timeoutMS"]
    assert store.timeout == options.timeout  # also bounds each store call as a whole


@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        pytest.param("mongodb://127.0.0.1:1/", {"timeoutMS": 1500, "connectTimeoutMS": 700}),
        pytest.param("mongodb://127.0.0.1:1/?timeoutms=1500&connectTimeoutMS=700", {}),
    ],
    ids=["keyword", "url"],
)
def test_from_url_leaves_the_users_timeouts(url: str, kwargs: dict[str, Any]) -> None:
    store = MongoStore.from_url(url, **kwargs)
    assert store._client is not None
    assert store._client.options.timeout == 1.5
    assert store._client.options.pool_options.connect_timeout == 0.7
    assert store.timeout == 1.5


def test_from_url_without_pymongo_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pymongo", None)
    with pytest.raises(ImportError, match=r"aioproducer\[mongo\]"):
        MongoStore.from_url("mongodb://127.0.0.1/")


def test_the_package_imports_without_pymongo() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["pymongo"] = None  # as if the mongo extra were not installed
        sys.modules["bson"] = None
        import aioproducer
        from aioproducer._stores._mongo import MongoStore
        try:
            MongoStore.from_url("mongodb://127.0.0.1/")
        except ImportError as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'aioproducer[mongo]'" in done.stdout


def test_the_largest_body_leaves_room_for_the_envelope() -> None:
    """Headers may take six times their 64 KiB wire size as escaped JSON."""
    assert MongoStore.max_body_size + 6 * 64 * 1024 + 64 * 1024 <= 16 * 1024 * 1024
    assert SQLiteStore.max_body_size + 6 * 64 * 1024 + 64 * 1024 <= 1_000_000_000


class _Commands(monitoring.CommandListener):
    """A PyMongo command listener: the commands the client sent, by name."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        #: The documents each ``find`` returned in its first batch.
        self.found: list[list[dict[str, Any]]] = []

    def started(self, event: Any) -> None:
        self.sent.append((event.command_name, dict(event.command)))

    def succeeded(self, event: Any) -> None:
        if event.command_name == "find":
            self.found.append(list(event.reply["cursor"]["firstBatch"]))

    def clear(self) -> None:
        self.sent.clear()
        self.found.clear()

    def failed(self, event: Any) -> None:
        pass


def _write_concerns(commands: _Commands) -> list[Any]:
    writes = ("insert", "update", "delete", "findAndModify")
    return [command.get("writeConcern") for name, command in commands.sent if name in writes]


async def test_every_write_goes_out_with_majority_journaled_by_default(
    mongo_backend: Backend, clock: FakeClock
) -> None:
    """What the client sends, not what the store asked for: the write concern on the wire."""
    for given, expected in ((None, {"w": "majority", "j": True}), (WriteConcern(w=1), {"w": 1})):
        listener = _Commands()
        store = MongoStore.from_url(
            mongo_backend.url,
            mongo_backend.collection.database.name,
            "spill",
            clock=clock,
            write_concern=given,
            event_listeners=[listener],
        )
        try:
            batch = Messages(clock).many(2)
            await store.put(batch)
            claimed = await store.claim("me", limit=1, lease=30.0)
            await store.ack([m.message_id for m in claimed])
            await store.release("me", [])
        finally:
            await store.close()
        concerns = _write_concerns(listener)
        assert len(concerns) >= 3, listener.sent
        assert all(concern == expected for concern in concerns), concerns
        reads = [c for name, c in listener.sent if name in ("find", "aggregate", "count")]
        modes = [c.get("$readPreference", {"mode": "primary"})["mode"] for c in reads]
        assert set(modes) <= {"primary"}, modes


async def test_claim_index_is_created_on_first_use(mongo_backend: Backend) -> None:
    store = mongo_backend.make()
    await store.count()
    await store.close()
    await store.count()  # reopening creates it again: a no-op
    indexes = await mongo_backend.collection.index_information()
    # nx-27017 names indexes its own way: look for the keys.
    assert [tuple(k) for k in CLAIM_INDEX_KEYS] in [
        [tuple(k) for k in index["key"]] for index in indexes.values()
    ]


async def test_document_layout(mongo_backend: Backend, clock: FakeClock) -> None:
    store = mongo_backend.make()
    message = Messages(clock)(body=b"\x00\xff", headers={"k": b"v"}, timestamp=1_700_000_000.25)
    await store.put([message])
    raw = mongo_backend.collection

    doc = await raw.find_one({"_id": message.message_id})
    assert doc == {
        "_id": message.message_id,
        "body": b"\x00\xff",
        "exchange": "",
        "routing_key": "orders",
        "content_type": "application/octet-stream",
        "headers": '{"$d":{"k":{"$b":"dg=="}}}',
        "timestamp": 1_700_000_000.25,
        "accepted_at": datetime.fromtimestamp(1_700_000_000.25, UTC).replace(tzinfo=None),
        "attempts": 0,
        "last_error": None,
        "due_at": 0.0,
        "dead": False,
        "lease_owner": None,
        "lease_until": 0.0,
        "lease_token": None,
    }

    (claimed,) = await store.claim("owner-1", limit=1, lease=LEASE)
    doc = await raw.find_one({"_id": message.message_id})
    assert doc["lease_owner"] == "owner-1"
    assert doc["lease_until"] == clock.now + LEASE
    assert doc["lease_token"] == claimed.lease_token

    await store.release("owner-1", [claimed])
    doc = await raw.find_one({"_id": message.message_id})
    assert (doc["lease_owner"], doc["lease_until"], doc["lease_token"]) == (None, 0.0, None)


async def test_accepted_at_is_utc_whatever_the_hosts_zone(
    mongo_backend: Backend, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "IST-5:30")  # a POSIX zone: needs no zone database
    time.tzset()
    try:
        store = mongo_backend.make()
        message = Messages(clock)(timestamp=1_700_000_000.25)
        await store.put([message])
        doc = await mongo_backend.collection.find_one({"_id": message.message_id})
        assert doc["accepted_at"] == datetime(2023, 11, 14, 22, 13, 20, 250_000)
    finally:
        monkeypatch.undo()
        time.tzset()


async def test_properties_are_a_subdocument_of_those_set(
    mongo_backend: Backend, clock: FakeClock
) -> None:
    store = mongo_backend.make()
    message = Messages(clock)(properties=Properties(priority=3, expiration="1500", mandatory=False))
    await store.put([message])
    doc = await mongo_backend.collection.find_one({"_id": message.message_id})
    assert doc["properties"] == {"priority": 3, "expiration": "1500", "mandatory": False}


async def test_a_document_from_before_properties_still_loads(
    mongo_backend: Backend, clock: FakeClock
) -> None:
    store = mongo_backend.make()
    message = Messages(clock)(properties=Properties(priority=1))
    await store.put([message])
    raw = mongo_backend.collection
    await raw.update_one({"_id": message.message_id}, {"$unset": {"properties": ""}})
    assert "properties" not in await raw.find_one({"_id": message.message_id})
    got = await store.get(message.message_id)
    assert got is not None and got.properties is None
    (claimed,) = await store.claim("a", limit=1, lease=LEASE)
    assert claimed.message_id == message.message_id and claimed.properties is None


async def test_a_document_from_before_dead_was_kept_counts_as_live(
    mongo_backend: Backend, clock: FakeClock
) -> None:
    """Documents of earlier versions have no ``dead`` field: read as false everywhere."""
    store = mongo_backend.make()
    message = Messages(clock)(exchange="ex", routing_key="old")
    await store.put([message])
    await mongo_backend.collection.update_one({"_id": message.message_id}, {"$unset": {"dead": ""}})
    assert await store.by_key() == [KeyCount("ex", "old", 1, 0)]
    got = await store.get(message.message_id)
    assert got is not None and not got.dead


async def test_a_requeued_document_carries_no_lease(
    mongo_backend: Backend, clock: FakeClock
) -> None:
    """Leased, then stored as dead by another producer, then requeued: the document
    has the documented fields only, and those of a message nobody leases."""
    store = mongo_backend.make()
    message = Messages(clock)()
    await store.put([message])
    await store.claim("owner-1", limit=1, lease=LEASE)
    await store.put([dataclasses.replace(message, attempts=5, dead=True)])
    raw = mongo_backend.collection
    leased = await raw.find_one({"_id": message.message_id})
    assert (leased["dead"], leased["lease_owner"]) == (True, "owner-1")
    assert await store.requeue([message.message_id]) == 1
    doc = await raw.find_one({"_id": message.message_id})
    assert set(doc) == set(leased)
    assert (doc["dead"], doc["attempts"], doc["due_at"]) == (False, 0, clock.now)
    assert (doc["lease_owner"], doc["lease_until"], doc["lease_token"]) == (None, 0.0, None)


async def test_reads_fetch_no_more_than_they_need(mongo_backend: Backend, clock: FakeClock) -> None:
    """What the driver sends and gets back: ``by_key`` fetches the names and the dead
    flag (never the bodies of a large backlog), ``backlog`` one timestamp, a claim
    picks the ids of its candidates in claim order, and ``scan`` pages ``batch``
    documents at a time in ``_id`` order, 500 by default."""
    listener = _Commands()
    store = MongoStore.from_url(
        mongo_backend.url,
        mongo_backend.database,
        "spill",
        clock=clock,
        event_listeners=[listener],
    )
    try:
        await store.put(Messages(clock).many(3))
        listener.clear()
        assert await store.by_key() == [KeyCount("", "orders", 3, 0)]
        [(name, command)] = listener.sent
        assert (name, command["filter"]) == ("find", {})
        [docs] = listener.found
        assert len(docs) == 3
        assert {field for doc in docs for field in doc} == {
            "_id",
            "exchange",
            "routing_key",
            "dead",
        }

        listener.clear()
        await store.backlog()
        [command] = [command for name, command in listener.sent if name == "find"]
        assert command["sort"] == {"timestamp": 1}
        [[doc]] = listener.found
        assert set(doc) == {"_id", "timestamp"}

        listener.clear()
        assert len(await store.claim("a", limit=2, lease=LEASE)) == 2
        pick = listener.sent[0][1]
        assert (listener.sent[0][0], pick["limit"]) == ("find", 2)
        assert pick["sort"] == {"due_at": 1, "timestamp": 1}
        assert {field for doc in listener.found[0] for field in doc} == {"_id"}

        listener.clear()
        assert len([m async for m in store.scan(batch=2)]) == 3
        assert [(name, c["limit"], c["sort"]) for name, c in listener.sent] == [
            ("find", 2, {"_id": 1})
        ] * 2
        assert [len(docs) for docs in listener.found] == [2, 1]
        listener.clear()
        assert len([m async for m in store.scan()]) == 3
        assert [(name, c["limit"]) for name, c in listener.sent] == [("find", 500)]
    finally:
        await store.close()


async def test_ack_and_release_take_one_command_per_batch(
    mongo_backend: Backend, clock: FakeClock
) -> None:
    """``ack`` deletes by id 1000 at a time; ``release``, and ``put`` for the failure
    records of held copies, send their updates unordered in one command (one failed
    update does not stop the others); ``close`` closes the client."""
    listener = _Commands()
    store = MongoStore.from_url(
        mongo_backend.url,
        mongo_backend.database,
        "spill",
        clock=clock,
        event_listeners=[listener],
        timeoutMS=30_000,  # 2,503 messages on a busy machine
    )
    try:
        batch = Messages(clock).many(2_503)
        await store.put(batch[:3])
        listener.clear()
        await store.put([dataclasses.replace(m, attempts=1) for m in batch[:2]])
        assert [(name, c["ordered"]) for name, c in listener.sent] == [
            ("insert", False),
            ("update", False),
        ]
        await store.put(batch[3:])
        claimed = await store.claim("a", limit=3, lease=LEASE)
        listener.clear()
        await store.release("a", claimed)
        [(name, command)] = listener.sent
        assert (name, command["ordered"], len(command["updates"])) == ("update", False, 3)

        listener.clear()
        await store.ack([m.message_id for m in batch[:3]])
        assert [name for name, _ in listener.sent] == ["delete"]
        listener.clear()
        await store.ack([m.message_id for m in batch[3:]])
        assert [len(c["deletes"][0]["q"]["_id"]["$in"]) for _, c in listener.sent] == [
            1000,
            1000,
            500,
        ]
        assert await store.count() == 0
        listener.clear()
    finally:
        await store.close()
    assert "endSessions" in [name for name, _ in listener.sent]  # its client was closed


async def test_a_given_collection_gets_the_stores_write_concern_and_deadline(
    mongo_backend: Backend, clock: FakeClock
) -> None:
    """``MongoStore(collection, write_concern=, timeout=)``: the writes go out with that
    write concern, and every command of a call carries what is left of ``timeout``
    (the client itself sets no ``timeoutMS`` here)."""
    listener = _Commands()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_backend.url, event_listeners=[listener]
    )
    store = MongoStore(
        client[mongo_backend.database]["given"],
        clock=clock,
        write_concern=WriteConcern(w=1),
        timeout=2.5,
    )
    try:
        assert (store.write_concern, store.timeout) == (WriteConcern(w=1), 2.5)
        assert repr(store) == f"MongoStore('{mongo_backend.database}.given')"
        await store.put(Messages(clock).many(2))
        claimed = await store.claim("me", limit=1, lease=LEASE)
        await store.ack([m.message_id for m in claimed])
        concerns = _write_concerns(listener)
        assert len(concerns) >= 3, listener.sent
        assert all(concern == {"w": 1} for concern in concerns), concerns
        ours = [c for name, c in listener.sent if name in ("createIndexes", "insert", "find")]
        assert ours and all(0 < c.get("maxTimeMS", 0) <= 2500 for c in ours), ours
    finally:
        await store.close()
        await client.close()


def test_an_unacknowledged_write_concern_is_refused() -> None:
    """With w=0 nothing answers a write: a message would count as stored unseen."""
    unacknowledged = WriteConcern(w=0)
    text = (
        "MongoStore needs an acknowledged write concern, not w=0: "
        "an unacknowledged write cannot tell a stored message from a lost one"
    )
    with pytest.raises(ValueError) as given:
        MongoStore(cast(MongoCollection, _ClaimRecorder()), write_concern=unacknowledged)
    with pytest.raises(ValueError) as from_url:
        MongoStore.from_url("mongodb://127.0.0.1:1/", write_concern=unacknowledged)
    assert str(given.value) == str(from_url.value) == text
    # Any acknowledged one is taken as given.
    for concern in (WriteConcern(w=1), WriteConcern(w="majority", j=True, wtimeout=5000)):
        assert MongoStore(cast(MongoCollection, _ClaimRecorder()), write_concern=concern)


def test_the_store_is_named_after_its_collection() -> None:
    """In its repr and every error text: the collection's full name, or, for a
    collection that has none, its class name."""
    assert repr(MongoStore(cast(MongoCollection, _ClaimRecorder()))) == "MongoStore('db.recorder')"

    class SpillCollection:
        full_name = None

    assert repr(MongoStore(cast(MongoCollection, object()))) == "MongoStore('object')"
    named = MongoStore(cast(MongoCollection, SpillCollection()))
    assert repr(named) == "MongoStore('SpillCollection')"


async def test_closing_a_store_leaves_the_callers_client_open(
    mongo_backend: Backend, clock: FakeClock
) -> None:
    collection: MongoCollection = mongo_backend.collection
    store = MongoStore(collection, clock=clock)
    await store.put(Messages(clock).many(2))
    await store.close()
    assert await collection.count_documents({}) == 2  # the client still works
    assert await store.count() == 2
    await store.close()


async def test_an_empty_claim_means_no_due_message_was_free(
    mongo_backend: Backend, clock: FakeClock
) -> None:
    """Claimers racing for the same oldest messages: none comes back empty while a
    due message is still free (leases are long and never released here, so the
    number of free messages only falls)."""
    stores = [mongo_backend.make() for _ in range(4)]
    await stores[0].put(Messages(clock).many(400))
    empty_while_due: list[int] = []

    async def claimer(n: int) -> int:
        store = stores[n % len(stores)]
        got = 0
        while batch := await store.claim(f"owner-{n}", limit=10, lease=600.0):
            got += len(batch)
        due = (await store.backlog()).due
        if due:
            empty_while_due.append(due)
        return got

    counts = await asyncio.gather(*(claimer(n) for n in range(12)))
    assert sum(counts) == 400
    assert empty_while_due == []


async def test_a_claim_takes_its_batch_in_a_few_commands_however_large(
    mongo_backend: Backend, clock: FakeClock
) -> None:
    """Round trips per claim, counted by the driver: the same few for 5 messages as
    for 60, none of them per message."""
    commands = _CommandNames()
    store = MongoStore.from_url(
        mongo_backend.url,
        mongo_backend.database,
        "spill",
        clock=clock,
        event_listeners=[commands],
    )
    try:
        await store.put(Messages(clock).many(65))
        sent = []
        for limit in (5, 60):
            commands.names.clear()
            claimed = await store.claim("a", limit=limit, lease=LEASE)
            assert len(claimed) == limit
            sent.append(commands.names.copy())
        assert sent == [["find", "update", "find"]] * 2
        assert await store.claim("a", limit=10, lease=LEASE) == []  # none left due
    finally:
        await store.close()


@pytest.mark.parametrize("taken", [5, 2], ids=["every-candidate", "some-candidates"])
async def test_a_claimer_that_loses_its_candidates_takes_the_next_ones(
    mongo_backend: Backend, clock: FakeClock, taken: int
) -> None:
    """Another claimer leases ``taken`` candidates of this claim between its pick and
    its update: this claim still takes the next due messages in claim order, one
    ``findAndModify`` each, never comes back empty and never takes more than its limit."""
    rival = mongo_backend.make()
    listener = _Commands()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_backend.url, event_listeners=[listener]
    )
    inner = client[mongo_backend.database]["spill"]
    store = MongoStore(cast(MongoCollection, _RivalFirst(inner, rival, taken)), clock=clock)
    try:
        put = Messages(clock).many(12)
        await rival.put(put[::-1])  # written in reverse: no claim order by accident
        mine = await store.claim("mine", limit=5, lease=LEASE)
        assert [m.message_id for m in mine] == [m.message_id for m in put[taken : taken + 5]]
        assert (await store.backlog()).due == 12 - taken - 5
        tokens = {m.lease_token for m in mine}
        assert len(tokens) == 1 and None not in tokens
        docs = await mongo_backend.collection.find({"lease_owner": "mine"}).to_list(None)
        assert sorted(d["_id"] for d in docs) == [m.message_id for m in mine]
        assert {d["lease_token"] for d in docs} == tokens
        theirs = await mongo_backend.collection.find({"lease_owner": "rival"}).to_list(None)
        assert sorted(d["_id"] for d in theirs) == sorted(m.message_id for m in put[:taken])
        takeovers = [c for name, c in listener.sent if name == "findAndModify"]
        assert len(takeovers) == taken
        assert all(c["sort"] == {"due_at": 1, "timestamp": 1} and c["new"] for c in takeovers)
    finally:
        await store.close()
        await client.close()


async def test_a_failed_claim_returns_only_once_its_takeovers_have_finished() -> None:
    """One ``find_one_and_update`` of the takeover fails while the others are still
    in flight: the claim raises only after they finish, never leaving requests
    running behind a call that has already failed."""
    collection = _TakeoverGate()
    store = MongoStore(cast(MongoCollection, collection), clock=FakeClock())
    claim = asyncio.ensure_future(store.claim("a", limit=3, lease=LEASE))

    async def others_in_flight() -> bool:
        return collection.in_flight == 2

    try:
        await wait_until(others_in_flight, what="two takeovers in flight")
        assert collection.failed == 1
        assert not claim.done()
    finally:
        collection.gate.set()
    with pytest.raises(StoreUnavailable, match=r"^MongoDB claim on db\.gate failed: "):
        await claim
    assert collection.in_flight == 0
    await store.close()


class _TakeoverGate:
    """A collection whose claim loses its one candidate, and whose first
    ``find_one_and_update`` fails while the later ones wait for ``gate``."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.failed = 0
        self.in_flight = 0

    @property
    def full_name(self) -> str:
        return "db.gate"

    def with_options(self, **options: Any) -> _TakeoverGate:
        return self

    async def create_index(self, keys: Any, /, *, name: str) -> object:
        return name

    def find(self, filter: dict[str, Any], projection: Any = None, /, **options: Any) -> _Listed:
        return _Listed([{"_id": "m-1"}] if "lease_token" not in filter else [])

    async def update_many(self, filter: dict[str, Any], update: Any, /) -> object:
        return None

    async def find_one_and_update(
        self,
        filter: dict[str, Any],
        update: Any,
        /,
        *,
        sort: Any = None,
        return_document: bool = False,
    ) -> dict[str, Any] | None:
        if not self.failed:
            self.failed += 1
            raise AutoReconnect("connection reset by peer")
        self.in_flight += 1
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1
        return None


class _CommandNames(monitoring.CommandListener):
    """Names of the commands a client sends, handshakes left out."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name.lower() not in {"hello", "ismaster", "ping", "endsessions"}:
            self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


class _RivalFirst:
    """A driver collection where ``rival`` claims ``taken`` messages first, once, just
    before the first ``update_many``: a race lost at the worst moment, made to happen."""

    def __init__(self, inner: Any, rival: Store, taken: int = 5) -> None:
        self._inner = inner
        self._rival: Store | None = rival
        self._taken = taken

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def full_name(self) -> str:
        return str(self._inner.full_name)

    def with_options(self, **options: Any) -> _RivalFirst:
        assert self._rival is not None
        return _RivalFirst(self._inner.with_options(**options), self._rival, self._taken)

    async def update_many(self, filter: Any, update: Any, /) -> object:
        rival, self._rival = self._rival, None
        if rival is not None:
            taken = await rival.claim("rival", limit=self._taken, lease=LEASE)
            assert len(taken) == self._taken
        return await self._inner.update_many(filter, update)


# Server-clock leases: MongoDB only


async def test_leases_run_on_the_servers_clock(
    mongo_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    if mongo_backend.name == MONGO_NX:
        pytest.skip(NO_PIPELINES)
    messages = Messages(time.time)
    store = MongoStore.from_url(mongo_backend.url, mongo_backend.database, "server_clock")
    ahead = MongoStore.from_url(mongo_backend.url, mongo_backend.database, "server_clock")
    try:
        await store.put(messages.many(3))
        claimed = await store.claim("a", limit=10, lease=60.0)
        assert len(claimed) == 3
        # A host whose clock runs an hour ahead sees the lease as the server does.
        real_time = time.time
        monkeypatch.setattr("aioproducer._stores._mongo.time.time", lambda: real_time() + 3600)
        assert await ahead.claim("b", limit=10, lease=60.0) == []
        monkeypatch.undo()
        await store.release("a", claimed[:1])
        assert len(await ahead.claim("b", limit=10, lease=0.3)) == 1

        async def lease_expired() -> bool:
            return len(await store.claim("c", limit=10, lease=60.0)) == 1

        await wait_until(lease_expired, timeout=30, what="a 0.3 s lease to expire on the server")
        backlog = await store.backlog()
        assert (backlog.total, backlog.leased, backlog.due) == (3, 3, 0)
    finally:
        await store.close()
        await ahead.close()


async def test_nx_27017_cannot_run_server_clock_claims(nx_module: NxServer) -> None:
    """What the tests work around by giving nx-27017 stores a clock: it runs no update
    pipelines, and reads ``$$NOW`` in a query as missing, so a server-clock claim
    finds no candidate and leases nothing, however due the messages."""
    database = f"pipelines_{time.time_ns()}"
    store = MongoStore.from_url(nx_module.url, database, "spill")
    clocked = MongoStore.from_url(nx_module.url, database, "spill", clock=time.time)
    try:
        await store.put(Messages(time.time).many(1))
        assert await store.claim("a", limit=1, lease=LEASE) == []
        assert len(await clocked.claim("b", limit=1, lease=LEASE)) == 1  # it was free
    finally:
        await store.close()
        await clocked.close()


# A server that is down, frozen or restarted


async def _timed(call: Awaitable[object]) -> tuple[float, BaseException | None]:
    began = time.monotonic()
    try:
        await call
    except Exception as exc:
        return time.monotonic() - began, exc
    return time.monotonic() - began, None


def _record(figures: dict[str, float], name: str, seconds: float) -> None:
    figures[name] = max(figures.get(name, 0.0), seconds)


async def test_server_down_every_call_fails_as_unavailable_within_the_bound(
    nx_server: NxServer, figures: dict[str, float]
) -> None:
    """Default timeouts: how long each call took is reported as a figure."""
    nx_server.kill()
    store = MongoStore.from_url(nx_server.url, "db", "spill", clock=time.time)
    message = Messages(time.time)()
    try:
        results = await asyncio.gather(
            _timed(store.put([message])), _timed(store.claim("a", limit=10, lease=LEASE))
        )
        for seconds, error in results:
            assert isinstance(error, StoreUnavailable), error
            _record(figures, "longest store call, server down (s)", seconds)
    finally:
        await store.close()


# Closing the store cancels the driver's monitor mid-connect to the dead server, which
# can leak that attempt's socket (PYTHON-5867), reported when it is collected.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_concurrent_first_callers_share_one_open_attempt(
    nx_server: NxServer, figures: dict[str, float]
) -> None:
    nx_server.kill()
    store = MongoStore.from_url(nx_server.url, "db", "spill", clock=time.time)
    clients: list[object] = []
    connect = store._connect
    assert connect is not None

    def counting_connect() -> Any:
        client = connect()
        clients.append(client)
        return client

    store._connect = counting_connect
    try:
        results = await asyncio.gather(*(_timed(store.count()) for _ in range(5)))
        assert all(isinstance(error, StoreUnavailable) for _, error in results)
        assert clients == []  # one attempt, on the client from_url made
        _record(
            figures,
            "longest of 5 concurrent first calls, server down (s)",
            max(seconds for seconds, _ in results),
        )
    finally:
        await store.close()


# PyMongo's async driver leaks the socket of a connect it cancels (PYTHON-5867).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_frozen_server_is_cut_off_by_the_operation_timeout(
    nx_server: NxServer, figures: dict[str, float]
) -> None:
    """SIGSTOP: connections are accepted, nothing answers. Default timeouts."""
    opened = MongoStore.from_url(nx_server.url, "db", "spill", clock=time.time)
    fresh = MongoStore.from_url(nx_server.url, "db", "spill", clock=time.time)
    messages = Messages(time.time)
    try:
        await opened.put(messages.many(2))
        nx_server.freeze()
        results = await asyncio.gather(
            _timed(opened.put(messages.many(1))),
            _timed(opened.claim("a", limit=10, lease=LEASE)),
            _timed(fresh.count()),  # first use: the handshake gets no answer
        )
        for seconds, error in results:
            assert isinstance(error, StoreUnavailable), error
            _record(figures, "longest store call, server frozen (s)", seconds)
        nx_server.thaw()

        async def answers() -> bool:
            try:
                return await opened.count() >= 2
            except StoreUnavailable:
                return False

        await wait_until(answers, timeout=60, what="the thawed server to answer")
        assert len(await fresh.claim("a", limit=10, lease=LEASE)) >= 2
    finally:
        nx_server.thaw()
        await opened.close()
        await fresh.close()
        gc.collect()  # the leaked socket is reported here, under this test's filters


async def test_restarted_server_serves_the_messages_again(nx_server: NxServer) -> None:
    store = MongoStore.from_url(nx_server.url, "db", "spill", clock=time.time, timeoutMS=1000)
    messages = Messages(time.time)
    batch = messages.many(5)
    try:
        await store.put(batch)
        nx_server.kill()
        with pytest.raises(StoreUnavailable):
            await store.put(messages.many(1))
        nx_server.start()

        async def answers() -> bool:
            try:
                return await store.count() == 5
            except StoreUnavailable:
                return False

        await wait_until(answers, timeout=60, what="the restarted server to answer")
        claimed = await store.claim("a", limit=10, lease=LEASE)
        assert sorted(m.message_id for m in claimed) == sorted(m.message_id for m in batch)
    finally:
        await store.close()


@pytest.mark.skipif(MONGO_URL is None, reason="Motor against a real server only")
async def test_a_motor_collection_works(mongo_backend: Backend, clock: FakeClock) -> None:
    from motor.motor_asyncio import AsyncIOMotorClient

    if mongo_backend.name == MONGO_NX:
        pytest.skip("Motor is tested against the real server")
    client: AsyncIOMotorClient[dict[str, Any]] = AsyncIOMotorClient(
        mongo_backend.url, serverSelectionTimeoutMS=5000
    )
    try:
        store = MongoStore(client[mongo_backend.database]["motor"], clock=clock)
        batch = Messages(clock).many(3)
        await store.put(batch)
        await store.put(batch[:1])
        claimed = await store.claim("a", limit=10, lease=LEASE)
        assert [m.message_id for m in claimed] == [m.message_id for m in batch]
        await store.release("a", claimed[:1])
        await store.ack([m.message_id for m in claimed[1:]])
        assert await store.count() == 1
        await store.close()
    finally:
        client.close()


async def test_closing_while_opening_fails_the_waiting_calls_as_unavailable(
    nx_server: NxServer,
) -> None:
    nx_server.kill()
    store = MongoStore.from_url(nx_server.url, "db", "spill", clock=time.time)
    waiting = asyncio.gather(store.count(), store.count(), return_exceptions=True)

    async def opening() -> bool:
        return store._opening is not None

    await wait_until(opening, what="the first open attempt")
    await store.close()
    results = await waiting
    assert [type(result) for result in results] == [StoreUnavailable, StoreUnavailable]
    assert [str(result) for result in results] == [
        "MongoDB store db.spill closed while opening"
    ] * 2


async def test_a_given_collection_is_used_with_the_stores_options_and_index() -> None:
    """Reads from the primary and the store's write concern, whatever the collection's
    own; the claim index under its documented name; again after each reopen."""
    collection = _ClaimRecorder()
    store = MongoStore(cast(MongoCollection, collection), write_concern=WriteConcern(w=2))
    await store.close()  # never used: nothing to close
    await store.backlog()
    await store.backlog()
    await store.close()
    await store.backlog()
    opened = {"read_preference": ReadPreference.PRIMARY, "write_concern": WriteConcern(w=2)}
    assert collection.options == [opened, opened]
    assert collection.indexes == [(CLAIM_INDEX_KEYS, "aioproducer_claim_by_due")] * 2
    await store.close()


async def test_a_failed_open_is_tried_again_by_the_next_call() -> None:
    collection = _ClaimRecorder()
    collection.index_errors.append(AutoReconnect("connection reset by peer"))
    store = MongoStore(cast(MongoCollection, collection))
    with pytest.raises(StoreUnavailable) as raised:
        await store.backlog()
    where = "MongoDB backlog on db.recorder failed"
    assert str(raised.value) == f"{where}: unavailable (AutoReconnect: connection reset by peer)"
    assert (await store.backlog()).total == 0
    assert len(collection.indexes) == 2
    await store.close()


async def test_a_caller_cancelled_as_close_stops_the_open_stays_cancelled() -> None:
    """close() stops an open two calls wait for; one of them is cancelled at that
    moment (its own deadline): it ends cancelled, the other fails as unavailable."""
    collection = _ClaimRecorder()
    collection.index_gate = asyncio.Event()
    store = MongoStore(cast(MongoCollection, collection))
    cancelled = asyncio.ensure_future(store.backlog())
    waiting = asyncio.ensure_future(store.backlog())
    await collection.index_entered.wait()
    collection.on_index_cancelled = cancelled.cancel
    await store.close()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    with pytest.raises(StoreUnavailable) as raised:
        await waiting
    assert str(raised.value) == "MongoDB store db.recorder closed while opening"


async def test_a_client_that_fails_to_close_is_a_store_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = MongoStore.from_url("mongodb://127.0.0.1:1/", "db", "spill")
    client = store._client
    assert client is not None

    async def failing_close() -> None:
        raise ConnectionResetError(104, "reset by peer")

    monkeypatch.setattr(client, "close", failing_close)
    with pytest.raises(StoreUnavailable) as raised:
        await store.close()
    assert (
        str(raised.value) == "MongoDB close on db.spill failed: unavailable (ConnectionResetError)"
    )
    monkeypatch.undo()
    await client.close()
    await store.close()  # the client is forgotten all the same


async def test_a_server_clock_claim_sets_and_checks_leases_with_now() -> None:
    """What a claim sends when no clock is given (run for real against MongoDB only):
    the recorder offers one candidate and lets the claim win nothing, so every step
    of the claim, the one-by-one takeover included, shows its filter and update."""
    collection = _ClaimRecorder()
    store = MongoStore(cast(MongoCollection, collection))
    assert await store.claim("$owner", limit=3, lease=30.0) == []
    server_now = {"$divide": [{"$toLong": "$$NOW"}, 1000]}
    [pick, read_back] = collection.finds
    [(batch, batch_update)] = collection.update_manys
    assert read_back["lease_token"] == batch_update[0]["$set"]["lease_token"]
    assert batch["_id"] == {"$in": ["m-1"]}
    for query in (pick, batch, *(q for q, _ in collection.find_one_and_updates)):
        assert query["$expr"] == {"$lte": ["$lease_until", server_now]}
        assert "lease_until" not in query
        assert query["dead"] == {"$ne": True}
    assert collection.find_one_and_updates  # the takeover after losing its candidate
    for update in (batch_update, *(u for _, u in collection.find_one_and_updates)):
        assert isinstance(update, list)
        (stage,) = update
        assert stage["$set"]["lease_until"] == {"$add": [server_now, 30.0]}
        assert stage["$set"]["lease_owner"] == {"$literal": "$owner"}  # never a field path
    await store.close()


async def test_a_server_clock_backlog_compares_leases_with_now() -> None:
    """What a backlog counts by when no clock is given (run for real against MongoDB
    only): leases against the server's ``$$NOW``, live ones only for leased and held."""
    collection = _ClaimRecorder()
    store = MongoStore(cast(MongoCollection, collection))
    assert (await store.backlog()).oldest == 1.5
    server_now = {"$divide": [{"$toLong": "$$NOW"}, 1000]}
    [total, dead, leased, held] = collection.counts
    assert (total, dead) == ({}, {"dead": True})
    assert leased == {"dead": {"$ne": True}, "$expr": {"$gt": ["$lease_until", server_now]}}
    assert set(held) == {"dead", "$expr", "due_at"}
    assert held["dead"] == {"$ne": True}
    assert held["$expr"] == {"$lte": ["$lease_until", server_now]}
    await store.close()


class _ClaimRecorder:
    """A collection that records what claims ask for: its ``find`` offers one
    candidate, which every update then finds taken. It records what backlogs count."""

    def __init__(self) -> None:
        self.counts: list[dict[str, Any]] = []
        self.finds: list[dict[str, Any]] = []
        #: What each open asked for: the options, then the index.
        self.options: list[dict[str, Any]] = []
        self.indexes: list[tuple[Any, str]] = []
        #: Errors the next index creations raise, in turn.
        self.index_errors: list[Exception] = []
        #: When set, index creation waits for it (and says so in ``index_entered``).
        self.index_gate: asyncio.Event | None = None
        self.index_entered = asyncio.Event()
        self.on_index_cancelled: Callable[[], object] = lambda: None
        self.update_manys: list[tuple[dict[str, Any], Any]] = []
        self.find_one_and_updates: list[tuple[dict[str, Any], Any]] = []

    @property
    def full_name(self) -> str:
        return "db.recorder"

    def with_options(self, **options: Any) -> _ClaimRecorder:
        self.options.append(options)
        return self

    async def create_index(self, keys: Any, /, *, name: str) -> object:
        self.indexes.append((keys, name))
        if self.index_errors:
            raise self.index_errors.pop(0)
        if self.index_gate is not None:
            self.index_entered.set()
            try:
                await self.index_gate.wait()
            except asyncio.CancelledError:
                self.on_index_cancelled()
                raise
        return name

    def find(self, filter: dict[str, Any], projection: Any = None, /, **options: Any) -> _Listed:
        self.finds.append(filter)
        return _Listed([{"_id": "m-1", "timestamp": 1.5}] if len(self.finds) == 1 else [])

    async def update_many(self, filter: dict[str, Any], update: Any, /) -> object:
        self.update_manys.append((filter, update))
        return None

    async def count_documents(self, filter: dict[str, Any], /) -> int:
        self.counts.append(filter)
        return 0

    async def find_one_and_update(
        self,
        filter: dict[str, Any],
        update: Any,
        /,
        *,
        sort: Any = None,
        return_document: bool = False,
    ) -> dict[str, Any] | None:
        self.find_one_and_updates.append((filter, update))
        return None


class _Listed:
    """A cursor over documents given in advance."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self._docs = docs

    async def to_list(self, length: int | None = None, /) -> list[dict[str, Any]]:
        return self._docs
