"""``ops/bench_plant.py``: its scoring on known cases, its fault draw, and the simulators'
production schedules it relies on."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import yaml

from birlik.plant import PlantError, load_plant, parse_plant
from ops import bench_plant as bp
from simulators.faults import FAULT_TYPES, SENSOR_FAULT_TYPES
from simulators.fleet import Fleet, GroundTruth
from simulators.schedule import Schedule, parse_schedule

H = 3_600_000
D = 24 * H
T0 = 1_772_409_600_000  # 2026-03-02 00:00 UTC, a Monday
P = "t/s/l/"


def _g(machine: str, fault: str, onset_h: float, failure_h: float, category: str = "machine") -> GroundTruth:
    signals = ("bearing_temp",) if category == "sensor" else ()
    return GroundTruth(P + machine, "centrifugal_pump", fault, T0 + int(onset_h * H), T0 + int((onset_h + 1) * H),
                       T0 + int(failure_h * H), category=category, signals=signals)  # fmt: skip


def _e(machine: str, kind: str, at_h: float, transition: str = "raised", title: str = "") -> bp.Event:
    return bp.Event(P + machine, kind, transition, T0 + int(at_h * H), title)


def test_score_counts_alerts_leads_false_alarms_and_sensor_recall() -> None:
    truth = [
        _g("a", "bearing_wear", 50, 150),  # alarmed at 100 h: lead 50 h
        _g("b", "imbalance", 50, 150),  # only a trip at failure and an alarm before the onset: missed
        _g("c", "cavitation", 60, 100),  # reactivated at 90 h after an alarm at 70 h: the first counts
        _g("d", "stuck", 20, 40, "sensor"),  # reported at 25 h, naming the signal
        _g("e", "drift", 20, 40, "sensor"),  # only reported after its end: missed
        _g("f", "misalignment", 100, 400),  # fails after the end of the run: censored
    ]
    events = [
        _e("a", "condition", 100),
        _e("a", "condition", 160),  # after the failure of a fault still there: not false
        _e("b", "condition", 10),  # before the onset: false
        _e("b", "trip", 150),
        _e("c", "condition", 70),
        _e("c", "condition", 90, "reactivated"),
        _e("d", "sensor", 25, title="d: sensor fault (bearing_temp)"),
        _e("d", "condition", 30),  # caused by the sensor fault: false, and counted as such
        _e("e", "sensor", 41),  # after the end (within the grace: not a false sensor alarm)
        _e("g", "condition", 5),  # healthy machine: false
        _e("g", "condition", 6, "returned"),  # not a new alarm
        _e("g", "sensor", 8),  # no sensor fault: a false sensor alarm
        _e("a", "sensor", 120),  # a machine fault called a sensor fault
    ]
    issues = [_e("e", "issue", 30, title="bearing_temp"), _e("d", "issue", 24, title="motor_temp")]
    s = bp.score(truth, events, machines=7, start_ms=T0, end_ms=T0 + 2 * 7 * D, issues=issues)
    assert (s.machine["bearing_wear"].faults, s.machine["bearing_wear"].alerted) == (1, 1)
    assert s.machine["bearing_wear"].hours == [50.0]
    assert (s.machine["imbalance"].faults, s.machine["imbalance"].alerted) == (1, 0)
    assert s.machine["cavitation"].hours == [30.0]
    assert s.machine["bearing_wear"].possible_h == [99.0]
    assert s.censored == 1 and "misalignment" not in s.machine
    assert (s.false_alarms, s.false_during_sensor) == (3, 1)
    assert s.false_sensor_alarms == 2  # on g, and the one calling a machine fault a sensor fault
    assert s.machine_called_sensor == 1
    assert (s.sensor["stuck"].alerted, s.sensor["stuck"].right_signal, s.sensor["stuck"].hours) == (1, 1, [5.0])
    assert (s.sensor["drift"].faults, s.sensor["drift"].alerted) == (1, 0)
    assert (s.sensor["stuck"].checked, s.sensor["drift"].checked) == (0, 1)  # the issue on motor_temp is not it
    assert s.machine_weeks == pytest.approx(14.0)

    total = bp.Score()
    total.add(s)
    total.add(s)
    result = bp.report(total)
    assert list(result)[:5] == [
        "faults",
        "alerted_before_failure",
        "median_lead_h",
        "false_alerts_per_machine_week",
        "sensor_fault_recall",
    ]
    assert result["faults"] == 6 and result["alerted_before_failure"] == 4
    assert result["median_lead_h"] == 40.0  # leads 50, 30, 50, 30
    assert result["false_alerts_per_machine_week"] == round(6 / 28, 3)
    assert result["sensor_fault_recall"] == 0.5


def test_draw_has_every_fault_type_once_on_distinct_machines_inside_the_run() -> None:
    plant = load_plant(bp.PLANT_FILE)
    machines = [(m.id, m.kind) for m in plant.machines()]
    for seed in (1, 2, 3):
        drawn = bp.draw_faults(seed, machines, 21.0)
        specs = [s for faults in drawn.values() for s in faults]
        assert all(len(f) == 1 for f in drawn.values())  # one fault per machine
        assert sorted(s["type"] for s in specs) == sorted([*FAULT_TYPES, *SENSOR_FAULT_TYPES])
        assert len(machines) - len(drawn) >= 3  # some stay healthy
    data = yaml.safe_load(bp.PLANT_FILE.read_text())
    plant = bp.build_plant(data, 1, 21.0, "realistic")
    truth = Fleet(plant, seed=1, start_ms=T0).ground_truth()
    assert not plant.random_faults and len(truth) == len(FAULT_TYPES) + len(SENSOR_FAULT_TYPES)
    for g in truth:
        assert T0 + bp.LEARN_D * D <= g.onset_ms < g.failure_ms <= T0 + 21 * D - D // 2
        if g.category == "machine" and g.fault != "overheating":
            assert g.failure_ms - g.onset_ms >= 3 * D - 1000  # days to weeks
        if g.category == "machine":
            assert 0.5 <= g.severity <= 1.0


# --- production schedules (simulators/schedule.py) -------------------------------------


def _plant(params: dict[str, Any], kind: str = "centrifugal_pump") -> Any:
    return parse_plant(
        {
            "sample_interval": "60s",
            "sites": [
                {
                    "id": "s",
                    "utc_offset_h": 5,
                    "lines": [{"id": "l", "tenant": "t", "machines": [{"id": "m", "kind": kind, "params": params}]}],
                }
            ],
        }
    )


def _run(params: dict[str, Any], days: float, kind: str = "centrifugal_pump") -> tuple[np.ndarray, dict[str, Any]]:
    fleet = Fleet(_plant(params, kind), seed=5, start_ms=T0)
    blocks = list(fleet.blocks(T0 + int(days * D) - 1))
    ts = np.concatenate([b[1] for b in blocks])
    return ts, {k: np.concatenate([b[2][k] for b in blocks]) for k in blocks[0][2]}


def test_schedule_stops_outside_shifts_and_at_weekends_and_sets_the_load_per_shift() -> None:
    sched = {"shifts": 2, "days": 5, "first_shift_h": 6, "shift_load": [1.0, 0.6]}
    ts, v = _run({"schedule": sched}, 7)
    hour = ((ts // 1000 + 5 * 3600) % 86_400) // 3600
    weekday = ((ts // 1000 + 5 * 3600) // 86_400 + 3) % 7
    state = v["state"]
    off = (hour < 6) | (hour >= 22) | (weekday >= 5)
    assert np.all(state[off] == "stopped")
    assert np.mean(state[~off] == "running") > 0.8  # short random stops within the shifts remain
    first = (~off) & (hour >= 8) & (hour < 14) & (state == "running")
    second = (~off) & (hour >= 16) & (hour < 22) & (state == "running")
    ratio = np.mean(v["flow"][second]) / np.mean(v["flow"][first])
    assert 0.55 < ratio < 0.65
    # A utility runs on at its base load outside the shifts.
    ts, v = _run({"schedule": {**sched, "off_load": 0.4}}, 7)
    weekend = (((ts // 1000 + 5 * 3600) // 86_400 + 3) % 7) >= 5
    assert np.mean(v["state"][weekend] == "running") > 0.8
    assert 0.3 < np.mean(v["flow"][weekend & (v["state"] == "running")]) / 102 < 0.5


def test_schedule_demand_varies_by_day_and_extruders_follow_the_on_off_pattern() -> None:
    ts, v = _run({"schedule": {"shifts": 3, "days": 7, "demand_spread": 0.15}}, 10, "conveyor_drive")
    day = (ts // 1000 + 5 * 3600) // 86_400
    running = v["state"] == "running"
    means = [np.mean(v["load"][(day == d) & running]) for d in np.unique(day)[1:-1]]
    assert np.std(means) > 2.0  # percent of rated load, day to day
    ts, v = _run({"schedule": {"shifts": 1, "days": 6, "first_shift_h": 7}}, 7, "extruder")
    hour = ((ts // 1000 + 5 * 3600) % 86_400) // 3600
    assert np.all(v["state"][(hour < 7) | (hour >= 15)] == "stopped")
    assert np.all(v["speed"][v["state"] == "stopped"] == 0)


@pytest.mark.parametrize("kind", ["centrifugal_pump", "air_compressor", "conveyor_drive", "extruder", "spinning_frame"])
def test_a_schedule_that_always_runs_at_full_load_changes_nothing(kind: str) -> None:
    _, plain = _run({}, 3, kind)
    _, scheduled = _run({"schedule": {"shifts": 3, "days": 7}}, 3, kind)
    for name, values in plain.items():
        assert np.array_equal(values, scheduled[name], equal_nan=values.dtype.kind == "f"), name


def test_existing_plants_have_no_schedule_and_the_realistic_one_schedules_every_machine() -> None:
    for name in ("central-asia.yaml", "sensor-faults.yaml"):
        plant = load_plant(bp.PLANT_FILE.parent / name)
        assert all(m.schedule is None for _, m in Fleet(plant, start_ms=T0).models)
    models = Fleet(load_plant(bp.PLANT_FILE), start_ms=T0).models
    assert len(models) == 16 and all(m.schedule is not None for _, m in models)
    assert load_plant(bp.PLANT_FILE).sample_interval_s == 60


def test_schedule_errors_say_what_is_wrong() -> None:
    assert parse_schedule({}, "m") == Schedule()
    assert parse_schedule({"shift_load": 0.7}, "m").shift_load == (0.7,)
    for bad, words in [
        ([2], "must be a mapping"),
        ({"shift": 2}, "unknown schedule keys shift"),
        ({"shifts": 4}, "within 24 h"),
        ({"days": 8}, "'days' must be a number from 0 to 7"),
        ({"shift_load": []}, "'shift_load' must be a number or a list"),
        ({"off_load": -1}, "'off_load'"),
    ]:
        with pytest.raises(PlantError, match=words):
            parse_schedule(bad, "m")
    with pytest.raises(PlantError, match="machine t/s/l/m: 'schedule' must be a mapping"):
        Fleet(_plant({"schedule": "two shifts"}), start_ms=T0)
