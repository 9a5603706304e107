"""Headers are checked, copied and encoded at publish() by the encoder the wire uses.

Every value the docs accept reaches the wire as written here; every value the wire
cannot carry is refused at the call, with the path of the value and no value in the
text. The encoding is read back with pamqp, the decoder aio-pika consumers use.
"""

from __future__ import annotations

import calendar
import math
import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pamqp import decode

from aioproducer import InvalidMessage, Message, SQLiteStore
from aioproducer._message import (
    MAX_HEADERS_DEPTH,
    MAX_HEADERS_SIZE,
    check_name,
    decode_headers,
    encode_headers,
    encode_headers_wire,
    prepare_headers,
)

SECRET = "s3cr3t-value"


def wire_view(headers: dict[str, Any]) -> dict[str, Any]:
    """What a consumer decodes from the encoded headers."""
    _, wire = prepare_headers(headers)
    consumed, table = decode.field_table(wire)
    assert consumed == len(wire)
    return table


@pytest.mark.parametrize(
    ("value", "seen"),
    [
        ("text", "text"),
        ("ünïcødé ✓", "ünïcødé ✓"),
        (0, 0),
        (-128, -128),
        (127, 127),
        (40_000, 40_000),
        (-(2**31), -(2**31)),
        (2**31, 2**31),
        (2**63 - 1, 2**63 - 1),
        (-(2**63), -(2**63)),
        (True, True),
        (False, False),
        (None, None),
        (0.1, 0.1),
        (1e300, 1e300),
        (-0.0, -0.0),
        (Decimal("12.345"), Decimal("12.345")),
        (b"\x00\xffbytes", bytearray(b"\x00\xffbytes")),
        (bytearray(b"ba"), bytearray(b"ba")),
        ((1, "two"), [1, "two"]),
        ([1, [2, [3]]], [1, [2, [3]]]),
        ({"nested": {"deeper": [1, b"x"]}}, {"nested": {"deeper": [1, bytearray(b"x")]}}),
        (datetime(2026, 1, 2, 3, 4, 5, 678901, UTC), datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ],
)
def test_accepted_values_reach_the_wire_exactly(value: object, seen: object) -> None:
    got = wire_view({"k": value})["k"]
    assert got == seen
    if isinstance(seen, float):
        assert math.copysign(1, got) == math.copysign(1, seen)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_floats_that_are_not_finite_are_refused(value: float) -> None:
    """RabbitMQ before rabbitmq-server#14209 closes the connection on reading one."""
    with pytest.raises(InvalidMessage, match="not finite") as caught:
        prepare_headers({"deep": [1.5, {"x": value}]})
    assert "headers['deep'][1]['x']" in str(caught.value)
    assert wire_view({"largest": 1.7976931348623157e308})["largest"] == 1.7976931348623157e308


def test_naive_datetimes_are_utc_and_aware_ones_keep_their_instant() -> None:
    east = timezone(timedelta(hours=5))
    got = wire_view(
        {"naive": datetime(2026, 1, 1, 12), "east": datetime(2026, 1, 1, 17, tzinfo=east)}
    )
    assert got["naive"] == got["east"] == datetime(2026, 1, 1, 12, tzinfo=UTC)


def test_the_buffered_copy_is_what_the_wire_carries_and_survives_mutation() -> None:
    inner: list[object] = [1, 2]
    headers: dict[str, Any] = {
        "list": inner,
        "tuple": (1,),
        "when": datetime(2026, 1, 1, 0, 0, 1, 5),
    }
    copy, _ = prepare_headers(headers)
    inner.append(object())
    headers["later"] = object()
    assert copy == {
        "list": [1, 2],
        "tuple": [1],
        "when": datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC),
    }


def test_the_copy_round_trips_through_the_stores_text() -> None:
    headers = {
        "b": b"\x00\x01",
        "d": Decimal("-1.50"),
        "f": 0.1,
        "t": datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC),
        "n": {"$b": "not a tag", "l": [None, True, 2**62]},
    }
    copy, wire = prepare_headers(headers)
    restored = decode_headers(encode_headers(copy))
    assert restored == copy
    assert restored is not None and prepare_headers(restored)[1] == wire


