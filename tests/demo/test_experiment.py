"""A short outage experiment: one cycle of a few seconds, nothing may be lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo_app.experiment import ExperimentOptions, run
from tests.broker import AMQP_URL, REPAIRS

pytestmark = [pytest.mark.broker, pytest.mark.fault]


# Bounds: 2.5 s of load, recovery 60, drain 60, the broker's stop and start 180.
@pytest.mark.timeout(330)
async def test_one_outage_loses_nothing(tmp_path: Path) -> None:
    options = ExperimentOptions(
        amqp_url=AMQP_URL,
        rate=40,
        up=1.0,
        outage=1.5,
        cycles=1,
        spill_after=0.5,
        out_dir=tmp_path,
        recovery_timeout=60,
        drain_timeout=60,
        progress=False,
    )
    # The experiment stops and starts the broker itself: if a timeout cuts it short,
    # the broker_repaired fixture starts it again.
    token = REPAIRS.owe(("start_app",), ("await_startup",))
    result, paths = await run(options)
    REPAIRS.settle(token)

    assert result.lost == 0
    assert result.drained
    assert [row.phase for row in result.rows] == ["1: up", "1: down", "1: recovery", "drain"]
    assert result.total.sent > 0
    assert result.total.sent == sum(row.sent for row in result.rows)
    # The outage outlasted spill_after: messages went through the store and came back.
    assert result.total.spilled > 0
    # A message copied to the store while in flight, then confirmed, is not replayed.
    assert 0 < result.total.replayed <= result.total.spilled
    assert result.total.confirmed + result.total.replayed >= result.total.sent
    assert result.rows[0].p50_us is not None
    assert "| **total** |" in result.table()
    names = {p.name for p in paths}
    assert {"results.json", "table.md", "sends.csv", "timeline.csv", "experiment.png"} <= names
    assert (tmp_path / "experiment.png").read_bytes().startswith(b"\x89PNG")
