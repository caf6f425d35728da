"""Machine faults and sensor faults: each with its signature, absent in a healthy twin; their
ground truth; random scenarios from a seed; and the extruder's physical sanity."""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from birlik.payload import Reason, Value, decode_telemetry, encode_telemetry
from birlik.plant import Plant, PlantError, parse_plant
from birlik.signals import SIGNALS
from simulators.faults import FAULT_TYPES, SENSOR_FAULT_TYPES, random_scenarios
from simulators.fleet import Fleet, GroundTruth, load_ground_truth, write_ground_truth
from simulators.machines import KINDS

T0 = 1_700_000_000_000  # a multiple of the 5 s sample interval
MIN = 60_000
Samples = list[tuple[int, dict[str, Value]]]


def _plant(machines: Sequence[Mapping[str, Any]], **top: Any) -> Plant:
    data = {
        "sample_interval": "5s",
        "sites": [
            {
                "id": "uz-syrdarya",
                "utc_offset_h": 5,
                "ambient": {"mean_c": 24, "daily_swing_c": 14},
                "lines": [{"id": "line", "tenant": "tenant", "machines": list(machines)}],
            }
        ],
        **top,
    }
    return parse_plant(data, "test-plant")


def _healthy_twin(plant: Plant) -> Plant:
    """The same plant, every fault removed: same machine paths, so the same noise."""
    sites = tuple(
        dataclasses.replace(
            site,
            lines=tuple(
                dataclasses.replace(line, machines=tuple(dataclasses.replace(m, faults=()) for m in line.machines))
                for line in site.lines
            ),
        )
        for site in plant.sites
    )
    return dataclasses.replace(plant, sites=sites, random_faults={})


def _run(plant: Plant, *, minutes: float, seed: int) -> dict[str, Samples]:
    out: dict[str, Samples] = defaultdict(list)
    for machine, ts, values in Fleet(plant, seed=seed, start_ms=T0).advance(T0 + round(minutes * MIN)):
        out[machine.id].append((ts, values))
    return out


def _window(samples: Samples, start_min: float, end_min: float) -> Samples:
    return [(ts, v) for ts, v in samples if start_min * MIN <= ts - T0 < end_min * MIN]


def _series(samples: Samples, name: str) -> np.ndarray:
    return np.array([float(v[name]) for _, v in samples])


# --- machine faults -------------------------------------------------------------------

# Each fault starts at 20 min and fails at 100 min; the run goes on to 105 min.
MACHINE_FAULTS: list[dict[str, Any]] = [
    {"id": "pump-imb", "kind": "centrifugal_pump", "faults": [{"type": "imbalance"}]},
    {"id": "pump-imb-half", "kind": "centrifugal_pump", "faults": [{"type": "imbalance", "severity": 0.5}]},
    {"id": "pump-mis", "kind": "centrifugal_pump", "faults": [{"type": "misalignment"}]},
    {"id": "pump-cav", "kind": "centrifugal_pump", "faults": [{"type": "cavitation"}]},
    {"id": "pump-clog", "kind": "centrifugal_pump", "faults": [{"type": "clogged_filter"}]},
    {"id": "pump-wear", "kind": "centrifugal_pump", "faults": [{"type": "bearing_wear", "trips": False}]},
    {"id": "comp-hot", "kind": "air_compressor", "faults": [{"type": "overheating"}]},
    {"id": "conv-cool", "kind": "conveyor_drive", "faults": [{"type": "cooling_failure"}]},
    {"id": "ex-imb", "kind": "extruder", "faults": [{"type": "imbalance"}]},
    {"id": "ex-mis", "kind": "extruder", "faults": [{"type": "misalignment"}]},
]
for _m in MACHINE_FAULTS:
    _m["faults"][0].update(start="20m", failure="100m")
FAULT_SEED = 24


@pytest.fixture(scope="module")
def fault_plant() -> Plant:
    return _plant(MACHINE_FAULTS)


