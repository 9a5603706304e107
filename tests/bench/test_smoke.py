"""The benchmark harness, run small: every case runs and reports, and so does the report.

No timing is asserted here: the machine is shared and noisy. What is checked is that
each contender, each path of the producer, the web loads and the fault cases on a
private node run to the end, and that the report names every goal.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench import harness

pytestmark = [pytest.mark.broker, pytest.mark.fault]


@pytest.mark.timeout(900)
def test_every_case_runs_and_the_report_names_every_goal(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is needed for the web load case: apt-get install wrk")
    out, chart = tmp_path / "benchmarks.md", tmp_path / "benchmarks.png"
    status = harness.main(
        ["--messages", "200", "--serial-messages", "20", "--repeats", "1",
         "--web-seconds", "2", "--node-port", "5698", "--out", str(out), "--chart", str(chart)]
    )  # fmt: skip
    text = out.read_text()
    assert status == 0, text.split("Cases that failed in this run:")[-1]
    for _, label in harness.CONTENDERS + harness.PATHS:
        assert label in text
    goals = [
        line
        for line in text.splitlines()
        if line.endswith(" met |") and not line.startswith("| goal |")
    ]
    # Three body sizes, throughput, web share, six publish() latencies, three
    # store paths, memory, recovery.
    assert len(goals) == 3 + 1 + 1 + 6 + 3 + 1 + 1, goals
    assert chart.stat().st_size > 0
