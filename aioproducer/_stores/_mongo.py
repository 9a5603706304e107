"""MongoStore: the production store, one MongoDB collection shared by every producer.

This is the only module that imports PyMongo, and it does so lazily: ``import
aioproducer`` works without the ``mongo`` extra, and :class:`MongoStore` says what
to install when it is used without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from .._exceptions import StoreError, StoreRejected, StoreUnavailable
from .._message import (
    Message,
    decode_headers,
    encode_headers,
    properties_from_dict,
    properties_to_dict,
)
from ._base import Backlog, KeyCount
from ._errors import short, translating

if TYPE_CHECKING:
    from types import ModuleType

    from pymongo import AsyncMongoClient
    from pymongo.write_concern import WriteConcern

__all__ = ["MongoCollection", "MongoCursor", "MongoStore"]

log = logging.getLogger("aioproducer.store")

#: Serves the claim: due messages in claim order (earliest due, then oldest accepted),
#: with the lease and dead flag in the keys so that leased and dead messages are
#: skipped without fetching them. Messages not due yet sort after every due one.
CLAIM_INDEX_NAME = "aioproducer_claim_by_due"
CLAIM_INDEX_KEYS = [("due_at", 1), ("timestamp", 1), ("lease_until", 1), ("dead", 1)]
CLAIM_SORT = [("due_at", 1), ("timestamp", 1)]

#: Defaults :meth:`MongoStore.from_url` gives the client, unless the URL or the
#: keyword arguments set them: how long to look for a server, to open a connection,
#: and (PyMongo's client-side operation timeout) to finish an operation.
DEFAULT_TIMEOUTS_MS = {
    "serverSelectionTimeoutMS": 5_000,
    "connectTimeoutMS": 5_000,
    "timeoutMS": 5_000,
}

#: How many ``find_one_and_update`` calls one claim keeps in flight once it has lost
#: candidates of its batch to another claimer (see :meth:`MongoStore.claim`).
CLAIM_CONCURRENCY = 8

#: The server's clock, in seconds since the epoch, inside an aggregation expression.
_SERVER_NOW = {"$divide": [{"$toLong": "$$NOW"}, 1000]}

_DUPLICATE_KEY = 11000
_ACK_CHUNK = 1000
_INSTALL_HINT = "MongoStore needs PyMongo 4.10 or later: pip install 'aioproducer[mongo]'"

#: Server error codes that mean "this document cannot be stored as it is".
_REJECTING_CODES = frozenset(
    {
        2,  # BadValue
        14,  # TypeMismatch
        52,  # DollarPrefixedFieldName
        55,  # InvalidDBRef
        56,  # EmptyFieldName
        57,  # DottedFieldName
        121,  # DocumentValidationFailure
        10334,  # BSONObjectTooLarge
        17280,  # KeyTooLong
        17419,  # document too large after an update
    }
)


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

    def find_one_and_update(
        self,
        filter: Mapping[str, Any],
        update: Any,
        /,
        *,
        sort: Any = ...,
        return_document: bool = ...,
    ) -> Awaitable[dict[str, Any] | None]: ...

    def bulk_write(
        self, requests: Sequence[Any], /, *, ordered: bool = ...
    ) -> Awaitable[object]: ...

    def delete_many(self, filter: Mapping[str, Any], /) -> Awaitable[object]: ...

    def update_many(self, filter: Mapping[str, Any], update: Any, /) -> Awaitable[object]: ...

    def count_documents(self, filter: Mapping[str, Any], /) -> Awaitable[int]: ...

    def estimated_document_count(self) -> Awaitable[int]: ...

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
    :meth:`claim` hands each due message to one owner at a time (see there how).

    ``collection`` is a PyMongo ``AsyncCollection`` or a Motor collection; the store
    never closes its client. :meth:`from_url` builds a client the store owns instead.
    Writes use ``write_concern``, by default ``WriteConcern(w="majority", j=True)``:
    a message counts as stored only once a majority of the replica set has it in its
    on-disk journal. Reads go to the primary.

    ``timeout`` (seconds) bounds each store call as a whole, through
    ``pymongo.timeout``: every operation of the call shares its deadline. By default
    the client's own ``timeoutMS`` bounds each operation.

    Time: leases run on the MongoDB server's clock (``$$NOW``), so hosts whose
    clocks disagree still see the same leases; ``due_at`` is wall-clock time from the
    producer that set it, compared with this host's clock. Pass ``clock`` to put
    leases on that clock instead (tests, and servers without update pipelines).
    """

    #: MongoDB's 16 MiB document limit, less room for the envelope: ids, names, the
    #: error text, leases, properties (short strings) and headers (at most 64 KiB on
    #: the AMQP wire, at most six times that as escaped JSON).
    max_body_size = 16 * 1024 * 1024 - 512 * 1024

    def __init__(
        self,
        collection: MongoCollection,
        *,
        clock: Callable[[], float] | None = None,
        write_concern: WriteConcern | None = None,
        timeout: float | None = None,
    ) -> None:
        self._setup(clock, write_concern, timeout, name=_full_name(collection))
        self._given: MongoCollection | None = collection

    @classmethod
    def from_url(
        cls,
        url: str,
        database: str = "aioproducer",
        collection: str = "spill",
        *,
        clock: Callable[[], float] | None = None,
        write_concern: WriteConcern | None = None,
        **client_kwargs: Any,
    ) -> MongoStore:
        """A store on ``database.collection`` at ``url``, with a client of its own.

        ``client_kwargs`` go to ``pymongo.AsyncMongoClient`` (for example
        ``tls=True``). Unless the URL or ``client_kwargs`` set them, the client gets
        :data:`DEFAULT_TIMEOUTS_MS`; the operation timeout (``timeoutMS``) then also
        bounds each store call as a whole. The client is checked here but connects
        only on first use; :meth:`close` closes it, and the next use builds a fresh
        one (a closed PyMongo client cannot be reopened).

        Raises ValueError, which never quotes the password, for a URL or an option
        PyMongo refuses.
        """
        pymongo = _pymongo()
        if write_concern is not None:
            _check_acknowledged(write_concern)  # before a client exists to be left open
        client_kwargs.setdefault("appname", "aioproducer")
        given = {k.lower() for k in client_kwargs} | _url_options(url)
        client_kwargs.update(
            {k: v for k, v in DEFAULT_TIMEOUTS_MS.items() if k.lower() not in given}
        )

        def connect() -> AsyncMongoClient[dict[str, Any]]:
            client: AsyncMongoClient[dict[str, Any]] = pymongo.AsyncMongoClient(
                url, **client_kwargs
            )
            return client

        try:
            first = connect()  # validates the URL and options; no I/O until first use
        except (pymongo.errors.PyMongoError, ValueError, TypeError) as exc:
            text = _mask(str(exc), url)
            raise ValueError(f"invalid MongoDB URL or option: {text}") from None
        store = cls.__new__(cls)
        timeout_ms = first.options.timeout
        store._setup(clock, write_concern, timeout_ms, name=f"{database}.{collection}")
        store._given = None
        store._connect = connect
        store._client = first
        store._database = database
        store._collection_name = collection
        return store

    def _setup(
        self,
        clock: Callable[[], float] | None,
        write_concern: WriteConcern | None,
        timeout: float | None,
        *,
        name: str,
    ) -> None:
        pymongo = _pymongo()
        self._clock = clock
        self._write_concern: WriteConcern = (
            write_concern
            if write_concern is not None
            else pymongo.WriteConcern(w="majority", j=True)
        )
        _check_acknowledged(self._write_concern)
        self._timeout = timeout
        self._name = name
        self._connect: Callable[[], AsyncMongoClient[dict[str, Any]]] | None = None
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._database = ""
        self._collection_name = ""
        self._coll: MongoCollection | None = None
        self._opening: asyncio.Future[MongoCollection] | None = None

    def __repr__(self) -> str:
        return f"MongoStore({self._name!r})"

    @property
    def write_concern(self) -> WriteConcern:
        """The write concern every write of this store uses."""
        return self._write_concern

    @property
    def timeout(self) -> float | None:
        """Seconds within which every store call returns or raises, if bounded."""
        return self._timeout

    @property
    def server_clock(self) -> bool:
        """Whether leases run on the server's clock (no ``clock`` was given)."""
        return self._clock is None

    async def _collection(self) -> MongoCollection:
        """The open collection; concurrent first callers share one open attempt."""
        if self._coll is not None:
            return self._coll
        opening = self._opening
        if opening is None:
            opening = self._opening = asyncio.ensure_future(self._open())
            opening.add_done_callback(self._opened)
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if opening.cancelled() and task is not None and not task.cancelling():
                # close() stopped the open this call was waiting for.
                raise StoreUnavailable(f"MongoDB store {self._name} closed while opening") from None
            raise

    def _opened(self, opening: asyncio.Future[MongoCollection]) -> None:
        if self._opening is opening:
            self._opening = None
        if opening.cancelled():
            return
        if opening.exception() is None:  # also marks a failure as seen
            self._coll = opening.result()
            log.debug("opened MongoDB collection %s", self._name)

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
            with self._deadline():
                await coll.create_index(CLAIM_INDEX_KEYS, name=CLAIM_INDEX_NAME)
        except BaseException:
            if client is not None:
                await client.close()
            raise
        self._client = client
        return coll

    @contextlib.contextmanager
    def _call(self, operation: str) -> Iterator[None]:
        """One store call: bounded by :attr:`timeout`, every error a StoreError."""
        with translating(operation, self._translate), self._deadline():
            yield

    def _deadline(self) -> contextlib.AbstractContextManager[object]:
        if self._timeout is None:
            return contextlib.nullcontext()
        timeout: contextlib.AbstractContextManager[object] = _pymongo().timeout(self._timeout)
        return timeout

    def _translate(self, exc: Exception, operation: str) -> StoreError:
        return _translate(exc, f"MongoDB {operation} on {short(self._name, 100)} failed")

    async def put(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        with self._call("put"):
            docs = [_to_document(m) for m in messages]
            coll = await self._collection()
            try:
                await coll.insert_many(docs, ordered=False)
            except _pymongo().errors.BulkWriteError as exc:
                held = [messages[i] for i in _duplicates(exc)]
                failed = [m for m in held if m.attempts or m.dead]
                if failed:
                    await coll.bulk_write(self._failure_updates(failed), ordered=False)

    def _failure_updates(self, messages: Sequence[Message]) -> list[Any]:
        """Updates that move the failure record of held ``messages`` forward."""
        update_one = _pymongo().UpdateOne
        requests = []
        for m in messages:
            behind: list[dict[str, Any]] = [{"attempts": {"$lt": m.attempts}}]
            if m.dead:
                behind.append({"dead": {"$ne": True}})
            fields: dict[str, Any] = {"last_error": m.last_error, "due_at": m.due_at}
            if m.dead:
                fields["dead"] = True
            # One explicit $and: the same query to MongoDB, and one that nx-27017 (the
            # wire server of the tests) does not misread beside a top-level $or.
            query = {"$and": [{"_id": m.message_id}, {"$or": behind}]}
            update = {"$max": {"attempts": m.attempts}, "$set": fields}
            requests.append(update_one(query, update))
        return requests

    async def claim(self, owner: str, *, limit: int, lease: float) -> list[Message]:
        """Lease up to ``limit`` due messages to ``owner``: earliest due first, then
        oldest accepted.

        A batch in three round trips: ``find`` the ids of the first ``limit`` due,
        unleased, live messages in claim order; one ``update_many`` on those ids
        whose filter checks again that each is due, unleased and live, and sets
        ``lease_owner``, ``lease_until`` and this claim's fresh ``lease_token``; then
        ``find`` by id and token what this claim won. MongoDB applies the update to
        each document atomically, evaluating the filter against the document as it is
        when it writes, so a message another claimer (in this process or on another
        host) leased in between is skipped, never taken twice.

        A claimer that lost candidates to such a race takes the rest of its ``limit``
        one message at a time with ``find_one_and_update`` (up to
        :data:`CLAIM_CONCURRENCY` in flight), where the server retries a lost race
        on the next message: concurrent claimers take different messages and never
        come back empty while a due message is free. Without a race the claim costs
        three round trips, however many messages it takes.

        The lease is set on the server's clock (``$$NOW`` in an update pipeline)
        unless the store was given a ``clock``. A claim that fails part way leaves
        the messages it did lease to nobody who knows it; they are due again when
        their lease expires.
        """
        if limit <= 0:
            return []
        token = uuid.uuid4().hex
        with self._call("claim"):
            now = self._now()
            if self._clock is None:
                lease_ok: dict[str, Any] = {"$expr": {"$lte": ["$lease_until", _SERVER_NOW]}}
                update: Any = [
                    {
                        "$set": {
                            "lease_owner": {"$literal": owner},
                            "lease_until": {"$add": [_SERVER_NOW, lease]},
                            "lease_token": token,
                        }
                    }
                ]
            else:
                lease_ok = {"lease_until": {"$lte": now}}
                update = {
                    "$set": {"lease_owner": owner, "lease_until": now + lease, "lease_token": token}
                }
            query = {"dead": {"$ne": True}, "due_at": {"$lte": now}, **lease_ok}
            coll = await self._collection()
            candidates = await coll.find(query, {"_id": 1}, sort=CLAIM_SORT, limit=limit).to_list(
                None
            )
            ids = [doc["_id"] for doc in candidates]
            docs: list[dict[str, Any]] = []
            if ids:
                await coll.update_many({**query, "_id": {"$in": ids}}, update)
                won = {"_id": {"$in": ids}, "lease_token": token}
                docs = await coll.find(won, None, sort=CLAIM_SORT).to_list(None)
            if len(docs) < len(ids):
                # Lost a race: take the rest one by one, where the server retries it.
                await self._claim_each(coll, query, update, limit - len(docs), docs)
            messages = [_from_document(doc) for doc in docs]
        messages.sort(key=lambda m: (m.due_at, m.timestamp))
        return messages

    @staticmethod
    async def _claim_each(
        coll: MongoCollection,
        query: Mapping[str, Any],
        update: Any,
        wanted: int,
        docs: list[dict[str, Any]],
    ) -> None:
        """Lease up to ``wanted`` more messages with ``find_one_and_update``, one each,
        :data:`CLAIM_CONCURRENCY` in flight, appending them to ``docs``."""
        after = _pymongo().ReturnDocument.AFTER
        left = wanted

        async def take() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                doc = await coll.find_one_and_update(
                    query, update, sort=CLAIM_SORT, return_document=after
                )
                if doc is None:
                    return
                docs.append(doc)

        results = await asyncio.gather(
            *(take() for _ in range(min(wanted, CLAIM_CONCURRENCY))), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def ack(self, message_ids: Sequence[str]) -> None:
        if not message_ids:
            return
        ids = list(message_ids)
        with self._call("ack"):
            coll = await self._collection()
            for start in range(0, len(ids), _ACK_CHUNK):
                await coll.delete_many({"_id": {"$in": ids[start : start + _ACK_CHUNK]}})

    async def release(self, owner: str, messages: Sequence[Message]) -> None:
        with self._call("release"):
            update_one = _pymongo().UpdateOne
            requests = [
                update_one(
                    {"_id": m.message_id, "lease_owner": owner, "lease_token": m.lease_token},
                    {
                        # Failure records only move forward: attempts never lower, and
                        # dead is only ever set (a $max of booleans is avoided: the
                        # wire server of the tests stores its result as 1).
                        "$max": {"attempts": m.attempts},
                        "$set": {
                            "last_error": m.last_error,
                            "due_at": m.due_at,
                            "lease_owner": None,
                            "lease_until": 0.0,
                            "lease_token": None,
                            **({"dead": True} if m.dead else {}),
                        },
                    },
                )
                for m in messages
                if m.lease_token is not None
            ]
            if not requests:
                return
            coll = await self._collection()
            await coll.bulk_write(requests, ordered=False)

    async def count(self) -> int:
        """How many messages the collection holds, from its metadata: one cheap call.

        MongoDB keeps this figure up to date with every write; it can be off after an
        unclean shutdown of the server, or count orphans on a sharded cluster.
        :meth:`backlog` counts exactly.
        """
        with self._call("count"):
            coll = await self._collection()
            return await coll.estimated_document_count()

    async def backlog(self) -> Backlog:
        """Exact counts by state (several queries, not one snapshot), for operations."""
        live: dict[str, Any] = {"dead": {"$ne": True}}
        with self._call("backlog"):
            now = self._now()
            if self._clock is None:
                leased: dict[str, Any] = {"$expr": {"$gt": ["$lease_until", _SERVER_NOW]}}
                free: dict[str, Any] = {"$expr": {"$lte": ["$lease_until", _SERVER_NOW]}}
            else:
                leased = {"lease_until": {"$gt": now}}
                free = {"lease_until": {"$lte": now}}
            coll = await self._collection()
            total = await coll.count_documents({})
            dead = await coll.count_documents({"dead": True})
            n_leased = await coll.count_documents({**live, **leased})
            held = await coll.count_documents({**live, **free, "due_at": {"$gt": now}})
            first = await coll.find({}, {"timestamp": 1}, sort=[("timestamp", 1)], limit=1).to_list(
                None
            )
        return Backlog(
            total=total,
            due=max(0, total - dead - n_leased - held),
            leased=n_leased,
            held=held,
            dead=dead,
            oldest=first[0]["timestamp"] if first else None,
        )

    async def scan(self, *, dead: bool | None = None, batch: int = 500) -> AsyncIterator[Message]:
        state: dict[str, Any] = {} if dead is None else {"dead": True if dead else {"$ne": True}}
        last = ""
        while True:
            with self._call("scan"):
                coll = await self._collection()
                docs = await coll.find(
                    {**state, "_id": {"$gt": last}}, None, sort=[("_id", 1)], limit=batch
                ).to_list(None)
            for doc in docs:
                message = _from_document(doc)
                message.lease_token = None
                yield message
            if len(docs) < batch:
                return
            last = docs[-1]["_id"]

    async def get(self, message_id: str) -> Message | None:
        with self._call("get"):
            coll = await self._collection()
            docs = await coll.find({"_id": message_id}, None, limit=1).to_list(None)
        if not docs:
            return None
        message = _from_document(docs[0])
        message.lease_token = None
        return message

    async def by_key(self) -> list[KeyCount]:
        """Counted here from the names of every message (no aggregation pipeline needed)."""
        counts: dict[tuple[str, str], list[int]] = {}
        with self._call("by_key"):
            coll = await self._collection()
            docs = await coll.find({}, {"exchange": 1, "routing_key": 1, "dead": 1}).to_list(None)
        for doc in docs:
            entry = counts.setdefault((doc["exchange"], doc["routing_key"]), [0, 0])
            entry[0] += 1
            entry[1] += bool(doc.get("dead", False))
        ordered = sorted(counts.items(), key=lambda item: (-item[1][0], item[0]))
        return [KeyCount(e, k, total, dead) for (e, k), (total, dead) in ordered]

    async def requeue(
        self,
        message_ids: Sequence[str],
        *,
        exchange: str | None = None,
        routing_key: str | None = None,
    ) -> int:
        if not message_ids:
            return 0
        changes: dict[str, Any] = {
            "dead": False,
            "attempts": 0,
            "due_at": self._now(),
            "lease_owner": None,
            "lease_until": 0.0,
            "lease_token": None,
        }
        if exchange is not None:
            changes["exchange"] = exchange
        if routing_key is not None:
            changes["routing_key"] = routing_key
        with self._call("requeue"):
            coll = await self._collection()
            result = await coll.update_many(
                {"_id": {"$in": list(message_ids)}, "dead": True}, {"$set": changes}
            )
        return int(getattr(result, "modified_count", 0) or 0)

    async def purge_dead(self, message_ids: Sequence[str] | None = None) -> int:
        query: dict[str, Any] = {"dead": True}
        if message_ids is not None:
            if not message_ids:
                return 0
            query["_id"] = {"$in": list(message_ids)}
        with self._call("purge_dead"):
            coll = await self._collection()
            result = await coll.delete_many(query)
        return int(getattr(result, "deleted_count", 0) or 0)

    async def close(self) -> None:
        """Forget the open collection; close the client if :meth:`from_url` made it."""
        opening, self._opening = self._opening, None
        if opening is not None:
            opening.cancel()
            with contextlib.suppress(BaseException):
                await opening
        self._coll = None
        client, self._client = self._client, None
        if client is not None:
            with translating("close", self._translate):
                await client.close()

    def _now(self) -> float:
        return time.time() if self._clock is None else self._clock()


def _check_acknowledged(write_concern: WriteConcern) -> None:
    """Refuse ``w=0``: with no answer to a write, a message would count as stored unseen."""
    if not write_concern.acknowledged:
        raise ValueError(
            "MongoStore needs an acknowledged write concern, not w=0: "
            "an unacknowledged write cannot tell a stored message from a lost one"
        )


def _url_options(url: str) -> set[str]:
    """The lower-cased names of the options in a MongoDB URL's query string."""
    try:
        query = urlsplit(url).query
    except ValueError:
        return set()
    return {name.lower() for name, _ in parse_qsl(query)}


def _mask(text: str, url: str) -> str:
    """``text`` cut short, with the URL's user information (password) masked."""
    match = re.match(r"[^:]*://([^@/]*)@", url)
    if match and match.group(1):
        text = text.replace(match.group(1), "***")
        password = match.group(1).partition(":")[2]
        for secret in (password, url):
            if secret:
                text = text.replace(secret, "***")
    return short(text, 200)


def _full_name(collection: MongoCollection) -> str:
    name = getattr(collection, "full_name", None)
    return name if isinstance(name, str) else type(collection).__name__


def _to_document(m: Message) -> dict[str, Any]:
    doc: dict[str, Any] = {
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
        "dead": m.dead,
        "lease_owner": None,
        "lease_until": 0.0,
        "lease_token": None,
    }
    if m.properties is not None:
        doc["properties"] = properties_to_dict(m.properties)
    return doc


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
        dead=bool(doc.get("dead", False)),
        lease_token=doc.get("lease_token"),
        # Documents written before properties were kept have no such field.
        properties=properties_from_dict(doc.get("properties")),
    )


def _duplicates(exc: Any) -> list[int]:
    """The batch positions a ``BulkWriteError`` made only of duplicate keys names.

    A duplicate ``_id`` is a message the store already holds. Any other write error,
    or a write concern error (the batch is not known to be durable), fails the put:
    ``exc`` is raised again.
    """
    details = exc.details
    errors = details.get("writeErrors", ())
    others = [e for e in errors if e.get("code") != _DUPLICATE_KEY]
    if others or details.get("writeConcernErrors"):
        raise exc
    log.debug("put: %d messages already stored", len(errors))
    return [int(e["index"]) for e in errors]


def _translate(exc: Exception, where: str) -> StoreError:
    """The StoreError for ``exc``, mapped by base class.

    The text names classes, codes and counts only: a PyMongo error's own text may
    quote the documents it failed on.
    """
    errors = _pymongo().errors
    import bson.errors

    name = type(exc).__name__
    if isinstance(exc, errors.BulkWriteError):
        details = exc.details or {}
        write_errors = details.get("writeErrors") or []
        refused = [e for e in write_errors if e.get("code") != _DUPLICATE_KEY]
        codes = sorted({str(e.get("code")) for e in refused})
        if refused:
            return StoreRejected(
                f"{where}: refused {len(refused)} of the batch "
                f"(codes {', '.join(codes[:5])}; {name})"
            )
        concern = details.get("writeConcernErrors") or []
        codes = sorted({str(e.get("code")) for e in concern})
        return StoreUnavailable(
            f"{where}: write concern not satisfied (codes {', '.join(codes[:5])}; {name})"
        )
    if isinstance(exc, bson.errors.BSONError):
        return StoreRejected(f"{where}: a document cannot be stored ({name})")
    if isinstance(exc, errors.WriteConcernError | errors.ExecutionTimeout):
        return StoreUnavailable(f"{where}: timed out ({name}, code {exc.code})")
    if isinstance(exc, errors.OperationFailure):
        code = exc.code
        label = _code_name(exc)
        if isinstance(exc, errors.WriteError) or code in _REJECTING_CODES:
            if not exc.timeout:
                return StoreRejected(f"{where}: refused ({name}, code {code}{label})")
        return StoreUnavailable(f"{where}: unavailable ({name}, code {code}{label})")
    if isinstance(exc, errors.ConnectionFailure):
        return StoreUnavailable(f"{where}: unavailable ({name}: {short(str(exc), 120)})")
    if isinstance(exc, errors.PyMongoError | OSError):
        return StoreUnavailable(f"{where}: unavailable ({name})")
    if isinstance(exc, KeyError):
        # PyMongo's authentication handshake fails with a KeyError on some replies.
        return StoreUnavailable(f"{where}: unavailable ({name}, during authentication?)")
    return StoreError(f"{where}: {name}")


def _code_name(exc: Any) -> str:
    details = exc.details if isinstance(exc.details, dict) else {}
    code_name = details.get("codeName")
    return f" {short(code_name, 40)}" if isinstance(code_name, str) else ""
