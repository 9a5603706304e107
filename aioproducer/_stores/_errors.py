"""Translating a database's exceptions into StoreError, once, at the edge of a store.

Each store names the foreign exceptions it knows by base class; whatever is left
still becomes a :class:`~aioproducer.StoreError`, never a raw driver error. The text
of every error is short, and made of the store's name, the operation, counts, error
classes and codes: never a document, a body or a header value. The original
exception is chained (``raise ... from exc``) for debugging.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from .._exceptions import StoreError

#: The longest text a StoreError raised by a store may have.
MAX_ERROR_TEXT = 300

#: Turns a foreign exception into the StoreError to raise for it.
Translator = Callable[[Exception, str], StoreError]


def short(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def bounded(error: StoreError) -> StoreError:
    """``error`` with its text cut to :data:`MAX_ERROR_TEXT` characters."""
    text = str(error)
    if len(text) > MAX_ERROR_TEXT:
        error.args = (short(text, MAX_ERROR_TEXT),)
    return error


class translating:
    """Run a store operation; turn any ``Exception`` it raises into a StoreError.

    ``translate(exc, operation)`` builds the error; a StoreError passes as it is.
    ``BaseException``\\ s that are not ``Exception`` (cancellation) pass untouched.
    """

    def __init__(self, operation: str, translate: Translator) -> None:
        self.operation = operation
        self.translate = translate

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, StoreError) or not isinstance(exc, Exception):
            return
        raise bounded(self.translate(exc, self.operation)) from exc