@pytest.fixture(scope="module")
def fault_runs(fault_plant: Plant) -> tuple[dict[str, Samples], dict[str, Samples]]:
    """The faulty plant and its healthy twin, same seed."""
    faulty = _run(fault_plant, minutes=105, seed=FAULT_SEED)
    return faulty, _run(_healthy_twin(fault_plant), minutes=105, seed=FAULT_SEED)


def _pair(runs: tuple[dict[str, Samples], dict[str, Samples]], machine_id: str) -> tuple[Samples, Samples]:
    faulty, healthy = runs[0][machine_id], runs[1][machine_id]
    # Before the onset the fault does not exist: the twins are identical, noise included.
    assert _window(faulty, 0, 20) == _window(healthy, 0, 20), machine_id
    # Late in the fault, both run (the seed was chosen so): the signature is the fault's.
    late = _window(faulty, 85, 100) + _window(healthy, 85, 100)
    assert {v["state"] for _, v in late} == {"running"}, machine_id
    return _window(faulty, 85, 100), _window(healthy, 85, 100)


def test_every_machine_fault_type_is_exercised() -> None:
    assert {m["faults"][0]["type"] for m in MACHINE_FAULTS} == set(FAULT_TYPES)


def test_imbalance_raises_vibration_steadily_independent_of_load(fault_runs: Any) -> None:
    faulty, twin = _pair(fault_runs, "pump-imb")

    excess = _series(faulty, "vibration_rms") - _series(twin, "vibration_rms")
    assert 4.0 < excess.mean() < 6.5
    # Load-independent: the process (flow, power) is exactly the twin's.
    for name in ("flow", "power", "motor_current"):
        assert _series(faulty, name).tolist() == _series(twin, name).tolist(), name
    # A steady rise: each quarter of the fault's window vibrates more than the one before.
    whole = fault_runs[0]["pump-imb"]
    quarters = [_series(_window(whole, a, a + 20), "vibration_rms").mean() for a in (20, 40, 60, 80)]
    assert quarters == sorted(quarters)
    # The bearing warms only slightly; the winding not at all.
    bearing = _series(faulty, "bearing_temp").mean() - _series(twin, "bearing_temp").mean()
    assert 1.0 < bearing < 6.0
    assert _series(faulty, "motor_temp").mean() == pytest.approx(_series(twin, "motor_temp").mean(), abs=0.3)
    # It trips at failure by default.
    assert {v["state"] for _, v in _window(whole, 100, 105)} == {"fault"}


def test_severity_scales_the_final_effect(fault_runs: Any) -> None:
    def excess(machine_id: str) -> float:
        faulty, twin = _pair(fault_runs, machine_id)
        return float(_series(faulty, "vibration_rms").mean() - _series(twin, "vibration_rms").mean())

    assert excess("pump-imb-half") == pytest.approx(excess("pump-imb") / 2, rel=0.15)


def test_misalignment_raises_vibration_bearing_temperature_and_current(fault_runs: Any) -> None:
    faulty, twin = _pair(fault_runs, "pump-mis")

    def rise(name: str) -> float:
        return float(_series(faulty, name).mean() - _series(twin, name).mean())

    assert 1.5 < rise("vibration_rms") < 3.5
    assert 3.0 < rise("bearing_temp") < 10.0
    assert 0.5 < rise("motor_current") < 4.0  # friction: a few per cent more current
    assert _series(faulty, "flow").tolist() == _series(twin, "flow").tolist()  # same process


def test_cavitation_makes_flow_and_pressure_fluctuate_with_vibration_bursts(fault_runs: Any) -> None:
    faulty, twin = _pair(fault_runs, "pump-cav")

    for name in ("flow", "discharge_pressure"):
        assert _series(faulty, name).std() > 3 * _series(twin, name).std(), name
    flow_drop = 1 - _series(faulty, "flow").mean() / _series(twin, "flow").mean()
    assert 0.01 < flow_drop < 0.12  # the mean flow drops a little
    vibration, healthy = _series(faulty, "vibration_rms"), _series(twin, "vibration_rms")
    assert vibration.mean() > healthy.mean() + 1.0
    assert vibration.max() > healthy.max() + 4.0  # bursts
    assert vibration.std() > 5 * healthy.std()
    # The fluctuation grows with severity: early in the fault the flow surges less.
    early = [_window(run["pump-cav"], 25, 45) for run in fault_runs]
    early_surges = (_series(early[0], "flow") - _series(early[1], "flow")).std()
    assert early_surges < (_series(faulty, "flow") - _series(twin, "flow")).std() / 2
    # Cavitation does not trip the pump by default.
    assert {v["state"] for _, v in _window(fault_runs[0]["pump-cav"], 100, 105)} == {"running"}


