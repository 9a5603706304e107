"""Every test tests/PROMISES.md names exists, so the table cannot point at nothing."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
TABLE = TESTS / "PROMISES.md"

#: `unit/test_x.py::test_y`, `P::test_y` (unit/test_promises.py), `::test_y` (the file
#: named last before it), or a whole file, `integration/test_x.py`.
_REFERENCE = re.compile(r"`(?:(?P<file>[\w/]+\.py)|(?P<p>P))?(?:::(?P<test>\w+))?`")


def named_tests() -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            continue
        last: str | None = None
        for match in _REFERENCE.finditer(line):
            file, test = match["file"], match["test"]
            if match["p"]:
                file = "unit/test_promises.py"
            if file is None and test is None:
                continue
            if file is None:
                if last is None:
                    continue  # a name in prose, not a test
                file = last
            last = file
            found.append((file, test))
    return found


def test_every_test_the_promise_table_names_exists() -> None:
    named = named_tests()
    assert len(named) > 150
    missing = []
    for file, test in named:
        path = TESTS / file.split("::")[0]
        if not path.is_file():
            missing.append(file)
        elif test is not None and not re.search(
            rf"^(async )?def {test}\(", path.read_text(encoding="utf-8"), re.MULTILINE
        ):
            missing.append(f"{file}::{test}")
    assert not missing
