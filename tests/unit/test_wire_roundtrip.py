"""Header values publish() accepts arrive on the wire as they were given."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aioproducer import InvalidMessage, Message
from aioproducer._message import prepare_headers
from tests.fakes import check_on_the_wire

#: The last second pamqp reads back as seconds; it reads larger timestamps as milliseconds.
LAST = datetime(2106, 2, 7, 6, 28, 15, tzinfo=UTC)


def message(headers: dict[str, object]) -> Message:
    copy, wire = prepare_headers(headers)
    return Message(
        message_id="m",
        body=b"",
        exchange="",
        routing_key="q",
        content_type="text/plain",
        timestamp=1_700_000_000.0,
        headers=copy,
        headers_wire=wire,
    )


@pytest.mark.parametrize(
    "when",
    [datetime(1970, 1, 1, tzinfo=UTC), datetime(2030, 5, 1, 12, 30, 15, 999_999), LAST],
    ids=["epoch", "naive-with-microseconds", "last-second"],
)
def test_an_accepted_datetime_arrives_as_its_whole_second(when: datetime) -> None:
    assert check_on_the_wire(message({"when": when}), persistent=True, mandatory=True) is None


@pytest.mark.parametrize(
    "when",
    [datetime(2106, 2, 7, 6, 28, 16, tzinfo=UTC), datetime(2107, 1, 1), datetime(1969, 12, 31)],
    ids=["first-second-after", "2107", "before-1970"],
)
def test_a_datetime_readers_would_misread_is_refused(when: datetime) -> None:
    with pytest.raises(InvalidMessage, match="datetime outside"):
        prepare_headers({"nested": [{"when": when}]})