def test_clogged_filter_raises_strainer_pressure_drop_and_starves_the_pump(fault_runs: Any) -> None:
    faulty, twin = _pair(fault_runs, "pump-clog")

    def mean(samples: Samples, name: str) -> float:
        return float(_series(samples, name).mean())

    assert mean(twin, "differential_pressure") < 0.06  # a clean strainer
    assert mean(faulty, "differential_pressure") > mean(twin, "differential_pressure") + 0.2
    assert mean(faulty, "suction_pressure") < mean(twin, "suction_pressure") - 0.2
    assert mean(faulty, "flow") < 0.9 * mean(twin, "flow")
    assert 0.8 * mean(twin, "power") < mean(faulty, "power") < 0.97 * mean(twin, "power")  # falls slightly
    # The drop rises slowly, then faster, as the cake closes the mesh.
    whole = fault_runs[0]["pump-clog"]
    drops = [_series(_window(whole, a, a + 20), "differential_pressure").mean() for a in (20, 40, 60, 80)]
    assert np.all(np.diff(drops, 2) > 0)


def test_trips_false_keeps_the_machine_running_at_full_severity(fault_runs: Any) -> None:
    whole = fault_runs[0]["pump-wear"]
    after, twin = _window(whole, 100, 105), _window(fault_runs[1]["pump-wear"], 100, 105)

    assert {v["state"] for _, v in after} == {"running"}
    assert _series(after, "vibration_rms").mean() > _series(twin, "vibration_rms").mean() + 5.0


def test_overheating_and_cooling_failure_heat_the_machine_and_trip_it(fault_runs: Any) -> None:
    faulty, twin = _pair(fault_runs, "comp-hot")
    for name in ("motor_temp", "oil_temp", "discharge_temp"):
        assert _series(faulty, name).mean() > _series(twin, name).mean() + 25.0, name

    faulty, twin = _pair(fault_runs, "conv-cool")
    assert _series(faulty, "motor_temp").mean() > _series(twin, "motor_temp").mean() + 15.0
    assert _series(faulty, "bearing_temp").tolist() == _series(twin, "bearing_temp").tolist()
    for machine_id in ("comp-hot", "conv-cool"):
        assert {v["state"] for _, v in _window(fault_runs[0][machine_id], 100, 105)} == {"fault"}, machine_id


def test_extruder_faults_show_in_vibration_motor_temperature_and_current(fault_runs: Any) -> None:
    faulty, twin = _pair(fault_runs, "ex-imb")
    assert _series(faulty, "vibration_rms").mean() > _series(twin, "vibration_rms").mean() + 4.0
    assert _series(faulty, "melt_pressure").tolist() == _series(twin, "melt_pressure").tolist()

    faulty, twin = _pair(fault_runs, "ex-mis")
    assert _series(faulty, "vibration_rms").mean() > _series(twin, "vibration_rms").mean() + 1.5
    assert _series(faulty, "motor_current").mean() > _series(twin, "motor_current").mean() + 2.0
    assert _series(faulty, "speed").tolist() == _series(twin, "speed").tolist()


