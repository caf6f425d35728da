"""The plant simulators: deterministic, physically sane, faults with their signatures and
their ground truth, and a backfill that writes what it says it wrote."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import defaultdict

import numpy as np
import pytest

from birlik.influx import InfluxClient
from birlik.payload import Value, decode_telemetry, encode_telemetry
from birlik.plant import Machine, Plant, load_plant, parse_plant
from birlik.signals import SIGNALS
from simulators.backfill import backfill
from simulators.faults import BearingWear, CoolingFailure
from simulators.fleet import Fleet
from simulators.machines import KINDS
from simulators.machines.base import current_from_power

T0 = 1_700_000_000_000  # a multiple of the 5 s sample interval
MIN = 60_000
Samples = list[tuple[int, dict[str, Value]]]


@pytest.fixture(scope="module")
def plant() -> Plant:
    return load_plant()


def _run(plant: Plant, *, minutes: float, seed: int = 1, site: str | None = None) -> dict[str, Samples]:
    """Every machine's samples, by machine id."""
    fleet = Fleet(plant, seed=seed, start_ms=T0, site=site)
    out: dict[str, Samples] = defaultdict(list)
    for machine, ts, values in fleet.advance(T0 + round(minutes * MIN)):
        out[machine.id].append((ts, values))
    return out


def _only_line(plant: Plant, site_id: str, line_id: str) -> Plant:
    site = plant.site(site_id)
    [line] = [ln for ln in site.lines if ln.id == line_id]
    return dataclasses.replace(plant, sites=(dataclasses.replace(site, lines=(line,)),))


def _without_faults(plant: Plant) -> Plant:
    """The same plant with every machine healthy: the twin a faulty run is compared with."""
    return dataclasses.replace(
        plant,
        sites=tuple(
            dataclasses.replace(
                site,
                lines=tuple(
                    dataclasses.replace(line, machines=tuple(dataclasses.replace(m, faults=()) for m in line.machines))
                    for line in site.lines
                ),
            )
            for site in plant.sites
        ),
    )


# --- determinism ----------------------------------------------------------------------


def test_same_seed_and_start_give_identical_readings(plant: Plant) -> None:
    first = _run(plant, minutes=10, seed=7, site="uz-syrdarya")
    again = _run(plant, minutes=10, seed=7, site="uz-syrdarya")
    other = _run(plant, minutes=10, seed=8, site="uz-syrdarya")

    assert first == again
    assert first.keys() == other.keys()
    for machine_id in first:
        assert first[machine_id] != other[machine_id], machine_id


def test_a_machine_does_not_depend_on_which_others_are_simulated(plant: Plant) -> None:
    whole = _run(plant, minutes=5, seed=3)
    one_line = _run(_only_line(plant, "uz-syrdarya", "juice-1"), minutes=5, seed=3)

    assert one_line["pump-302"] == whole["pump-302"]


def test_fleet_aligns_start_to_the_sample_interval(plant: Plant) -> None:
    fleet = Fleet(plant, seed=1, start_ms=T0 + 2_345, site="kz-turkestan")

    timestamps = sorted({ts for _, ts, _ in fleet.advance(T0 + 60_000)})

    assert fleet.start_ms == T0
    assert timestamps == list(range(T0, T0 + 60_001, 5_000))
    assert list(fleet.advance(T0 + 64_999)) == []  # nothing new until the next tick
    assert {ts for _, ts, _ in fleet.advance(T0 + 65_000)} == {T0 + 65_000}


# --- physical sanity ------------------------------------------------------------------

# One machine of each kind, at a seed where the pump and a conveyor stop and start again.
SANITY_SEED = 31
SANITY_HOURS = 4


@pytest.fixture(scope="module")
def sanity_plant() -> Plant:
    machines = [
        {"id": "pump", "kind": "centrifugal_pump"},
        {"id": "pump-big", "kind": "centrifugal_pump", "params": {"rated_kw": 45, "bep_flow_m3h": 220}},
        {"id": "comp", "kind": "air_compressor"},
        {"id": "conv", "kind": "conveyor_drive"},
        {"id": "conv-b", "kind": "conveyor_drive"},
        {"id": "spin", "kind": "spinning_frame"},
    ]
    data = {
        "sample_interval": "5s",
        "sites": [
            {
                "id": "kz-turkestan",
                "utc_offset_h": 5,
                "ambient": {"mean_c": 19, "daily_swing_c": 14},
                "lines": [{"id": "line", "tenant": "tenant", "machines": machines}],
            }
        ],
    }
    return parse_plant(data, "sanity")


@pytest.fixture(scope="module")
def sanity_run(sanity_plant: Plant) -> dict[str, Samples]:
    return _run(sanity_plant, minutes=SANITY_HOURS * 60, seed=SANITY_SEED)


def _machines(plant: Plant) -> dict[str, Machine]:
    return {m.id: m for m in plant.machines()}