@pytest.mark.parametrize(
    ("headers", "where"),
    [
        ({"k": 2**63}, "headers['k']"),
        ({"k": -(2**63) - 1}, "headers['k']"),
        ({"k": f"{SECRET}\ud800"}, "headers['k']"),
        ({f"{SECRET}\udfff": 1}, "a key in headers"),
        ({"k": {1: SECRET}}, "headers['k'] keys"),
        ({"k": {SECRET}}, "headers['k'] is a set"),
        ({"k": [object()]}, "headers['k'][0]"),
        ({"k": Decimal("NaN")}, "headers['k']"),
        ({"k": Decimal("1e-300")}, "headers['k']"),
        ({"k": Decimal(2**40)}, "headers['k']"),
        ({"k": datetime(1960, 1, 1, tzinfo=UTC)}, "outside 1970-01-01 to 2106-02-07"),
        ({"k": datetime(2107, 1, 1, tzinfo=UTC)}, "outside 1970-01-01 to 2106-02-07"),
        ({"k" * 129: 1}, "over 128 bytes"),
    ],
)
def test_values_the_wire_cannot_carry_are_refused_without_quoting_them(
    headers: dict[Any, Any], where: str
) -> None:
    with pytest.raises(InvalidMessage) as raised:
        prepare_headers(headers)
    assert where in str(raised.value)
    assert SECRET not in str(raised.value)


def test_nesting_and_size_are_bounded() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(MAX_HEADERS_DEPTH + 1):
        node["d"] = {}
        node = node["d"]
    with pytest.raises(InvalidMessage, match="deeper"):
        prepare_headers(deep)
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(InvalidMessage, match="deeper"):
        prepare_headers({"loop": loop})
    with pytest.raises(InvalidMessage, match="bytes on the wire"):
        prepare_headers({"big": "x" * MAX_HEADERS_SIZE})
    prepare_headers({"big": "x" * (MAX_HEADERS_SIZE - 100)})


def test_headers_must_be_a_mapping() -> None:
    with pytest.raises(InvalidMessage, match="mapping"):
        prepare_headers([("k", 1)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    ["", "a" * 255, "é" * 127, "routing.key.#"],
)
def test_short_strings_within_255_utf8_bytes_pass(value: str) -> None:
    assert check_name(value, "routing_key") == value


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("a" * 256, "over 255 bytes"),
        ("é" * 128, "over 255 bytes"),
        ("q\ud800", "lone surrogate"),
        (b"q", "must be a str"),
        (None, "must be a str"),
    ],
)
def test_short_strings_the_wire_cannot_carry_are_refused(value: object, match: str) -> None:
    with pytest.raises(InvalidMessage, match=match):
        check_name(value, "routing_key")


def _field(value: object) -> bytes:
    """The encoded field of ``value`` alone: its type octet and its bytes."""
    _, wire = prepare_headers({"x": value})
    return wire[6:]  # table length (4), name length (1), name "x" (1)


@pytest.mark.parametrize(
    ("number", "kind"),
    [
        (-128, b"b"),
        (127, b"b"),
        (-129, b"s"),
        (128, b"s"),
        (-32768, b"s"),
        (32767, b"s"),
        (-32769, b"I"),
        (32768, b"I"),
        (-(2**31), b"I"),
        (2**31 - 1, b"I"),
        (2**31, b"l"),
        (-(2**31) - 1, b"l"),
    ],
)
def test_an_int_travels_in_the_smallest_signed_integer_that_holds_it(
    number: int, kind: bytes
) -> None:
    assert _field(number)[:1] == kind
    assert wire_view({"x": number})["x"] == number


@pytest.mark.parametrize(
    ("value", "scale", "mantissa"),
    [
        (Decimal(5), 0, 5),
        (Decimal("-3.14"), 2, -314),
        (Decimal("1E+3"), 0, 1000),
        (Decimal(-(2**31)), 0, -(2**31)),
        (Decimal(2**31 - 1), 0, 2**31 - 1),
        (Decimal("1E-255"), 255, 1),
    ],
)
def test_a_decimal_travels_with_its_own_scale(value: Decimal, scale: int, mantissa: int) -> None:
    field = _field(value)
    assert field[:1] == b"D"
    assert field[1] == scale
    assert int.from_bytes(field[2:6], "big", signed=True) == mantissa
    assert wire_view({"x": value})["x"] == value