def test_machine_fault_options_are_checked() -> None:
    def plant_with(kind: str, fault: dict[str, Any]) -> Fleet:
        return Fleet(_plant([{"id": "m", "kind": kind, "faults": [fault]}]), start_ms=T0)

    with pytest.raises(PlantError, match=r"machine tenant/uz-syrdarya/line/m: faults\[0\]: fault cavitation applies"):
        plant_with("air_compressor", {"type": "cavitation"})
    with pytest.raises(PlantError, match=r"'severity' must be between 0 and 1"):
        plant_with("centrifugal_pump", {"type": "imbalance", "severity": 2})
    with pytest.raises(PlantError, match=r"unknown fault type 'rust'.*stuck"):
        plant_with("centrifugal_pump", {"type": "rust"})
    with pytest.raises(PlantError, match=r"unknown keys amount for fault imbalance"):
        plant_with("centrifugal_pump", {"type": "imbalance", "amount": 3})
    with pytest.raises(PlantError, match=r"sensor fault stuck needs 'signal'.*flow"):
        plant_with("centrifugal_pump", {"type": "stuck", "signal": "melt_pressure"})
    with pytest.raises(PlantError, match=r"'factor' must be a number"):
        plant_with("centrifugal_pump", {"type": "scaling", "signal": "flow", "factor": "x"})


# --- sensor faults --------------------------------------------------------------------

SENSOR_FAULTS: list[dict[str, Any]] = [
    {"type": "stuck", "signal": "bearing_temp", "start": "30m", "duration": "20m"},
    {"type": "drift", "signal": "motor_temp", "start": "20m", "end": "60m", "amount": 5.0},
    {"type": "spikes", "signal": "vibration_rms", "start": "10m", "duration": "60m", "amount": 8.0, "rate": 30},
    {"type": "dropout", "signal": "flow", "start": "40m", "duration": "15m"},
    {"type": "scaling", "signal": "discharge_pressure", "start": "20m", "duration": "20m", "factor": 1.6},
]


@pytest.fixture(scope="module")
def sensor_runs() -> tuple[Samples, Samples]:
    plant = _plant([{"id": "pump", "kind": "centrifugal_pump", "faults": SENSOR_FAULTS}])
    faulty = _run(plant, minutes=80, seed=3)["pump"]
    healthy = _run(_healthy_twin(plant), minutes=80, seed=3)["pump"]
    return faulty, healthy


def test_every_sensor_fault_type_is_exercised() -> None:
    assert {f["type"] for f in SENSOR_FAULTS} == set(SENSOR_FAULT_TYPES)


def _in(ts: int, start_min: float, end_min: float) -> bool:
    return start_min * MIN <= ts - T0 < end_min * MIN


def test_sensor_faults_change_only_their_signal_in_their_window(sensor_runs: tuple[Samples, Samples]) -> None:
    faulty, healthy = sensor_runs
    windows = {"bearing_temp": (30, 50), "motor_temp": (20, 60), "vibration_rms": (10, 70), "flow": (40, 55)}
    windows["discharge_pressure"] = (20, 40)

    assert [ts for ts, _ in faulty] == [ts for ts, _ in healthy]
    for (ts, bad), (_, good) in zip(faulty, healthy, strict=True):
        for name, value in good.items():
            if name in windows and _in(ts, *windows[name]):
                continue
            assert bad[name] == value, (ts, name)  # the machine itself is the healthy twin


def test_stuck_holds_the_value_at_the_onset(sensor_runs: tuple[Samples, Samples]) -> None:
    faulty, healthy = sensor_runs
    stuck = [v["bearing_temp"] for ts, v in faulty if _in(ts, 30, 50)]
    onset = next(v["bearing_temp"] for ts, v in healthy if _in(ts, 30, 50))

    assert len(stuck) == 20 * 12 and set(stuck) == {onset}
    assert len({v["bearing_temp"] for ts, v in healthy if _in(ts, 30, 50)}) > 10  # the real one moves


def test_drift_grows_linearly_to_its_amount(sensor_runs: tuple[Samples, Samples]) -> None:
    faulty, healthy = sensor_runs
    t, error = [], []
    for (ts, bad), (_, good) in zip(faulty, healthy, strict=True):
        if _in(ts, 20, 60):
            t.append((ts - T0) / MIN)
            error.append(float(bad["motor_temp"]) - float(good["motor_temp"]))

    slope, intercept = np.polyfit(t, error, 1)
    assert slope == pytest.approx(5.0 / 40, rel=0.01)
    assert intercept == pytest.approx(-20 * 5.0 / 40, abs=0.02)
    assert max(np.abs(np.array(error) - (slope * np.array(t) + intercept))) < 0.01
    assert error[-1] == pytest.approx(5.0, abs=0.02)


