"""The simulators' physics where predictive maintenance depends on it: motor currents with
their no-load (magnetising) share, pump bearing temperatures of real pumps, and wear that a
repair or a maintenance window resets (with the ground truth saying so)."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from birlik.plant import Plant, PlantError, parse_plant
from ops import bench_plant as bp
from simulators.faults import BearingWear, apply_maintenance, parse_fault, parse_maintenance
from simulators.fleet import Fleet, GroundTruth, load_ground_truth, write_ground_truth
from simulators.machines import KINDS, MachineModel
from simulators.machines.base import motor_currents

T0 = 1_700_000_040_000  # a multiple of the 60 s sample interval
H = 3_600_000
Arrays = dict[str, np.ndarray]


def _plant(machines: list[dict[str, Any]], *, interval: str = "60s", ambient: dict[str, float] | None = None) -> Plant:
    site = {
        "id": "uz-syrdarya",
        "utc_offset_h": 5,
        "ambient": ambient or {"mean_c": 24, "daily_swing_c": 10},
        "lines": [{"id": "line", "tenant": "tenant", "machines": machines}],
    }
    return parse_plant({"sample_interval": interval, "sites": [site]}, "physics-plant")


def _run(plant: Plant, hours: float, *, seed: int = 1, start_ms: int = T0) -> tuple[Fleet, dict[str, Arrays]]:
    """Every machine's signals as arrays, by machine id."""
    fleet = Fleet(plant, seed=seed, start_ms=start_ms)
    parts: dict[str, list[Arrays]] = defaultdict(list)
    for machine, ts, values in fleet.blocks(fleet.start_ms + int(hours * H) - 1):
        parts[machine.id].append({"ts": ts, **values})
    return fleet, {m: {k: np.concatenate([p[k] for p in ps]) for k in ps[0]} for m, ps in parts.items()}


def _model(kind: str, **params: Any) -> MachineModel:
    fleet = Fleet(_plant([{"id": "m", "kind": kind, "params": params}]), start_ms=T0)
    return fleet.models[0][1]


def _hours(run: Arrays, start: float, end: float) -> np.ndarray:
    t = (run["ts"] - run["ts"][0]) / H
    return (t >= start) & (t < end)


# --- motor current --------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_motor_at_no_load_draws_30_to_50_percent_of_its_rated_current(kind: str) -> None:
    model = _model(kind)
    rated_kw = model.p["rated_kw"]
    power = np.array([0.0, 0.02, 0.05]) * rated_kw  # running, next to no load
    share = model.motor_current(power, np.ones(3, dtype=bool)) / model.rated_current_a

    assert model.p["no_load_share"] == 0.35
    assert np.all((share >= 0.3) & (share <= 0.5)), share
    assert share[0] == pytest.approx(0.35)
    # At rated power the rated current, which follows from the rated power at 400 V, pf 0.86.
    assert model.motor_current(np.array([rated_kw]), np.array([True]))[0] == pytest.approx(model.rated_current_a)
    assert model.rated_current_a == pytest.approx(rated_kw * 1000 / (3**0.5 * 400 * 0.86))


@pytest.mark.parametrize("share", [0.1, 0.35, 0.5, 0.7])
def test_current_rises_monotonically_with_load_and_is_zero_when_not_running(share: float) -> None:
    power = np.linspace(0.0, 1.3, 300) * 22.0
    running = motor_currents(power, np.ones(300, dtype=bool), rated_kw=22.0, no_load_share=share)

    assert np.all(np.diff(running) > 0)
    assert running[0] == pytest.approx(share * 22.0 * 1000 / (3**0.5 * 400 * 0.86))
    assert not motor_currents(power, np.zeros(300, dtype=bool), rated_kw=22.0, no_load_share=share).any()


def test_simulated_currents_keep_the_no_load_share_and_vanish_when_stopped() -> None:
    # The day's demand at 5 %: the pump and the conveyor run next to no load, the compressor
    # is mostly unloaded; a maintenance window stops every machine for an hour at least.
    low = {"schedule": {"shifts": 3, "days": 7, "shift_load": 0.05}, "maintenance": [{"start": "20h", "end": "21h"}]}
    kinds = ("centrifugal_pump", "conveyor_drive", "air_compressor")
    machines = [{"id": k.split("_")[0], "kind": k, "params": low} for k in kinds]
    machines.append({"id": "spare", "kind": "centrifugal_pump", "params": {**low, "no_load_share": 0.45}})
    fleet, runs = _run(_plant(machines), 24)
    models = {m.id: model for m, model in fleet.models}

    for machine_id, run in runs.items():
        model = models[machine_id]
        running = run["state"] == "running"
        assert running.any() and (~running).any(), machine_id
        share = run["motor_current"][running] / model.rated_current_a
        expected = model.p["no_load_share"]
        if machine_id == "air":
            share = share[run["load"][running] < 50]  # unloaded: a quarter of the rated power
        assert np.all((share > expected - 0.02) & (share < 0.5)), (machine_id, share.min(), share.max())
        assert not run["motor_current"][~running].any(), machine_id
    pump, spare = (runs[k]["motor_current"][runs[k]["state"] == "running"].mean() for k in ("centrifugal", "spare"))
    assert spare > pump + 3.0  # the larger magnetising current shows