@pytest.mark.parametrize(
    "value", [Decimal("1E-256"), Decimal(2**31), Decimal(-(2**31) - 1), Decimal("Infinity")]
)
def test_a_decimal_outside_amqps_range_is_refused(value: Decimal) -> None:
    with pytest.raises(InvalidMessage, match="Decimal"):
        prepare_headers({"x": value})


async def test_headers_read_back_from_sqlite_are_encoded_as_they_were_published(
    tmp_path: Path,
) -> None:
    """A replayed message carries no wire encoding: it is made again from the stored text."""
    headers, wire = prepare_headers(
        {
            "n": -129,
            "d": Decimal("2.50"),
            "when": datetime(2026, 1, 1, tzinfo=UTC),
            "b": b"\x00",
            "deepest": _nested("table", MAX_HEADERS_DEPTH),
        }
    )
    store = SQLiteStore(tmp_path / "s.db")
    try:
        await store.put(
            [
                Message(
                    message_id="m",
                    body=b"x",
                    exchange="",
                    routing_key="q",
                    content_type="application/octet-stream",
                    timestamp=1_700_000_000.0,
                    headers=headers,
                    headers_wire=wire,
                )
            ]
        )
        [back] = await store.claim("me", limit=1, lease=30.0)
    finally:
        await store.close()
    assert back.headers_wire is None
    assert encode_headers_wire(back.headers or {}) == wire


def _nested(kind: str, levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = {"k": value} if kind == "table" else [value]
    return value


@pytest.mark.parametrize("kind", ["table", "array"])
def test_tables_and_arrays_nest_exactly_32_deep(kind: str) -> None:
    """docs/guarantees.md: tables and arrays nest at most 32 deep (the headers not counted)."""
    prepare_headers({"a": _nested(kind, MAX_HEADERS_DEPTH)})
    with pytest.raises(InvalidMessage, match="deeper than 32"):
        prepare_headers({"a": _nested(kind, MAX_HEADERS_DEPTH + 1)})


def test_keys_of_up_to_128_utf8_bytes_pass_and_wrong_types_are_named() -> None:
    prepare_headers({"k" * 128: 1})
    with pytest.raises(InvalidMessage, match="over 128 bytes"):
        prepare_headers({"k" * 129: 1})
    with pytest.raises(InvalidMessage, match="keys must be str, not int"):
        prepare_headers({1: 1})  # type: ignore[dict-item]
    with pytest.raises(InvalidMessage, match="mapping, not list"):
        prepare_headers([("k", 1)])  # type: ignore[arg-type]


def test_a_naive_datetime_is_utc_whatever_the_local_time_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        field = _field(datetime(2026, 1, 1, 12, 0, 0))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert field[:1] == b"T"
    assert int.from_bytes(field[1:9], "big") == calendar.timegm((2026, 1, 1, 12, 0, 0))


def test_headers_of_exactly_the_size_limit_pass() -> None:
    # Table length (4), name length (1), "b", type "S", string length (4), the string.
    prepare_headers({"b": "x" * (MAX_HEADERS_SIZE - 11)})
    with pytest.raises(InvalidMessage, match="bytes on the wire"):
        prepare_headers({"b": "x" * (MAX_HEADERS_SIZE - 10)})


def test_a_name_of_255_utf8_bytes_passes_and_bad_names_say_why() -> None:
    name = "é" * 127 + "a"  # 255 bytes in UTF-8
    assert check_name(name, "routing_key") == name
    with pytest.raises(InvalidMessage, match="routing_key is over 255 bytes"):
        check_name(name + "a", "routing_key")
    with pytest.raises(InvalidMessage, match=r"^routing_key must be a str, not int$"):
        check_name(5, "routing_key")
    with pytest.raises(InvalidMessage, match=r"^message_id must not be empty$"):
        check_name("", "message_id", empty=False)