def test_spikes_are_isolated_and_of_their_amount(sensor_runs: tuple[Samples, Samples]) -> None:
    faulty, healthy = sensor_runs
    error = [
        round(float(bad["vibration_rms"]) - float(good["vibration_rms"]), 3)
        for (ts, bad), (_, good) in zip(faulty, healthy, strict=True)
        if _in(ts, 10, 70)
    ]

    assert set(error) == {0.0, 8.0}
    spikes = error.count(8.0)
    assert 12 <= spikes <= 50  # 30 an hour on average, for an hour
    assert spikes < len(error) / 10  # isolated, not a level shift


def test_dropout_removes_the_signal_from_the_readings(sensor_runs: tuple[Samples, Samples]) -> None:
    faulty, _ = sensor_runs
    missing = [ts for ts, v in faulty if "flow" not in v]

    assert missing == [ts for ts, _ in faulty if _in(ts, 40, 55)]
    assert len(missing) == 15 * 12


def test_scaling_multiplies_by_its_factor(sensor_runs: tuple[Samples, Samples]) -> None:
    faulty, healthy = sensor_runs
    for (ts, bad), (_, good) in zip(faulty, healthy, strict=True):
        if _in(ts, 20, 40):
            assert float(bad["discharge_pressure"]) == pytest.approx(1.6 * float(good["discharge_pressure"]), abs=1e-4)


def test_sensor_faults_are_deterministic_with_the_seed() -> None:
    plant = _plant([{"id": "pump", "kind": "centrifugal_pump", "faults": SENSOR_FAULTS[2:3]}])

    first, again = _run(plant, minutes=70, seed=3), _run(plant, minutes=70, seed=3)
    other = _run(plant, minutes=70, seed=4)

    assert first == again

    def spike_times(run: dict[str, Samples], twin: dict[str, Samples]) -> list[int]:
        pairs = zip(run["pump"], twin["pump"], strict=True)
        return [ts for (ts, bad), (_, good) in pairs if bad["vibration_rms"] != good["vibration_rms"]]

    healthy = _healthy_twin(plant)
    spikes = spike_times(first, _run(healthy, minutes=70, seed=3))
    assert spikes and spikes != spike_times(other, _run(healthy, minutes=70, seed=4))


# --- readings against the catalogue ----------------------------------------------------


def _rejections(plant: Plant, run: dict[str, Samples]) -> dict[str, list[Any]]:
    registry = plant.registry()
    out = {}
    for machine in plant.machines():
        samples = run[machine.id]
        rejected = []
        for start in range(0, len(samples), 120):
            chunk = samples[start : start + 120]
            payload = encode_telemetry(gateway="gw-test", seq=start, samples=chunk, kind=machine.kind)
            telemetry = decode_telemetry(machine.path.topic(), payload, machines=registry, now_ms=chunk[-1][0])
            rejected += telemetry.rejections
        out[machine.id] = rejected
    return out


def test_every_model_with_every_machine_fault_stays_inside_the_catalogue(fault_plant: Plant, fault_runs: Any) -> None:
    for machine_id, rejected in _rejections(fault_plant, fault_runs[0]).items():
        assert rejected == [], (machine_id, rejected[:3])
    assert {m.kind for m in fault_plant.machines()} == set(KINDS) - {"spinning_frame"}


def test_only_readings_a_sensor_fault_breaks_are_rejected() -> None:
    faults = [{"type": "scaling", "signal": "barrel_temp", "start": "10m", "duration": "5m", "factor": 3}]
    plant = _plant([{"id": "ex", "kind": "extruder", "faults": faults}, {"id": "spin", "kind": "spinning_frame"}])

    rejected = _rejections(plant, _run(plant, minutes=30, seed=1))

    assert rejected["spin"] == []
    assert len(rejected["ex"]) == 5 * 12
    assert {(r.reason, r.signal) for r in rejected["ex"]} == {(Reason.OUT_OF_RANGE, "barrel_temp")}


# --- ground truth ----------------------------------------------------------------------