def test_the_no_load_share_is_checked() -> None:
    with pytest.raises(PlantError, match=r"machine tenant/uz-syrdarya/line/m: 'no_load_share' .* between 0.1 and 0.7"):
        _model("centrifugal_pump", no_load_share=0.05)
    with pytest.raises(PlantError, match=r"'no_load_share' .* got 0.8"):
        _model("extruder", no_load_share=0.8)
    with pytest.raises(PlantError, match=r"parameter 'no_load_share' must be a number, got 'high'"):
        _model("conveyor_drive", no_load_share="high")
    with pytest.raises(PlantError, match=r"'rated_kw' must be positive"):
        _model("spinning_frame", rated_kw=0)
    assert _model("air_compressor", no_load_share=0.7).p["no_load_share"] == 0.7


# --- bearing temperatures ----------------------------------------------------------------


def test_pump_bearings_run_20_to_40_k_above_ambient_and_below_the_alarm_on_a_warm_day() -> None:
    # Syrdarya in late July: afternoons near 36 degC. Pumps at their usual and at a low load.
    start = int(datetime(2026, 7, 20, tzinfo=UTC).timestamp()) * 1000
    machines = [
        {"id": "pump", "kind": "centrifugal_pump"},
        {"id": "big", "kind": "centrifugal_pump", "params": {"rated_kw": 30, "bep_flow_m3h": 160}},
        {"id": "light", "kind": "centrifugal_pump", "params": {"schedule": {"shift_load": 0.45}}},
    ]
    ambient = {"mean_c": 14, "annual_swing_c": 28, "daily_swing_c": 15}
    _, runs = _run(_plant(machines, ambient=ambient), 72, start_ms=start)

    for machine_id, run in runs.items():
        # Running for an hour at least: the housing has reached its equilibrium.
        running = run["state"] == "running"
        settled = running & (np.convolve(~running, np.ones(60), "full")[: len(running)] == 0)
        settled &= _hours(run, 1, 72)
        rise = run["bearing_temp"][settled] - run["ambient_temp"][settled]
        bearing = run["bearing_temp"][settled]
        assert settled.sum() > 1000, machine_id
        assert rise.min() > 20 and rise.max() < 40, (machine_id, rise.min(), rise.max())
        afternoon = bearing[run["ambient_temp"][settled] > 32]
        assert afternoon.min() > 50 and afternoon.max() < 80, machine_id
        assert bearing.max() < 85, machine_id  # healthy: well below a 90 degC alarm


def test_a_worn_pump_bearing_reaches_the_alarm_on_a_warm_day() -> None:
    start = int(datetime(2026, 7, 20, tzinfo=UTC).timestamp()) * 1000
    machines = [{"id": "pump", "kind": "centrifugal_pump", "faults": [{"type": "bearing_wear", "start": "2h",
                                                                        "failure": "40h"}]}]  # fmt: skip
    ambient = {"mean_c": 14, "annual_swing_c": 28, "daily_swing_c": 15}
    _, runs = _run(_plant(machines, ambient=ambient), 40, start_ms=start)
    run = runs["pump"]
    near = _hours(run, 36, 40) & (run["state"] == "running")

    assert run["bearing_temp"][near].max() > 90


# --- repairs and maintenance ----------------------------------------------------------


