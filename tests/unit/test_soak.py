"""The soak's pure parts: the fault plan, the reconciliation and the table."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.broker import watermark_args
from tests.soak._plan import KINDS_BY_STORE, WARM_UP, draw_plan, parse_kinds
from tests.soak._report import format_duration, format_table, reconcile, report_json
from tests.soak._run import via_proxy

KINDS = KINDS_BY_STORE["nx"]


def test_a_seed_gives_the_same_plan_every_time() -> None:
    assert draw_plan(42, 50, KINDS, 4.0) == draw_plan(42, 50, KINDS, 4.0)
    assert draw_plan(42, 50, KINDS, 4.0) != draw_plan(43, 50, KINDS, 4.0)


def test_every_round_of_cycles_holds_every_kind_once() -> None:
    plan = draw_plan(7, 3 * len(KINDS) + 2, KINDS, 4.0)
    assert [c.number for c in plan] == list(range(1, len(plan) + 1))
    for start in range(0, 3 * len(KINDS), len(KINDS)):
        assert sorted(c.kind for c in plan[start : start + len(KINDS)]) == sorted(KINDS)


def test_fault_durations_stay_within_half_and_one_and_a_half_times() -> None:
    seconds = [c.seconds for c in draw_plan(1, 200, KINDS, 4.0)]
    assert min(seconds) >= 2.0
    assert max(seconds) <= 6.0
    assert len(set(seconds)) > 10


def test_no_cycles_is_an_empty_plan() -> None:
    assert draw_plan(1, 0, KINDS, 4.0) == []


@pytest.mark.parametrize(
    ("cycles", "seconds", "kinds"), [(-1, 4.0, KINDS), (1, 0.0, KINDS), (1, 4.0, ())]
)
def test_a_plan_refuses_nonsense(cycles: int, seconds: float, kinds: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        draw_plan(1, cycles, kinds, seconds)


def test_kinds_default_to_all_the_store_supports() -> None:
    assert parse_kinds(None, "sqlite") == KINDS_BY_STORE["sqlite"]
    assert parse_kinds(" cut, alarm ", "nx") == ("cut", "alarm")


@pytest.mark.parametrize(
    ("text", "store"), [("store-kill", "sqlite"), ("store-lock", "nx"), ("cut,cut", "nx")]
)
def test_kinds_a_store_cannot_do_are_refused(text: str, store: str) -> None:
    with pytest.raises(ValueError):
        parse_kinds(text, store)


def _report() -> tuple[dict[str, str], Counter[str]]:
    accepted = {"a1": "cut", "a2": "cut", "a3": "cut", "b1": "alarm", "w1": WARM_UP}
    deliveries = Counter({"a1": 1, "a2": 3, "b1": 1, "w1": 2, "stranger": 2})
    return accepted, deliveries


def test_reconcile_counts_losses_and_every_duplicate_per_kind() -> None:
    accepted, deliveries = _report()
    report = reconcile(
        accepted,
        deliveries,
        kinds=[WARM_UP, "alarm", "cut", "broker"],
        cycles={"cut": 2, "alarm": 1},
        refused={"alarm": 4},
        longest={"cut": 0.002, "alarm": 0.5, WARM_UP: 0.0001},
        seed=9,
        command="scripts/soak --seed 9",
    )
    rows = {r.fault: r for r in report.rows}
    assert [r.fault for r in report.rows] == [WARM_UP, "alarm", "cut", "broker"]
    cut = rows["cut"]
    assert (cut.cycles, cut.accepted, cut.delivered, cut.lost, cut.duplicates) == (2, 3, 2, 1, 2)
    assert cut.longest == 0.002
    alarm = rows["alarm"]
    assert (alarm.accepted, alarm.refused, alarm.delivered, alarm.lost) == (1, 4, 1, 0)
    assert rows[WARM_UP].duplicates == 1
    assert rows["broker"].accepted == 0 and rows["broker"].longest is None
    total = report.total
    assert (total.cycles, total.accepted, total.refused) == (3, 5, 4)
    assert (total.delivered, total.lost, total.duplicates) == (4, 1, 3)
    assert total.longest == 0.5
    assert report.lost == 1
    assert report.lost_ids == {"cut": ["a3"]}
    assert report.unexpected == 2


def test_accepted_equals_delivered_plus_lost_in_every_row() -> None:
    accepted, deliveries = _report()
    report = reconcile(
        accepted, deliveries, kinds=[], cycles={}, refused={}, longest={}, seed=1, command=""
    )
    for row in [*report.rows, report.total]:
        assert row.accepted == row.delivered + row.lost


def test_the_table_is_aligned_and_ends_with_the_seed_and_command() -> None:
    accepted, deliveries = _report()
    report = reconcile(
        accepted,
        deliveries,
        kinds=[WARM_UP, "alarm", "cut"],
        cycles={"cut": 2, "alarm": 1},
        refused={},
        longest={"cut": 0.002},
        seed=9,
        command="scripts/soak --seed 9",
    )
    lines = format_table(report).splitlines()
    assert lines[0].split()[:3] == ["fault", "cycles", "accepted"]
    table = lines[: 2 + len(report.rows) + 2]
    assert len({len(line) for line in table if not line.startswith("-")}) == 1
    assert lines[-3].split()[:4] == ["total", "3", "5", "0"]
    assert lines[-2] == "seed 9: scripts/soak --seed 9"
    assert "2 deliveries of ids the soak never published" in lines[-1]
    data = report_json(report, drained=True)
    assert data["total"]["lost"] == 1 and data["drained"] is True and data["seed"] == 9


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0.000084, "84 µs"), (0.035, "35.0 ms"), (1.25, "1.2 s")],
)
def test_durations_read_in_a_fitting_unit(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("printed", "args"),
    [
        ("0.4\n", ["0.4"]),
        ("0.6", ["0.6"]),
        ("{absolute,1073741824}\n", ["absolute", "1073741824"]),
        ('{absolute,"1GB"}', ["absolute", "1GB"]),
        ("{relative,0.5}", ["0.5"]),
    ],
)
def test_the_memory_watermark_is_restored_as_it_was_read(printed: str, args: list[str]) -> None:
    assert watermark_args(printed) == args


def test_an_unreadable_watermark_is_an_error() -> None:
    with pytest.raises(ValueError):
        watermark_args("Error: node down")


def test_the_producer_url_goes_through_the_proxy_with_a_heartbeat() -> None:
    url = via_proxy("amqp://u:p@broker:5673/vh?heartbeat=60&name=x", 40000, 1)
    assert url == "amqp://u:p@127.0.0.1:40000/vh?name=x&heartbeat=1"
    assert via_proxy("amqp://127.0.0.1", 1, 2) == "amqp://127.0.0.1:1/?heartbeat=2"