def test_ground_truth_records_machine_and_sensor_faults(tmp_path: Path) -> None:
    plant = _plant(
        [
            {"id": "pump", "kind": "centrifugal_pump", "faults": [*SENSOR_FAULTS[:1], MACHINE_FAULTS[4]["faults"][0]]},
            {"id": "ex", "kind": "extruder", "faults": [{"type": "imbalance", "start": "1h", "duration": "2h"}]},
            {"id": "weak", "kind": "conveyor_drive", "faults": [{"type": "misalignment", "severity": 0.05}]},
        ]
    )
    truth = Fleet(plant, seed=1, start_ms=T0 + 1_000).ground_truth()

    by = {(g.machine.split("/")[-1], g.fault): g for g in truth}
    assert list(by) == [("pump", "clogged_filter"), ("ex", "imbalance"), ("weak", "misalignment"), ("pump", "stuck")]
    clog, imb, weak, stuck = by.values()
    assert (clog.category, clog.kind, clog.onset_ms, clog.failure_ms, clog.trips) == (
        "machine",
        "centrifugal_pump",
        T0 + 20 * MIN,
        T0 + 100 * MIN,
        False,
    )
    assert {"differential_pressure", "suction_pressure", "flow"} <= set(clog.signals)
    assert "state" not in clog.signals and "bearing_temp" not in clog.signals
    # Clogging ~ x^2: detectable (severity 0.1) at sqrt(0.1) of the way.
    assert clog.detectable_ms == pytest.approx(T0 + 20 * MIN + 0.1**0.5 * 80 * MIN, abs=2)
    assert (imb.onset_ms, imb.failure_ms, imb.trips, imb.signals) == (
        T0 + 60 * MIN,
        T0 + 180 * MIN,
        True,
        ("state", "motor_temp", "vibration_rms"),
    )
    assert weak.severity == 0.05 and not weak.detectable and weak.detectable_ms == weak.failure_ms
    assert (stuck.category, stuck.signals, stuck.onset_ms, stuck.end_ms, stuck.trips) == (
        "sensor",
        ("bearing_temp",),
        T0 + 30 * MIN,
        T0 + 50 * MIN,
        False,
    )

    path = tmp_path / "truth.json"
    write_ground_truth(truth, path)

    assert load_ground_truth(path) == truth
    rows = json.loads(path.read_text())
    assert rows[3] == {
        "machine": "tenant/uz-syrdarya/line/pump",
        "kind": "centrifugal_pump",
        "fault": "stuck",
        "onset_ms": T0 + 30 * MIN,
        "detectable_ms": T0 + 30 * MIN,
        "failure_ms": T0 + 50 * MIN,
        "category": "sensor",
        "signals": ["bearing_temp"],
        "trips": False,
        "detectable": True,
        "severity": 1.0,
    }
    # The gateway's older files (no category, no signals) still load.
    old = {k: rows[0][k] for k in ("machine", "kind", "fault", "onset_ms", "detectable_ms", "failure_ms")}
    path.write_text(json.dumps([old]))
    assert load_ground_truth(path)[0] == GroundTruth(**old)


# --- random scenarios ------------------------------------------------------------------

RANDOM_PLANT_MACHINES: list[dict[str, Any]] = [
    *({"id": f"pump-{i}", "kind": "centrifugal_pump"} for i in range(4)),
    *({"id": f"comp-{i}", "kind": "air_compressor"} for i in range(3)),
    *({"id": f"ex-{i}", "kind": "extruder"} for i in range(3)),
    {"id": "cv-0", "kind": "conveyor_drive", "faults": [{"type": "bearing_wear", "start": "1h", "failure": "3h"}]},
]