def test_a_repaired_fault_has_no_severity_and_its_effects_vanish() -> None:
    fault = BearingWear(3600.0, 5 * 3600.0, 0.8, True, 3 * 3600.0)
    assert fault.severity(2.9 * 3600) > 0.2 and fault.severity(3 * 3600) == fault.severity(6 * 3600) == 0.0
    assert not fault.fails and fault.end_s == 3 * 3600 and fault.detectable_s() < 3 * 3600

    wear = {"type": "bearing_wear", "start": "1h", "failure": "5h", "severity": 0.8}
    machines = [
        {"id": "worn", "kind": "centrifugal_pump", "faults": [{**wear, "repaired_at": "3h"}]},
        {"id": "twin", "kind": "centrifugal_pump"},
    ]
    plant = _plant(machines)
    fleet, runs = _run(plant, 6)
    _, twins = _run(_plant([{**machines[0], "faults": []}]), 6)
    worn, twin = runs["worn"], twins["worn"]

    before, after = _hours(worn, 2.5, 3), _hours(worn, 3, 6)
    assert worn["vibration_rms"][before].mean() > twin["vibration_rms"][before].mean() + 1.0
    # From the repair the wear is gone: the same vibration as the healthy twin, the bearing
    # cooling back to the twin's temperature with its thermal lag; no trip at the failure time.
    assert worn["vibration_rms"][after].tolist() == twin["vibration_rms"][after].tolist()
    late = _hours(worn, 5, 6)
    assert np.abs(worn["bearing_temp"][late] - twin["bearing_temp"][late]).max() < 0.5
    assert worn["state"].tolist() == twin["state"].tolist()

    [g] = [g for g in fleet.ground_truth() if g.machine.endswith("/worn")]
    assert g.repaired_ms == fleet.start_ms + 3 * H and not g.failed and g.end_ms == g.repaired_ms
    assert g.failure_ms == fleet.start_ms + 5 * H and g.detectable


def test_a_tripped_machine_is_back_in_service_after_its_repair(tmp_path: Path) -> None:
    machines = [
        {"id": "ex", "kind": "extruder", "faults": [{"type": "imbalance", "start": "1h", "failure": "2h",
                                                     "repaired_at": "4h"}]},
        {"id": "spin", "kind": "spinning_frame", "faults": [{"type": "misalignment", "start": "1h", "failure": "2h",
                                                             "repaired_at": "2.5h"}]},
    ]  # fmt: skip
    fleet, runs = _run(_plant(machines), 7)

    for machine_id, back_h in (("ex", 4), ("spin", 2.5)):
        run = runs[machine_id]
        assert set(run["state"][_hours(run, 2, back_h)]) == {"fault"}, machine_id
        assert "fault" not in set(run["state"][_hours(run, back_h, 7)]), machine_id
        assert "running" in set(run["state"][_hours(run, back_h, 7)]), machine_id
        healthy = _hours(run, back_h + 0.5, 7) & (run["state"] == "running")
        assert run["vibration_rms"][healthy].mean() < 2.5, machine_id
    truth = fleet.ground_truth()
    assert [(g.failed, g.repaired_ms) for g in truth] == [
        (True, fleet.start_ms + 4 * H),
        (True, fleet.start_ms + int(2.5 * H)),
    ]
    path = tmp_path / "truth.json"
    write_ground_truth(truth, path)
    assert load_ground_truth(path) == truth
    assert json.loads(path.read_text())[0]["repaired_ms"] == fleet.start_ms + 4 * H


def test_a_maintenance_window_stops_the_machine_and_resets_the_wear_under_way() -> None:
    machines = [
        {
            "id": "pump",
            "kind": "centrifugal_pump",
            "params": {"maintenance": [{"start": "3h", "duration": "1h"}, {"start": "8h", "end": "9h"}]},
            "faults": [
                {"type": "bearing_wear", "start": "1h", "failure": "6h"},  # reset in the first window
                {"type": "cavitation", "start": "5h", "failure": "12h"},  # reset in the second
            ],
        },
        {
            "id": "tripped",
            "kind": "conveyor_drive",
            "params": {"maintenance": [{"start": "3h", "duration": "2h"}]},
            "faults": [{"type": "overheating", "start": "1h", "failure": "2h"}],  # down, then repaired
        },
    ]
    fleet, runs = _run(_plant(machines), 10)
    pump, conveyor = runs["pump"], runs["tripped"]

    assert set(pump["state"][_hours(pump, 3, 4)]) == {"stopped"}
    assert set(pump["state"][_hours(pump, 8, 9)]) == {"stopped"}
    assert "fault" not in set(pump["state"])
    assert not pump["motor_current"][_hours(pump, 3, 4)].any()
    assert set(conveyor["state"][_hours(conveyor, 2, 3)]) == {"fault"}
    assert set(conveyor["state"][_hours(conveyor, 3, 5)]) == {"stopped"}
    assert "running" in set(conveyor["state"][_hours(conveyor, 5, 10)])
    assert "fault" not in set(conveyor["state"][_hours(conveyor, 3, 10)])
    by = {(g.machine.rsplit("/", 1)[-1], g.fault): g for g in fleet.ground_truth()}
    wear, cavitation, overheating = by["pump", "bearing_wear"], by["pump", "cavitation"], by["tripped", "overheating"]
    assert (wear.repaired_ms, wear.failed) == (fleet.start_ms + 3 * H, False)
    assert (cavitation.repaired_ms, cavitation.failed) == (fleet.start_ms + 8 * H, False)
    assert (overheating.repaired_ms, overheating.failed) == (fleet.start_ms + 3 * H, True)


