"""The zero check: condition sensors judged while the machine stands still
(:mod:`analytics.standstill`), on simulated machines that follow shift schedules."""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

import pytest

from analytics.quality import DataQualityMonitor, SensorIssue
from analytics.standstill import StandstillCheck
from birlik.plant import parse_plant
from simulators.fleet import Fleet
from tests.test_quality_batch import in_batches, one_by_one

START_MS = 1_772_409_600_000  # Monday 2 March 2026, 00:00 UTC: the machines stand until the first shift
HOUR_MS = 3_600_000
#: Two shifts Monday to Friday: every night a stop of 8 hours.
TWO_SHIFTS = {"shifts": 2, "days": 5, "first_shift_h": 6, "shift_load": [1.0, 0.8], "demand_spread": 0.1}
#: Three shifts Monday to Saturday: a stop on Sundays only.
THREE_SHIFTS = {"shifts": 3, "days": 6, "first_shift_h": 6, "shift_load": [1.0], "demand_spread": 0.05}


def fleet_samples(machines: list[dict[str, Any]], days: float, seed: int = 3) -> list[tuple[str, int, dict[str, Any]]]:
    """(machine id, time, values) of one line of ``machines`` (plant-file mappings) at one
    site, sampled every minute from :data:`START_MS` for ``days``."""
    plant = parse_plant(
        {
            "sample_interval": "60s",
            "sites": [
                {
                    "id": "s",
                    "ambient": {"mean_c": 14, "annual_swing_c": 28, "daily_swing_c": 15},
                    "lines": [{"id": "l", "tenant": "t", "machines": machines}],
                }
            ],
        }
    )
    fleet = Fleet(plant, seed=seed, start_ms=START_MS)
    return [(m.id, ts, v) for m, ts, v in fleet.advance(START_MS + int(days * 24 * HOUR_MS))]


@cache
def _samples(kind: str, schedule: str, faults: str, days: float) -> list[tuple[int, dict[str, Any]]]:
    machine = {
        "id": "m-1",
        "kind": kind,
        "faults": json.loads(faults),
        "params": {"schedule": TWO_SHIFTS if schedule == "two" else THREE_SHIFTS},
    }
    return [(ts, v) for _, ts, v in fleet_samples([machine], days)]


Samples = list[tuple[int, dict[str, Any]]]


def samples(kind: str, schedule: str, faults: list[dict[str, Any]], days: float = 7) -> Samples:
    return _samples(kind, schedule, json.dumps(faults), days)  # a string: hashable, for the cache


def issues(data: list[tuple[int, dict[str, Any]]]) -> list[SensorIssue]:
    mon = DataQualityMonitor()
    out = [i for ts, v in data for i in mon.update(ts, v)]
    assert mon.internal_errors == 0
    return out


def hours(issue: SensorIssue) -> float:
    return (issue.ts_ms - START_MS) / HOUR_MS


@pytest.mark.parametrize(
    ("kind", "schedule", "signal", "amount", "start_h", "end_h"),
    [
        # Upward drifts of condition signals: while running they look like a machine fault.
        ("centrifugal_pump", "two", "vibration_rms", 2.0, 40, 88),
        ("centrifugal_pump", "two", "bearing_temp", 8.0, 40, 88),
        # An ambient sensor reading low: while running it looks like the machine running hot.
        ("spinning_frame", "three", "ambient_temp", -8.0, 100, 160),
    ],
)
def test_an_offset_seen_at_standstill_is_the_sensor(
    kind: str, schedule: str, signal: str, amount: float, start_h: float, end_h: float
) -> None:
    fault = {"type": "drift", "signal": signal, "start": f"{start_h}h", "duration": f"{end_h - start_h}h"}
    got = issues(samples(kind, schedule, [dict(fault, amount=amount)]))
    offsets = [i for i in got if i.kind == "offset"]
    assert [(i.signal, i.state) for i in offsets] == [(signal, "raised"), (signal, "cleared")], got
    raised, cleared = offsets
    assert start_h < hours(raised) < end_h  # reported while the sensor is off
    assert "standstill" in raised.detail and "offset" in raised.detail
    assert end_h <= hours(cleared) < end_h + 24  # cleared at the first stop after the repair
    # Nothing else is blamed on the sensors.
    assert {i.signal for i in got} <= {signal}


@pytest.mark.parametrize(
    ("kind", "schedule"),
    [
        ("centrifugal_pump", "two"),
        ("conveyor_drive", "two"),
        ("spinning_frame", "three"),
        ("air_compressor", "two"),
        ("extruder", "three"),
    ],
)
def test_healthy_machines_with_stops_have_no_offsets(kind: str, schedule: str) -> None:
    assert [i for i in issues(samples(kind, schedule, [], days=14)) if i.kind == "offset"] == []


@pytest.mark.parametrize("fault", ["bearing_wear", "cooling_failure", "imbalance"])
def test_machine_faults_are_not_offsets(fault: str) -> None:
    # A fault's heat and vibration come from running: a machine at standstill reads like a healthy one.
    spec = [{"type": fault, "start": "30h", "failure": "200h", "severity": 0.9, "trips": False}]
    got = issues(samples("centrifugal_pump", "two", spec, days=9))
    assert [i for i in got if i.kind == "offset"] == []


def test_a_stop_that_began_before_the_data_is_not_judged() -> None:
    # The data start at midnight with the machine still warm from the day before: its stop's
    # length is unknown, so its temperatures are not taken as settled, and nothing is learned
    # from them.
    data = samples("centrifugal_pump", "two", [], days=2)
    mon = DataQualityMonitor()
    for ts, v in data:
        mon.update(ts, v)
    check = next(c for c in mon.checks if isinstance(c, StandstillCheck))
    assert check._temp_base == {}
    assert set(check._temp_tol) == {"bearing_temp", "motor_temp", "ambient_temp"}
    assert set(check._vib_limit) == {"vibration_rms"}


def test_the_batch_form_says_what_samples_say_across_stops() -> None:
    fault = {"type": "drift", "signal": "bearing_temp", "start": "40h", "duration": "48h", "amount": 8.0}
    data = samples("centrifugal_pump", "two", [fault])
    learned = DataQualityMonitor()
    i = 0
    while learned.learning:
        learned.update(*data[i])
        i += 1
    a, b = learned, copy.deepcopy(learned)
    rest = data[i:]
    by_sample, by_batch = one_by_one(a, rest), in_batches(b, rest, seed=5)
    assert by_sample == by_batch
    assert any(k[2] == "offset" for k in by_sample)
    assert b.batched_samples > len(rest) // 3  # nights and weekends too, while nothing is off


def test_a_standstill_seen_while_learning_is_the_machine_s_own_baseline() -> None:
    # A bearing thermocouple sitting in a warm spot reads 5 K above ambient at standstill from
    # the start. A learning period that includes a night's stop learns that as this machine's
    # standstill offset; one that saw no settled stop judges it against physics (ambient).
    data = [(ts, dict(v, bearing_temp=v["bearing_temp"] + 5.0)) for ts, v in samples("centrifugal_pump", "two", [])]
    with_night = DataQualityMonitor(learn_running_s=20 * 3600.0, max_learn_samples=10_000)
    got = [i for ts, v in data for i in with_night.update(ts, v)]
    check = next(c for c in with_night.checks if isinstance(c, StandstillCheck))
    assert check._temp_base["bearing_temp"] == pytest.approx(5.4, abs=1.0)
    assert [i for i in got if i.kind == "offset"] == []
    assert [(i.signal, i.state) for i in issues(data) if i.kind == "offset"][:1] == [("bearing_temp", "raised")]