def test_random_scenarios_are_deterministic_with_the_seed_and_fit_the_machines() -> None:
    plant = _plant(RANDOM_PLANT_MACHINES)

    first = random_scenarios(plant, 7, 4 * 3600, machine_faults=5, sensor_faults=6)

    assert first == random_scenarios(plant, 7, 4 * 3600, machine_faults=5, sensor_faults=6)
    assert first != random_scenarios(plant, 8, 4 * 3600, machine_faults=5, sensor_faults=6)
    kinds = {m.path: m.kind for m in plant.machines()}
    specs = [(kinds[path], spec) for path, specs in first.items() for spec in specs]
    machine = [(k, s) for k, s in specs if s["type"] in FAULT_TYPES]
    sensor = [(k, s) for k, s in specs if s["type"] in SENSOR_FAULT_TYPES]
    assert len(machine) == 5 and len(sensor) == 6
    assert all(not FAULT_TYPES[s["type"]].kinds or k in FAULT_TYPES[s["type"]].kinds for k, s in machine)
    assert all(s["signal"] in KINDS[k].signals and SIGNALS[s["signal"]].kind == "gauge" for k, s in sensor)
    # One machine fault per machine; the conveyor already has one in the plant file.
    assert len({path for path, specs in first.items() if any(s["type"] in FAULT_TYPES for s in specs)}) == 5
    assert all(s["type"] not in FAULT_TYPES for p, ss in first.items() if p.machine == "cv-0" for s in ss)


def test_the_plant_file_asks_for_random_faults_and_every_site_gets_the_same() -> None:
    plant = _plant(RANDOM_PLANT_MACHINES, random_faults={"machine": 3, "sensor": 2, "within": "3h"})

    truth = Fleet(plant, seed=11, start_ms=T0).ground_truth()
    again = Fleet(plant, seed=11, start_ms=T0).ground_truth()
    other = Fleet(plant, seed=12, start_ms=T0).ground_truth()
    pinned = dataclasses.replace(plant, random_faults={**plant.random_faults, "seed": 99})

    assert truth == again != other
    assert [g.category for g in truth].count("machine") == 1 + 3  # the plant file's own and three drawn
    assert [g.category for g in truth].count("sensor") == 2
    assert all(g.onset_ms < T0 + 3 * 3600_000 for g in truth)
    # An explicit seed in the plant file wins over the run's seed.
    assert Fleet(pinned, seed=11, start_ms=T0).ground_truth() == Fleet(pinned, seed=12, start_ms=T0).ground_truth()
    with pytest.raises(PlantError, match=r"test-plant: random_faults: unknown keys count"):
        Fleet(dataclasses.replace(plant, random_faults={"count": 3}), start_ms=T0)
    with pytest.raises(PlantError, match=r"random_faults: unknown machine fault type 'rust'"):
        Fleet(dataclasses.replace(plant, random_faults={"machine": 1, "machine_types": ["rust"]}), start_ms=T0)
    with pytest.raises(PlantError, match=r"'random_faults' has the wrong type"):
        _plant([], random_faults=[1])


def test_a_random_scenario_plays_like_a_written_one() -> None:
    plant = _plant(RANDOM_PLANT_MACHINES, random_faults={"machine": 2, "sensor": 2, "seed": 5})
    drawn = random_scenarios(plant, 5, 7200, machine_faults=2, sensor_faults=2)
    written = parse_plant(
        {
            "sites": [
                {
                    "id": "uz-syrdarya",
                    "utc_offset_h": 5,
                    "ambient": {"mean_c": 24, "daily_swing_c": 14},
                    "lines": [
                        {
                            "id": "line",
                            "tenant": "tenant",
                            "machines": [
                                {**m, "faults": [*m.get("faults", []), *drawn.get(p.path, [])]}
                                for m, p in zip(RANDOM_PLANT_MACHINES, plant.machines(), strict=True)
                            ],
                        }
                    ],
                }
            ]
        },
        "test-plant",
    )

    assert _run(plant, minutes=60, seed=1) == _run(written, minutes=60, seed=1)


# --- the extruder ----------------------------------------------------------------------

EXTRUDER_SEED = 23  # every extruder stops in the 8 hours; two of them change product


@pytest.fixture(scope="module")
def extruder_run() -> dict[str, Samples]:
    machines: list[dict[str, Any]] = [
        {"id": "ex-1", "kind": "extruder"},
        {"id": "ex-2", "kind": "extruder", "params": {"changeover_share": 1.0}},
        {"id": "ex-3", "kind": "extruder", "params": {"rated_kw": 55, "screw_rpm": 60, "barrel_c": 185}},
    ]
    return _run(_plant(machines), minutes=8 * 60, seed=EXTRUDER_SEED)


