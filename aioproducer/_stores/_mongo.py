"""MongoStore: the production store, one MongoDB collection shared by every producer.

This is the only module that imports PyMongo, and it does so lazily: ``import
aioproducer`` works without the ``mongo`` extra, and :class:`MongoStore` says what
to install when it is used without it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from .._exceptions import StoreError
from .._message import Message, decode_headers, encode_headers

if TYPE_CHECKING:
    from types import ModuleType, TracebackType

    from pymongo import AsyncMongoClient
    from pymongo.write_concern import WriteConcern

__all__ = ["MongoCollection", "MongoCursor", "MongoStore"]

log = logging.getLogger("aioproducer.store")

#: Serves the claim query: walk messages in accept order, filtering on the due and
#: lease fields without fetching documents (``_id`` makes the candidate scan covered).
CLAIM_INDEX_NAME = "aioproducer_claim"
CLAIM_INDEX_KEYS = [("timestamp", 1), ("due_at", 1), ("lease_until", 1), ("_id", 1)]

_DUPLICATE_KEY = 11000
_ACK_CHUNK = 1000
_INSTALL_HINT = "MongoStore needs PyMongo 4.10 or later: pip install 'aioproducer[mongo]'"


class MongoCursor(Protocol):
    """The part of a PyMongo ``AsyncCursor`` (or Motor cursor) that MongoStore uses."""

    def to_list(self, length: int | None = ..., /) -> Awaitable[list[Any]]: ...


class MongoCollection(Protocol):
    """The part of a PyMongo ``AsyncCollection`` that MongoStore uses.

    A Motor ``AsyncIOMotorCollection`` has the same methods, so either can be passed.
    """

    def with_options(
        self, *, read_preference: Any = ..., write_concern: Any = ...
    ) -> MongoCollection: ...

    def create_index(self, keys: Any, /, *, name: str) -> Awaitable[object]: ...

    def insert_many(
        self, documents: Iterable[dict[str, Any]], /, *, ordered: bool = ...
    ) -> Awaitable[object]: ...

    def update_many(
        self, filter: Mapping[str, Any], update: Mapping[str, Any], /
    ) -> Awaitable[object]: ...

    def bulk_write(
        self, requests: Sequence[Any], /, *, ordered: bool = ...
    ) -> Awaitable[object]: ...

    def delete_many(self, filter: Mapping[str, Any], /) -> Awaitable[object]: ...

    def count_documents(self, filter: Mapping[str, Any], /) -> Awaitable[int]: ...

    def find(
        self,
        filter: Mapping[str, Any],
        projection: Mapping[str, Any] | None = ...,
        /,
        *,
        sort: Any = ...,
        limit: int = ...,
    ) -> MongoCursor: ...


def _pymongo() -> ModuleType:
    """PyMongo, imported on first use, or an ImportError that says what to install."""
    try:
        import pymongo
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    if not hasattr(pymongo, "AsyncMongoClient"):
        raise ImportError(f"{_INSTALL_HINT} (found PyMongo {pymongo.version})")
    return pymongo


class MongoStore:
    """Messages kept in one MongoDB collection, one document per message.

    Several producers, in one process or on many hosts, may share the collection:
    :meth:`claim` hands each due message to one owner at a time (see there why).

    ``collection`` is a PyMongo ``AsyncCollection`` or a Motor collection; the store
    never closes its client. :meth:`from_url` builds a client the store owns instead.
    Writes use ``write_concern``, by default ``WriteConcern(w="majority", j=True)``:
    a message counts as stored only once a majority of the replica set has it in its
    on-disk journal. Reads go to the primary. ``clock`` gives wall-clock seconds, the
    time base of ``due_at`` and of leases (injected in tests).
    """

    #: MongoDB's 16 MiB document limit, less room for the envelope: ids, names,
    #: headers (at most 64 KiB on the wire, a little more as tagged JSON) and leases.
    max_body_size = 16 * 1024 * 1024 - 256 * 1024

    def __init__(
        self,
        collection: MongoCollection,
        *,
        clock: Callable[[], float] = time.time,
        write_concern: WriteConcern | None = None,
    ) -> None:
        self._setup(clock, write_concern, name=_full_name(collection))
        self._given: MongoCollection | None = collection

    @classmethod
    def from_url(
        cls,
        url: str,
        database: str = "aioproducer",
        collection: str = "spill",
        *,
        clock: Callable[[], float] = time.time,
        write_concern: WriteConcern | None = None,
        **client_kwargs: Any,
    ) -> MongoStore:
        """A store on ``database.collection`` at ``url``, with a client of its own.

        ``client_kwargs`` go to ``pymongo.AsyncMongoClient`` (for example
        ``serverSelectionTimeoutMS=5000`` or ``tls=True``). The client is checked
        here but connects only on first use; :meth:`close` closes it, and the next
        use builds a fresh one (a closed PyMongo client cannot be reopened).
        """
        pymongo = _pymongo()
        client_kwargs.setdefault("appname", "aioproducer")

        def connect() -> AsyncMongoClient[dict[str, Any]]:
            client: AsyncMongoClient[dict[str, Any]] = pymongo.AsyncMongoClient(
                url, **client_kwargs
            )
            return client

        try:
            first = connect()  # validates the URL and options; no I/O until first use
        except pymongo.errors.PyMongoError as exc:
            raise StoreError(f"MongoDB configuration is invalid: {exc}") from exc
        store = cls.__new__(cls)
        store._setup(clock, write_concern, name=f"{database}.{collection}")
        store._given = None
        store._connect = connect
        store._client = first
        store._database = database
        store._collection_name = collection
        return store

    def _setup(
        self, clock: Callable[[], float], write_concern: WriteConcern | None, *, name: str
    ) -> None:
        pymongo = _pymongo()
        self._clock = clock
        self._write_concern: WriteConcern = (
            write_concern
            if write_concern is not None
            else pymongo.WriteConcern(w="majority", j=True)
        )
        self._name = name
        self._connect: Callable[[], AsyncMongoClient[dict[str, Any]]] | None = None
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._database = ""
        self._collection_name = ""
        self._coll: MongoCollection | None = None
        self._open_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"MongoStore({self._name!r})"

    @property
    def write_concern(self) -> WriteConcern:
        """The write concern every write of this store uses."""
        return self._write_concern

    async def _collection(self) -> MongoCollection:
        if self._coll is not None:
            return self._coll
        async with self._open_lock:
            if self._coll is None:
                self._coll = await self._open()
                log.debug("opened MongoDB collection %s", self._name)
        return self._coll

    async def _open(self) -> MongoCollection:
        """The collection with our write concern and read preference, indexes ensured."""
        pymongo = _pymongo()
        client = None
        if self._given is not None:
            base = self._given
        else:
            assert self._connect is not None
            client = self._client if self._client is not None else self._connect()
            self._client = None
            base = client[self._database][self._collection_name]
        try:
            coll = base.with_options(
                read_preference=pymongo.ReadPreference.PRIMARY,
                write_concern=self._write_concern,
            )
            await coll.create_index(CLAIM_INDEX_KEYS, name=CLAIM_INDEX_NAME)
        except BaseException:
            if client is not None:
                await client.close()
            raise
        self._client = client
        return coll

    async def put(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        docs = [_to_document(m) for m in messages]
        errors = _pymongo().errors
        async with _translate("put", self._name):
            coll = await self._collection()
            try:
                await coll.insert_many(docs, ordered=False)
            except errors.BulkWriteError as exc:
                _ignore_duplicates(exc)

    async def claim(self, owner: str, *, limit: int, lease: float) -> list[Message]:
        """Lease up to ``limit`` due messages to ``owner``, oldest accepted first.

        MongoDB has no ``UPDATE ... LIMIT ... RETURNING``, so a claim takes three
        steps (the outbox-relay pattern):

        1. find the ids of up to ``limit`` due, unleased messages, oldest first;
        2. ``update_many`` those ids, *repeating the due-and-unleased condition in
           the filter*, to set ``lease_owner``, ``lease_until`` and a fresh random
           ``claim_token``;
        3. read back the documents carrying that token.

        Why this is safe under concurrency, across processes and hosts: MongoDB
        applies an update to each document atomically, and evaluates the filter
        against that document as it is when the write happens (a write conflict
        with a concurrent update makes the server retry the document and evaluate
        the filter again). So when two claimers pick the same candidate in step 1,
        the first update leases it, and the second one's filter no longer matches
        (``lease_until`` is now in the future): the document keeps the first token.
        Step 3 returns only documents carrying this claim's token, so each due
        message goes to one claim, and one owner, until its lease runs out. The
        token also keeps two concurrent claims by the same owner apart, and keeps
        messages this owner leased earlier out of this claim's answer.

        The lease is wall-clock time from this host's ``clock``; hosts sharing a
        collection need synchronised clocks (NTP), and ``lease`` far above their
        skew. A claim that fails between steps 2 and 3 leaves its messages leased
        to nobody who knows it; they are due again when the lease expires.
        """
        if limit <= 0:
            return []
        now = self._clock()
        due = {"due_at": {"$lte": now}, "lease_until": {"$lte": now}}
        token = uuid.uuid4().hex
        async with _translate("claim", self._name):
            coll = await self._collection()
            cursor = coll.find(due, {"_id": 1}, sort=[("timestamp", 1)], limit=limit)
            ids = [doc["_id"] for doc in await cursor.to_list(None)]
            if not ids:
                return []
            await coll.update_many(
                {"_id": {"$in": ids}, **due},
                {
                    "$set": {
                        "lease_owner": owner,
                        "lease_until": now + lease,
                        "claim_token": token,
                    }
                },
            )
            cursor = coll.find(
                {"_id": {"$in": ids}, "lease_owner": owner, "claim_token": token},
                sort=[("timestamp", 1)],
            )
            docs = await cursor.to_list(None)
        return [_from_document(doc) for doc in docs]

    async def ack(self, message_ids: Sequence[str]) -> None:
        if not message_ids:
            return
        ids = list(message_ids)
        async with _translate("ack", self._name):
            coll = await self._collection()
            for start in range(0, len(ids), _ACK_CHUNK):
                await coll.delete_many({"_id": {"$in": ids[start : start + _ACK_CHUNK]}})

    async def release(self, owner: str, messages: Sequence[Message]) -> None:
        if not messages:
            return
        update_one = _pymongo().UpdateOne
        requests = [
            update_one(
                {"_id": m.message_id, "lease_owner": owner},
                {
                    "$set": {
                        "attempts": m.attempts,
                        "last_error": m.last_error,
                        "due_at": m.due_at,
                        "lease_owner": None,
                        "lease_until": 0.0,
                        "claim_token": None,
                    }
                },
            )
            for m in messages
        ]
        async with _translate("release", self._name):
            coll = await self._collection()
            await coll.bulk_write(requests, ordered=False)

    async def count(self) -> int:
        async with _translate("count", self._name):
            coll = await self._collection()
            return await coll.count_documents({})

    async def close(self) -> None:
        """Forget the open collection; close the client if :meth:`from_url` made it."""
        async with self._open_lock:
            self._coll = None
            client, self._client = self._client, None
            if client is not None:
                async with _translate("close", self._name):
                    await client.close()


def _full_name(collection: MongoCollection) -> str:
    name = getattr(collection, "full_name", None)
    return name if isinstance(name, str) else type(collection).__name__


def _to_document(m: Message) -> dict[str, Any]:
    return {
        "_id": m.message_id,
        "body": m.body,
        "exchange": m.exchange,
        "routing_key": m.routing_key,
        "content_type": m.content_type,
        "headers": encode_headers(m.headers),
        "timestamp": m.timestamp,
        "accepted_at": datetime.fromtimestamp(m.timestamp, UTC),
        "attempts": m.attempts,
        "last_error": m.last_error,
        "due_at": m.due_at,
        "lease_owner": None,
        "lease_until": 0.0,
        "claim_token": None,
    }


def _from_document(doc: Mapping[str, Any]) -> Message:
    return Message(
        message_id=doc["_id"],
        body=bytes(doc["body"]),
        exchange=doc["exchange"],
        routing_key=doc["routing_key"],
        content_type=doc["content_type"],
        headers=decode_headers(doc["headers"]),
        timestamp=doc["timestamp"],
        attempts=doc["attempts"],
        last_error=doc["last_error"],
        due_at=doc["due_at"],
    )


def _ignore_duplicates(exc: Any) -> None:
    """Swallow a ``BulkWriteError`` made only of duplicate keys; re-raise anything else.

    A duplicate ``_id`` is a message the store already holds, which ``put`` leaves
    as it is. Any other write error, or a write concern error (the batch is not
    known to be durable), fails the put.
    """
    details = exc.details
    others = [e for e in details.get("writeErrors", ()) if e.get("code") != _DUPLICATE_KEY]
    if others or details.get("writeConcernErrors"):
        raise exc
    log.debug("put: %d messages already stored", len(details.get("writeErrors", ())))


class _translate:
    """Turn PyMongo errors into :class:`StoreError`, naming the operation."""

    def __init__(self, operation: str, name: str) -> None:
        self.operation = operation
        self.name = name

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, StoreError):
            return
        if isinstance(exc, _pymongo().errors.PyMongoError):
            raise StoreError(f"MongoDB {self.operation} on {self.name} failed: {exc}") from exc
