"""What ``import aioproducer`` loads: the core only, never an optional extra."""

from __future__ import annotations

import subprocess
import sys


def test_import_aioproducer_loads_neither_prometheus_nor_tqdm() -> None:
    code = (
        "import sys, aioproducer, aioproducer.__main__\n"
        "loaded = sorted(m for m in ('prometheus_client', 'tqdm') if m in sys.modules)\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""
