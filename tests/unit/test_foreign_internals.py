"""The internals of aio-pika, aiormq and pamqp that aioproducer/_connection.py relies on.

pyproject.toml bounds these libraries below their next major version; a minor release
may still rename a private name. Each name used goes in one of the lists below, so an
upgrade that drops it fails here, by name, rather than deep in a broker test.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Mapping
from typing import Any

import pytest

#: Names looked up on a module, as ``"module:attribute.path"``.
ATTRIBUTES = [
    # A channel error's reply code, from its exception class.
    "aiormq.channel:EXCEPTION_MAPPING",
    # _Properties overrides it to send the headers encoded once at publish().
    "aiormq:spec.Basic.Properties.encode_property",
    # _BackoffConnection overrides it to restart its backoff after a connection.
    "aio_pika.robust_connection:RobustConnection._on_connected",
]

#: Attributes that a constructor sets on its instances: ``("module:Class", "attribute")``.
INSTANCE_ATTRIBUTES = [
    # The event that gates ready() while the broker has the connection blocked.
    ("aiormq.connection:Connection", "_Connection__connection_unblocked"),
    ("aio_pika.connection:Connection", "transport"),
    ("aio_pika.robust_connection:RobustConnection", "reconnect_interval"),
]

#: Fields a class declares (annotated, set by its constructor): ``("module:Class", "field")``.
FIELDS = [
    # The aiormq connection under an aio-pika one: Connection.transport.connection.
    ("aio_pika.abc:UnderlayConnection", "connection"),
]

#: Source that must still read a name: ``("module:Class", "text")``. Overriding an
#: attribute does nothing if the library stopped reading it.
READ_BY = [
    # _BackoffConnection's reconnect_interval property draws the next delay when read.
    ("aio_pika.robust_connection:RobustConnection", "self.reconnect_interval"),
    # What pamqp's Basic.Properties encoding calls per property, headers included.
    ("pamqp.base:BasicProperties", "self.encode_property("),
]

URL = "amqp://guest:guest@127.0.0.1:5672/"


def resolve(dotted: str) -> Any:
    module_name, _, path = dotted.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in path.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize("dotted", ATTRIBUTES)
def test_attribute_exists(dotted: str) -> None:
    try:
        resolve(dotted)
    except AttributeError as exc:
        pytest.fail(f"{dotted} is gone: {exc}")


@pytest.mark.parametrize(("cls_name", "attribute"), INSTANCE_ATTRIBUTES)
async def test_instances_have_attribute(cls_name: str, attribute: str) -> None:
    # Constructing a connection opens nothing; connect() would.
    instance = resolve(cls_name)(URL)
    assert hasattr(instance, attribute), f"{cls_name} instances have no {attribute}"


@pytest.mark.parametrize(("cls_name", "field"), FIELDS)
def test_class_declares_field(cls_name: str, field: str) -> None:
    assert field in inspect.get_annotations(resolve(cls_name)), f"{cls_name} has no {field}"


@pytest.mark.parametrize(("cls_name", "text"), READ_BY)
def test_source_still_reads_it(cls_name: str, text: str) -> None:
    assert text in inspect.getsource(resolve(cls_name))


def test_the_values_have_the_shapes_used() -> None:
    mapping = resolve("aiormq.channel:EXCEPTION_MAPPING")
    assert isinstance(mapping, Mapping)
    assert all(isinstance(code, int) and isinstance(cls, type) for code, cls in mapping.items())
    assert mapping[404].__name__ == "ChannelNotFoundEntity"
    assert inspect.iscoroutinefunction(
        resolve("aio_pika.robust_connection:RobustConnection._on_connected")
    )
    signature = inspect.signature(resolve("aiormq:spec.Basic.Properties.encode_property"))
    assert list(signature.parameters) == ["self", "name", "value"]


async def test_the_blocked_event_is_an_event() -> None:
    connection = resolve("aiormq.connection:Connection")(URL)
    unblocked = connection._Connection__connection_unblocked
    assert isinstance(unblocked, asyncio.Event)


def test_batched_path_finds_the_aiormq_channel_internals_it_uses() -> None:
    # The batched path's own list (CHANNEL_METHODS, CHANNEL_FIELDS in _connection.py):
    # without them every message would go out through basic_publish, one at a time.
    from aioproducer._connection import BATCHED, check_internals

    assert check_internals() == []
    assert BATCHED