def test_the_extruder_run_covers_stops_and_changeovers(extruder_run: dict[str, Samples]) -> None:
    states = {machine_id: {v["state"] for _, v in samples} for machine_id, samples in extruder_run.items()}

    assert states == {
        "ex-1": {"running", "changeover"},
        "ex-2": {"running", "changeover"},
        "ex-3": {"running", "idle"},
    }


def test_extruder_counters_never_decrease_and_energy_integrates_power(extruder_run: dict[str, Samples]) -> None:
    for machine_id, samples in extruder_run.items():
        for name in ("energy", "count_good", "count_scrap"):
            series = _series(samples, name)
            assert all(b >= a for a, b in itertools.pairwise(series)), (machine_id, name)
            assert series[-1] > series[0], (machine_id, name)
        integral_kwh = _series(samples, "power")[1:].sum() * 5 / 3600
        energy = _series(samples, "energy")
        assert energy[-1] - energy[0] == pytest.approx(integral_kwh, rel=0.01), machine_id


def test_extruder_scrap_follows_restarts(extruder_run: dict[str, Samples]) -> None:
    samples = extruder_run["ex-2"]
    states = [v["state"] for _, v in samples]
    restart = next(i for i in range(1, len(states)) if states[i - 1] == "changeover" and states[i] == "running")
    scrap, good = _series(samples, "count_scrap"), _series(samples, "count_good")

    # The first ten minutes after a product change are scrap, then good product again.
    assert scrap[restart + 110] - scrap[restart] > 10 and good[restart + 110] == good[restart]
    later = slice(restart + 130, restart + 130 + 12 * 60)
    assert good[later][-1] - good[later][0] > 50 * (scrap[later][-1] - scrap[later][0])


def test_extruder_current_rises_with_load_and_heaters_add_to_power(extruder_run: dict[str, Samples]) -> None:
    for machine_id, samples in extruder_run.items():
        running = [(ts, v) for ts, v in samples if v["state"] == "running"]
        load, current = _series(running, "load"), _series(running, "motor_current")
        assert np.corrcoef(load, current)[0, 1] > 0.95, machine_id
        stopped = [(ts, v) for ts, v in samples if v["state"] != "running"]
        assert all(v["motor_current"] == 0.0 and v["speed"] == 0.0 for _, v in stopped), machine_id
        # Stopped, the heaters keep the barrel hot: power without current.
        assert _series(stopped, "power").mean() > 3.0, machine_id
        # Running, power is the drive's plus the heaters'.
        drive_kw = _series(running, "load") / 100 * (55 if machine_id == "ex-3" else 90)
        assert np.all(_series(running, "power") >= drive_kw - 0.1), machine_id


def test_extruder_barrel_holds_its_set_point_while_running(extruder_run: dict[str, Samples]) -> None:
    for machine_id, samples in extruder_run.items():
        set_point = 185 if machine_id == "ex-3" else 200
        running = [(ts, v) for ts, v in samples if v["state"] == "running"]
        barrel = _series(running, "barrel_temp")
        assert np.all(np.abs(barrel - set_point) < 8 + 1.5), machine_id  # products differ by up to 8 K
        for name in ("barrel_temp", "motor_temp"):
            assert np.all(_series(running, name) > _series(running, "ambient_temp")), (machine_id, name)
        assert np.all(_series(running, "melt_pressure") > 100), machine_id
        stopped = [v for _, v in samples if v["state"] != "running"]
        assert min(float(v["melt_pressure"]) for v in stopped) < 20, machine_id  # the melt relaxes


def test_extruder_readings_pass_validation(extruder_run: dict[str, Samples]) -> None:
    machines = [{"id": machine_id, "kind": "extruder"} for machine_id in extruder_run]
    plant = _plant(machines)

    for machine_id, rejected in _rejections(plant, extruder_run).items():
        assert rejected == [], (machine_id, rejected[:3])
    assert all(set(v) == set(KINDS["extruder"].signals) for s in extruder_run.values() for _, v in s)
