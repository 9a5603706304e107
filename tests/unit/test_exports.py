"""The public surface is what ``__init__`` exports, kept sorted and complete."""

from __future__ import annotations

import aioproducer


def test_all_is_sorted_and_importable() -> None:
    assert aioproducer.__all__ == sorted(aioproducer.__all__)
    for name in aioproducer.__all__:
        assert getattr(aioproducer, name) is not None


def test_every_public_name_is_exported() -> None:
    public = {
        name
        for name, value in vars(aioproducer).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("aioproducer")
    }
    assert public == set(aioproducer.__all__)


def test_errors_share_one_root() -> None:
    errors = [
        getattr(aioproducer, name)
        for name in aioproducer.__all__
        if isinstance(getattr(aioproducer, name), type)
        and issubclass(getattr(aioproducer, name), Exception)
    ]
    assert len(errors) == 10
    assert all(issubclass(error, aioproducer.ProducerError) for error in errors)


def test_errors_are_also_the_builtin_errors_the_docs_name() -> None:
    """docs/configuration.md: callers may catch these as the builtin errors too."""
    assert issubclass(aioproducer.ProducerClosed, RuntimeError)
    assert issubclass(aioproducer.MessageTooLarge, ValueError)
    assert issubclass(aioproducer.BodyNotSerializable, TypeError)
    assert issubclass(aioproducer.InvalidMessage, ValueError)
    assert issubclass(aioproducer.StoreError, OSError)
    assert issubclass(aioproducer.StoreUnavailable, aioproducer.StoreError)
    assert issubclass(aioproducer.StoreRejected, aioproducer.StoreError)
    assert not issubclass(aioproducer.BufferFull, (RuntimeError, ValueError, OSError))
