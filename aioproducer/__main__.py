"""``python -m aioproducer``: the same as the ``aioproducer`` command (see ``_cli.py``)."""

from __future__ import annotations

import sys

from ._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