def test_apply_maintenance_repairs_what_began_before_a_window_ends() -> None:
    windows = parse_maintenance([{"start": "10h", "duration": "2h"}, {"start": "1d", "end": "25h"}], "m")
    assert windows == ((36_000.0, 43_200.0), (86_400.0, 90_000.0))
    faults = [
        BearingWear(0.0, 20 * 3600.0),  # under way at the first window
        BearingWear(11 * 3600.0, 50 * 3600.0),  # began inside it: never shows
        BearingWear(13 * 3600.0, 20 * 3600.0),  # failed before the second window: repaired in it
        BearingWear(0.0, 9 * 3600.0, repaired_s=5 * 3600.0),  # its own repair came first
        BearingWear(30 * 3600.0, 40 * 3600.0),  # after every window
    ]
    repaired = [f.repaired_s / 3600 for f in apply_maintenance(faults, windows)]
    assert repaired == [10.0, 11.0, 24.0, 5.0, float("inf")]


def test_repair_and_maintenance_options_are_checked() -> None:
    def fault(**spec: Any) -> None:
        parse_fault({"type": "bearing_wear", "start": "2h", "failure": "5h", **spec}, "f")

    with pytest.raises(PlantError, match=r"f: repaired_at \(3600 s\) must come after start \(7200 s\)"):
        fault(repaired_at="1h")
    with pytest.raises(PlantError, match=r"f: repaired_at: 'soon' is not a duration"):
        fault(repaired_at="soon")
    cavitation = parse_fault({"type": "cavitation", "start": "1h", "failure": "2h", "repaired_at": "3h"}, "f")
    assert cavitation.repaired_s == 10_800 and cavitation.fails

    def windows(spec: Any) -> None:
        parse_maintenance(spec, "m")

    with pytest.raises(PlantError, match=r"m: 'maintenance' must be a list of windows"):
        windows({"start": "1h"})
    with pytest.raises(PlantError, match=r"m: maintenance\[0\]: a maintenance window needs 'start' and 'end' or"):
        windows([{"duration": "1h"}])
    with pytest.raises(PlantError, match=r"maintenance\[0\]: give 'end' or 'duration', not both"):
        windows([{"start": "1h", "end": "2h", "duration": "1h"}])
    with pytest.raises(PlantError, match=r"maintenance\[0\]: unknown keys reason"):
        windows([{"start": "1h", "duration": "1h", "reason": "bearing"}])
    with pytest.raises(PlantError, match=r"maintenance\[1\]: end \(3600 s\) must come after start \(7200 s\)"):
        windows([{"start": "3h", "duration": "1h"}, {"start": "2h", "end": "1h"}])
    with pytest.raises(PlantError, match=r"m: maintenance windows overlap"):
        windows([{"start": "1h", "duration": "2h"}, {"start": "2h", "duration": "1h"}])
    with pytest.raises(PlantError, match=r"machine tenant/uz-syrdarya/line/m: 'maintenance' must be a list"):
        _model("centrifugal_pump", maintenance="weekly")


def test_the_plant_benchmark_does_not_count_a_repaired_fault_as_a_failure() -> None:
    def g(machine: str, repaired_h: float | None) -> GroundTruth:
        return GroundTruth(f"t/s/l/{machine}", "centrifugal_pump", "bearing_wear", 10 * H, 12 * H, 100 * H,
                           repaired_ms=None if repaired_h is None else int(repaired_h * H))  # fmt: skip

    def e(machine: str, kind: str, at_h: float) -> bp.Event:
        return bp.Event(f"t/s/l/{machine}", kind, "raised", int(at_h * H))

    truth = [g("a", 50), g("b", 50), g("c", 120), g("d", None)]
    events = [
        e("a", "condition", 30),  # while under way: an early warning, not false
        e("a", "condition", 50.5),  # within the hour after the repair: still the fault's
        e("a", "condition", 70),  # the machine is healthy again: false
        e("c", "condition", 90),  # c fails at 100 h, repaired later: alerted before failure
        e("d", "condition", 110),  # after the failure of an unrepaired fault: not false
    ]
    s = bp.score(truth, events, machines=4, start_ms=0, end_ms=200 * H)

    assert (s.repaired, s.repaired_alerted) == (2, 1)
    assert (s.machine["bearing_wear"].faults, s.machine["bearing_wear"].alerted) == (2, 1)
    assert s.false_alarms == 1 and s.censored == 0
    assert bp.report(s)["repaired_faults"] == 2