def test_the_sanity_run_covers_stops_and_changeovers(sanity_run: dict[str, Samples]) -> None:
    states = {machine_id: {v["state"] for _, v in samples} for machine_id, samples in sanity_run.items()}

    assert "changeover" in states["spin"]
    assert sum("idle" in s for s in states.values()) >= 2, states


def test_every_reading_passes_validation(sanity_plant: Plant, sanity_run: dict[str, Samples]) -> None:
    machines = _machines(sanity_plant)
    registry = sanity_plant.registry()
    for machine_id, samples in sanity_run.items():
        machine = machines[machine_id]
        accepted = 0
        for start in range(0, len(samples), 120):  # ten minutes a message, as a gateway batches
            chunk = samples[start : start + 120]
            payload = encode_telemetry(gateway="gw-test", seq=start, samples=chunk, kind=machine.kind)

            telemetry = decode_telemetry(machine.path.topic(), payload, machines=registry, now_ms=chunk[-1][0])

            assert telemetry.rejections == [], (machine_id, telemetry.rejections[:3])
            accepted += telemetry.reading_count
        assert accepted == len(samples) * len(KINDS[machine.kind].signals)
        assert {k for s in samples for k in s[1]} == set(KINDS[machine.kind].signals)


def test_cumulative_signals_never_decrease(sanity_run: dict[str, Samples]) -> None:
    for machine_id, samples in sanity_run.items():
        for name in ("energy", "count_good", "count_scrap"):
            series = [float(v[name]) for _, v in samples if name in v]
            assert all(b >= a for a, b in itertools.pairwise(series)), (machine_id, name)


def test_production_counters_advance(sanity_run: dict[str, Samples]) -> None:
    conveyor = [int(v["count_good"]) for _, v in sanity_run["conv"]]
    spinning = [int(v["count_good"]) for _, v in sanity_run["spin"]]

    assert conveyor[-1] > conveyor[0]
    assert spinning[-1] - spinning[0] >= 1008  # at least one doff in four hours, 1008 spindles


def test_energy_is_the_integral_of_power(sanity_run: dict[str, Samples]) -> None:
    for machine_id, samples in sanity_run.items():
        energy = [float(v["energy"]) for _, v in samples]
        power = [float(v["power"]) for _, v in samples]
        # Each sample's energy includes that sample's interval at its power.
        integral_kwh = sum(power[1:]) * 5 / 3600

        assert energy[-1] - energy[0] == pytest.approx(integral_kwh, rel=0.02), machine_id
        assert integral_kwh > 1.0, machine_id  # the machines did work


def test_motor_current_rises_with_power(sanity_run: dict[str, Samples]) -> None:
    for machine_id, samples in sanity_run.items():
        running = [v for _, v in samples if v["state"] == "running"]
        power = np.array([v["power"] for v in running], dtype=float)
        current = np.array([v["motor_current"] for v in running], dtype=float)

        assert np.corrcoef(power, current)[0, 1] > 0.8, machine_id
        stopped = [v for _, v in samples if v["state"] != "running"]
        assert all(v["motor_current"] == 0.0 and v["power"] == 0.0 for v in stopped), machine_id


def test_current_from_power_is_monotonic_and_plausible() -> None:
    currents = [current_from_power(kw) for kw in (0, 1, 10, 22, 55, 75)]

    assert currents[0] == 0.0
    assert currents == sorted(currents)
    assert current_from_power(22) == pytest.approx(37, abs=1)  # a 22 kW motor at 400 V


def test_temperatures_stay_above_ambient_while_running_and_inside_the_catalogue(
    sanity_run: dict[str, Samples],
) -> None:
    for machine_id, samples in sanity_run.items():
        for _, values in samples:
            for name, value in values.items():
                if not name.endswith("_temp"):
                    continue
                signal = SIGNALS[name]
                assert signal.low <= float(value) <= signal.high, (machine_id, name, value)
                if values["state"] == "running" and name != "ambient_temp":
                    assert float(value) > float(values["ambient_temp"]), (machine_id, name, values)


def test_ambient_follows_the_site_climate(sanity_run: dict[str, Samples]) -> None:
    ambient = [float(v["ambient_temp"]) for _, v in sanity_run["pump"]]

    # Site mean 19 degC with a 14 K daily swing: always within 19 +- 7 (plus noise).
    assert 11.5 < min(ambient) <= max(ambient) < 26.5


# --- faults ---------------------------------------------------------------------------


def _faulty_and_healthy(plant: Plant, site: str, line: str, machine_id: str, minutes: float) -> tuple[Samples, Samples]:
    faulty = _only_line(plant, site, line)
    return (
        _run(faulty, minutes=minutes, seed=5)[machine_id],
        _run(_without_faults(faulty), minutes=minutes, seed=5)[machine_id],
    )


def _window(samples: Samples, start_min: float, end_min: float) -> list[dict[str, Value]]:
    return [v for ts, v in samples if start_min * MIN <= ts - T0 < end_min * MIN]


def _mean(values: list[dict[str, Value]], name: str) -> float:
    return float(np.mean([float(v[name]) for v in values]))


