"""The producer's settings as checked at construction, and exceptions as log text."""

from __future__ import annotations

import tempfile
import traceback
from pathlib import Path
from typing import Any

import pytest

from aioproducer import InvalidMessage, Producer
from aioproducer._config import check_fallback_dir, check_urls, format_exception


def raised() -> ValueError:
    """A ValueError raised two calls deep, whose text holds a URL with a password."""

    def connect() -> None:
        raise ValueError("amqp://user:s3cret@host/ refused")

    def start() -> None:
        connect()

    try:
        start()
    except ValueError as exc:
        return exc
    raise AssertionError("not raised")


def test_an_exception_is_its_traceback_and_text_with_passwords_masked() -> None:
    exc = raised()
    python = "".join(traceback.format_exception(exc))
    text = format_exception(exc)
    assert text == python.rstrip().replace("s3cret", "***")
    assert text.startswith("Traceback (most recent call last):\n")
    assert text.endswith("\nValueError: amqp://user:***@host/ refused")
    assert all(f"in {frame}\n" in text for frame in ("raised", "start", "connect"))


def test_without_its_text_an_exception_is_its_traceback_and_type() -> None:
    exc = raised()
    stack = "".join(traceback.format_tb(exc.__traceback__))
    assert stack.count("  File ") == 3
    text = format_exception(exc, with_text=False)
    assert text == f"Traceback (most recent call last):\n{stack}ValueError"
    assert text.splitlines()[-1] == "ValueError"


def bad_option(name: str, value: object, tmp_path: Path) -> str:
    options: dict[str, Any] = {name: value, "fallback_dir": tmp_path}
    with pytest.raises(ValueError) as caught:
        Producer("amqp://guest:guest@127.0.0.1:1/", **options)
    return str(caught.value)


@pytest.mark.parametrize(
    "option", ["spill_after", "lease", "replay_interval", "confirm_timeout", "connect_timeout"]
)
@pytest.mark.parametrize("value", [0, -1.0, float("nan")])
def test_a_duration_not_positive_is_refused_by_its_name(
    option: str, value: float, tmp_path: Path
) -> None:
    assert bad_option(option, value, tmp_path) == f"{option} must be positive"


def test_an_exchange_that_amqp_cannot_carry_is_refused_by_its_name(tmp_path: Path) -> None:
    assert bad_option("exchange", 3, tmp_path) == "exchange must be a str, not int"
    assert bad_option("exchange", "é" * 128, tmp_path) == "exchange is over 255 bytes"
    with pytest.raises(InvalidMessage):
        Producer(exchange="x" * 256, fallback_dir=tmp_path)


def test_a_lease_no_longer_than_confirm_timeout_is_refused(tmp_path: Path) -> None:
    for lease in (2.0, 1.0):
        options: dict[str, Any] = {"lease": lease, "confirm_timeout": 2.0}
        with pytest.raises(ValueError) as caught:
            Producer(fallback_dir=tmp_path, **options)
        assert str(caught.value) == "lease must be longer than confirm_timeout"
    Producer(lease=2.5, confirm_timeout=2.0, fallback_dir=tmp_path)


@pytest.mark.parametrize("value", [0, 0.0, -0.5, 1.01, float("nan")])
def test_high_water_is_a_fraction_above_0_and_at_most_1(value: float, tmp_path: Path) -> None:
    assert (
        bad_option("high_water", value, tmp_path)
        == "high_water is a fraction of max_buffer, above 0 and at most 1"
    )
    for fine in (0.001, 1):
        Producer(high_water=fine, fallback_dir=tmp_path)


@pytest.mark.parametrize(
    "option",
    ["max_buffer", "max_buffer_bytes", "max_message_size", "max_in_flight", "replay_batch"],
)
def test_a_count_under_1_is_refused_by_its_name(option: str, tmp_path: Path) -> None:
    for value in (0, -3):
        assert bad_option(option, value, tmp_path) == f"{option} must be at least 1"
    options: dict[str, Any] = {option: 1}
    Producer(fallback_dir=tmp_path, **options)


def test_max_attempts_is_at_least_1_or_none(tmp_path: Path) -> None:
    for value in (0, -1):
        assert (
            bad_option("max_attempts", value, tmp_path)
            == "max_attempts must be at least 1, or None for no limit"
        )
    for fine in (1, None):
        Producer(max_attempts=fine, fallback_dir=tmp_path)


@pytest.mark.parametrize(
    ("urls", "text"),
    [
        (5, "the broker URL must be a str or a sequence of str, not int"),
        (b"amqp://a/", "the broker URL must be a str or a sequence of str, not bytes"),
        (["amqp://a/", 7], "the broker URL must be a str, not int"),
        ("", "no broker URL given"),
        ([], "no broker URL given"),
        ("http://u:pw@h/", "broker URL 'http://u:***@h/' must start with amqp:// or amqps://"),
        ("amqp://u:pw@/", "broker URL 'amqp://u:***@/' has no host"),
        (
            "amqp://u:pw@h1,h2/",
            "broker URL 'amqp://u:***@h1,h2/' names several hosts in one URL; "
            "give one URL per node: a list, or URLs separated by commas",
        ),
        ("amqp://u:pw@h:0/", "broker URL 'amqp://u:***@h:0/' has port 0, outside 1-65535"),
        (
            "amqp://u:pw@h:99999/",
            "malformed broker URL 'amqp://u:***@h:99999/': Port out of range 0-65535",
        ),
        (["amqp://a/", "amqp://a/"], "the broker URLs must differ: one is given twice"),
        (
            ["amqp://a/?heartbeat=5", "amqp://b/"],
            "the broker URLs must carry the same query options (found '', 'heartbeat=5')",
        ),
    ],
    ids=[
        "int",
        "bytes",
        "int-in-list",
        "empty",
        "empty-list",
        "scheme",
        "no-host",
        "several-hosts",
        "port-0",
        "port-too-high",
        "twice",
        "query-options",
    ],
)
def test_each_bad_broker_address_is_refused_with_its_reason(urls: object, text: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_urls(urls)
    assert str(caught.value) == text


def test_amqp_and_amqps_addresses_with_their_ports_are_taken() -> None:
    given = ["amqp://u:pw@h:5672/", "amqps://u:pw@g:5671/", "amqp://u:pw@k:65535/"]
    assert check_urls(given) == tuple(given)
    assert check_urls("amqps://u:pw@g:5671/") == ("amqps://u:pw@g:5671/",)


def test_a_fallback_dir_that_is_missing_or_not_writable_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(ValueError) as caught:
        check_fallback_dir(missing)
    assert str(caught.value) == f"fallback_dir {str(missing)!r} is not an existing folder"
    # /proc takes no new files, whoever runs the test; the reason is the system's own.
    with pytest.raises(OSError) as refused:
        tempfile.TemporaryFile(dir="/proc")
    with pytest.raises(ValueError) as caught:
        check_fallback_dir("/proc")
    assert str(caught.value) == f"fallback_dir '/proc' is not writable: {refused.value.strerror}"
    assert check_fallback_dir(str(tmp_path)) == tmp_path