def test_bearing_wear_signature_on_a_pump(plant: Plant) -> None:
    # pump-302: bearing_wear from 12 min, failure at 70 min (central-asia.yaml).
    faulty, healthy = _faulty_and_healthy(plant, "uz-syrdarya", "juice-1", "pump-302", minutes=75)

    # Before the onset the fault does not exist: the twins are identical, noise included.
    assert _window(faulty, 0, 12) == _window(healthy, 0, 12)
    near_failure, twin = _window(faulty, 60, 70), _window(healthy, 60, 70)
    assert {v["state"] for v in near_failure + twin} == {"running"}
    assert _mean(near_failure, "vibration_rms") > _mean(twin, "vibration_rms") + 3.0
    assert _mean(near_failure, "bearing_temp") > _mean(twin, "bearing_temp") + 8.0
    # The bearing, not the winding: the motor temperature is the healthy one.
    assert _mean(near_failure, "motor_temp") == pytest.approx(_mean(twin, "motor_temp"), abs=0.5)
    # At failure the machine trips and stays down.
    after = _window(faulty, 70, 75)
    assert after and all(v["state"] == "fault" and v["power"] == 0.0 for v in after)
    assert {v["state"] for v in _window(healthy, 70, 75)} == {"running"}


def test_cooling_failure_signature_on_a_compressor(plant: Plant) -> None:
    # comp-102: cooling_failure from 40 min, failure at 110 min.
    faulty, healthy = _faulty_and_healthy(plant, "kz-turkestan", "utilities-1", "comp-102", minutes=115)

    assert _window(faulty, 0, 40) == _window(healthy, 0, 40)
    near_failure, twin = _window(faulty, 100, 110), _window(healthy, 100, 110)
    assert {v["state"] for v in near_failure + twin} == {"running"}
    for name in ("motor_temp", "oil_temp", "discharge_temp"):
        assert _mean(near_failure, name) > _mean(twin, name) + 15.0, name
    after = _window(faulty, 110, 115)
    assert after and all(v["state"] == "fault" for v in after)


def test_severity_curves() -> None:
    wear = BearingWear(start_s=600, failure_s=1600)
    cooling = CoolingFailure(start_s=600, failure_s=1600)

    for fault in (wear, cooling):
        assert fault.severity(0) == fault.severity(600) == 0.0
        assert fault.severity(1600) == pytest.approx(1.0)
        assert fault.severity(5000) == 1.0
    # Wear starts slowly (x^2); a failing cooler shows most of its effect early.
    assert wear.severity(1100) == pytest.approx(0.25)
    assert cooling.severity(1100) > 0.75


def test_ground_truth_matches_the_plant_file(plant: Plant) -> None:
    fleet = Fleet(plant, seed=1, start_ms=T0 + 1_000)

    truth = {t.machine: t for t in fleet.ground_truth()}

    pump = truth["sirdaryo-agro/uz-syrdarya/juice-1/pump-302"]
    comp = truth["ontustik-textile/kz-turkestan/utilities-1/comp-102"]
    assert len(truth) == 2
    assert (pump.kind, pump.fault, pump.onset_ms, pump.failure_ms) == (
        "centrifugal_pump",
        "bearing_wear",
        T0 + 12 * MIN,
        T0 + 70 * MIN,
    )
    assert (comp.kind, comp.fault, comp.onset_ms, comp.failure_ms) == (
        "air_compressor",
        "cooling_failure",
        T0 + 40 * MIN,
        T0 + 110 * MIN,
    )
    for t in truth.values():
        assert t.onset_ms < t.detectable_ms < t.failure_ms
    # Detectable: the severity reaches 0.1. Wear ~ x^2; cooling ~ (1 - e^-3x) / (1 - e^-3).
    assert pump.detectable_ms == pytest.approx(T0 + 12 * MIN + math.sqrt(0.1) * 58 * MIN, abs=2)
    x = -math.log(1 - 0.1 * (1 - math.exp(-3))) / 3
    assert comp.detectable_ms == pytest.approx(T0 + 40 * MIN + x * 70 * MIN, abs=2)
    assert pump.as_dict()["fault"] == "bearing_wear"


# --- backfill -------------------------------------------------------------------------


def test_backfill_writes_exactly_the_readings_it_reports(plant: Plant, influx: InfluxClient) -> None:
    written = backfill(plant, influx, start_ms=T0, end_ms=T0 + 30 * MIN, batch_points=2000)

    [series] = influx.query("SELECT COUNT(*) FROM telemetry")
    stored = sum(int(v) for v in series.values[0][1:] if v is not None)
    samples_per_machine = 30 * 12 + 1  # every 5 s, both ends included
    expected = sum(len(KINDS[m.kind].signals) for m in plant.machines()) * samples_per_machine
    assert written == expected
    assert stored == written
    [machines] = influx.query('SHOW TAG VALUES FROM telemetry WITH KEY = "machine"')
    assert len(machines.values) == len(list(plant.machines()))
