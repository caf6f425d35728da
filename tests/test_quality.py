"""Data-quality monitor: each check on synthetic data and on simulator output, and "any
input, no crash"."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.quality import DataQualityMonitor, SensorIssue
from birlik.plant import parse_plant
from birlik.signals import SIGNALS
from simulators.fleet import Fleet

START_MS = 1_763_856_000_000
STEP_MS = 5_000
LEARN = 1_000  # running samples of learning in the synthetic tests (~83 min at 5 s)


def synthetic(n: int, seed: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    """A healthy motor-driven machine: load wanders, power and current follow it, the
    temperatures are a lagged rise over a slowly changing ambient, vibration grows with load."""
    rng = np.random.default_rng(seed)
    load = 0.7
    bearing = motor = 0.0
    for i in range(n):
        load = min(1.0, max(0.3, load + 0.02 * (0.7 - load) + rng.normal(0, 0.01)))
        ambient = 20 + 3 * math.sin(i / 2000)
        bearing += (ambient + 25 * load - bearing) / 240 if i else ambient + 25 * load - bearing
        motor += (ambient + 40 * load - motor) / 360 if i else ambient + 40 * load - motor
        power = 30 * load + rng.normal(0, 0.1)
        yield (
            START_MS + i * STEP_MS,
            {
                "state": "running",
                "load": round(100 * load, 1),
                "power": round(power, 3),
                "motor_current": round(power * 1.68 + rng.normal(0, 0.2), 2),
                "vibration_rms": round(1.5 + 0.8 * load + rng.normal(0, 0.05), 3),
                "bearing_temp": round(bearing + rng.normal(0, 0.1), 2),
                "motor_temp": round(motor + rng.normal(0, 0.1), 2),
                "ambient_temp": round(ambient + rng.normal(0, 0.1), 2),
            },
        )


def feed(mon: DataQualityMonitor, samples: Iterator[tuple[int, dict[str, Any]]]) -> list[SensorIssue]:
    out: list[SensorIssue] = []
    for ts, values in samples:
        out.extend(mon.update(ts, values))
    assert mon.internal_errors == 0
    return out


def raised(issues: list[SensorIssue]) -> list[tuple[str, str]]:
    return [(i.signal, i.kind) for i in issues if i.state == "raised"]


def with_fault(
    fault: str, signal: str, n: int = 2200, at: int = 1300, **kw: float
) -> Iterator[tuple[int, dict[str, Any]]]:
    """The synthetic machine with a sensor fault of ``signal`` from sample ``at`` on."""
    stuck: float | None = None
    rng = np.random.default_rng(7)
    for i, (ts, v) in enumerate(synthetic(n)):
        if i >= at:
            if fault == "stuck":
                stuck = v[signal] if stuck is None else stuck
                v[signal] = stuck
            elif fault == "dropout":
                del v[signal]
            elif fault == "nan":
                v[signal] = float("nan")
            elif fault == "range":
                v[signal] = kw["value"]
            elif fault == "spikes" and rng.random() < 0.02:
                v[signal] += kw["amount"]
            elif fault == "drift":
                v[signal] += kw["amount"] * (i - at) / (n - at)
            elif fault == "scaling":
                v[signal] *= kw["factor"]
        yield ts, v


def faulty_run(fault: str, signal: str, n: int = 2200, at: int = 1300, **kw: float) -> list[SensorIssue]:
    return feed(DataQualityMonitor(learn_running_samples=LEARN), with_fault(fault, signal, n, at, **kw))


@pytest.fixture(scope="module")
def trained() -> DataQualityMonitor:
    mon = DataQualityMonitor(learn_running_samples=LEARN)
    feed(mon, synthetic(LEARN + 50))
    assert not mon.learning
    return mon


# --- each check on synthetic data ------------------------------------------------------------


def test_healthy_synthetic_machine_is_silent() -> None:
    assert raised(feed(DataQualityMonitor(learn_running_samples=LEARN), synthetic(3000))) == []


def test_stuck() -> None:
    issues = faulty_run("stuck", "bearing_temp")
    assert ("bearing_temp", "stuck") in raised(issues)
    first = next(i for i in issues if i.kind == "stuck")
    assert "bearing_temp has read exactly" in first.detail and "degC" in first.detail and "min" in first.detail


@pytest.mark.parametrize("how", ["dropout", "nan"])
def test_dropout(how: str) -> None:
    issues = faulty_run(how, "vibration_rms")
    assert raised(issues)[:1] == [("vibration_rms", "dropout")]
    assert "usually every 5 s" in issues[0].detail


def test_out_of_range() -> None:
    issues = faulty_run("range", "motor_temp", value=850.0)
    assert ("motor_temp", "out_of_range") in raised(issues)
    assert "850 degC" in issues[0].detail and "-50 to 300 degC" in issues[0].detail


def test_spikes() -> None:
    issues = faulty_run("spikes", "vibration_rms", amount=3.0)
    assert raised(issues) == [("vibration_rms", "spikes")]
    assert "mm/s" in issues[0].detail


def test_drift_against_partners() -> None:
    issues = faulty_run("drift", "motor_current", amount=-8.0)
    assert raised(issues) == [("motor_current", "drift")]
    assert "lower than" in issues[0].detail and " A " in issues[0].detail


@pytest.mark.parametrize("factor", [1.6, 0.625, 10.0])
def test_scaling(factor: float) -> None:
    issues = faulty_run("scaling", "power", factor=factor)
    kinds = raised(issues)
    assert kinds and kinds[0][0] == "power" and kinds[0][1] in ("scaling", "out_of_range")
    if factor < 5:
        assert kinds == [("power", "scaling")]
        assert f"{factor:.2f} times" in issues[0].detail


def test_machine_fault_raising_related_signals_together_is_not_a_sensor_fault() -> None:
    """Bearing wear: vibration and bearing temperature rise together; nothing is blamed on a sensor."""

    def gen() -> Iterator[tuple[int, dict[str, Any]]]:
        n, at = 3000, 1300
        for i, (ts, v) in enumerate(synthetic(n)):
            if i >= at:
                x = (i - at) / (n - at)
                v["vibration_rms"] += 4 * x * x
                v["bearing_temp"] += 25 * x * x
            yield ts, v

    assert raised(feed(DataQualityMonitor(learn_running_samples=LEARN), gen())) == []


def test_faulty_signals_and_clearing() -> None:
    mon = DataQualityMonitor(learn_running_samples=LEARN)
    samples = list(synthetic(1600))
    feed(mon, iter(samples[:1300]))
    for ts, v in samples[1300:1320]:
        v.pop("motor_temp")
        mon.update(ts, v)
    assert mon.faulty_signals == {"motor_temp"}
    cleared = feed(mon, iter(samples[1320:]))
    assert [(i.signal, i.kind, i.state) for i in cleared] == [("motor_temp", "dropout", "cleared")]
    assert mon.faulty_signals == frozenset()


def test_stopped_machine_is_not_called_stuck() -> None:
    def gen() -> Iterator[tuple[int, dict[str, Any]]]:
        for i, (ts, v) in enumerate(synthetic(2500)):
            if i >= 1300:
                v = {**v, "state": "stopped", "load": 0.0, "power": 0.0, "motor_current": 0.0, "vibration_rms": 0.0}
            yield ts, v

    assert raised(feed(DataQualityMonitor(learn_running_samples=LEARN), gen())) == []


# --- on simulator output -------------------------------------------------------------------


def simulated(faults: list[dict[str, Any]], hours: float, kind: str) -> list[tuple[int, dict[str, Any]]]:
    """One simulated machine of ``kind`` with ``faults``, 5-second samples for ``hours``."""
    plant = parse_plant(
        {
            "sample_interval": "5s",
            "sites": [
                {
                    "id": "test",
                    "ambient": {"mean_c": 14, "annual_swing_c": 28, "daily_swing_c": 15},
                    "lines": [{"id": "l", "tenant": "t", "machines": [{"id": "m-1", "kind": kind, "faults": faults}]}],
                }
            ],
        }
    )
    fleet = Fleet(plant, seed=3, start_ms=START_MS)
    return [(ts, values) for _, ts, values in fleet.advance(START_MS + int(hours * 3_600_000))]


def simulate(faults: list[dict[str, Any]], hours: float = 8.5, kind: str = "centrifugal_pump") -> list[SensorIssue]:
    mon = DataQualityMonitor(learn_running_samples=4 * 720)
    out: list[SensorIssue] = []
    for ts, values in simulated(faults, hours, kind):
        out.extend(mon.update(ts, values))
    assert mon.internal_errors == 0
    return out


@pytest.mark.parametrize(
    ("fault", "signal"),
    [
        ({"type": "stuck", "duration": "1h"}, "bearing_temp"),
        ({"type": "drift", "duration": "2h", "amount": -8.0}, "motor_current"),
        ({"type": "spikes", "duration": "2h", "amount": 6.0, "rate": 20}, "vibration_rms"),
        ({"type": "dropout", "duration": "30m"}, "flow"),
        ({"type": "scaling", "duration": "1h", "factor": 1.6}, "discharge_pressure"),
    ],
)
def test_simulated_sensor_fault_is_reported_as_sensor_fault(fault: dict[str, Any], signal: str) -> None:
    issues = simulate([{**fault, "signal": signal, "start": "5h"}], hours=7.0)
    assert raised(issues)[:1] == [(signal, fault["type"])]
    assert issues[0].started_ms >= START_MS + 5 * 3_600_000


def test_simulated_bearing_wear_is_not_called_a_sensor_fault() -> None:
    assert raised(simulate([{"type": "bearing_wear", "start": "270m", "failure": "9h", "trips": False}])) == []


def test_simulated_healthy_machine_is_silent() -> None:
    assert raised(simulate([], hours=10, kind="air_compressor")) == []


# --- any input, no crash ----------------------------------------------------------------------

names = st.sampled_from([*SIGNALS, "x", "", "load "])
weird_values = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.text(max_size=5),
    st.booleans(),
    st.sampled_from(["running", "idle", "stopped", "fault"]),
)
samples = st.lists(
    st.tuples(
        st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.just(START_MS + 1_000_000_000)),
        st.dictionaries(names, weird_values, max_size=12),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(samples)
def test_update_never_raises(trained: DataQualityMonitor, seq: list[tuple[int, dict[str, Any]]]) -> None:
    for mon in (copy.deepcopy(trained), DataQualityMonitor(learn_running_samples=3)):
        ts0 = START_MS + 10_000_000
        for k, (ts, values) in enumerate(seq):
            # Mix valid-looking recent samples with wild ones (ages, repeats, any values).
            stamp = ts0 + k * STEP_MS if k % 3 else ts
            out = mon.update(stamp, values)
            assert isinstance(out, list) and all(isinstance(i, SensorIssue) for i in out)
            assert isinstance(mon.faulty_signals, frozenset)
        mon.update(ts0, {})  # a repeated / older time
        assert mon.internal_errors == 0


@pytest.mark.parametrize(("step_s", "samples"), [(1, 4320), (5, 4320), (60, 800)])
def test_learning_lasts_six_running_hours_and_enough_samples_whatever_the_interval(step_s: int, samples: int) -> None:
    mon = DataQualityMonitor()
    ts = START_MS
    fed = 0
    for i, (_, values) in enumerate(synthetic(2 * samples)):
        stopped = i % 100 < 20  # a fifth of the time stopped: not running time
        mon.update(ts, {**values, "state": "stopped"} if stopped else values)
        ts += step_s * 1000
        fed += not stopped
        if not mon.learning:
            break
    # 4,320 samples at 1-second samples (1.2 running hours), 6 running hours at 5-second ones
    # (time between running samples: a restart's first interval is not running time), and
    # at 1-minute ones the 800 samples the checks need.
    assert not mon.learning
    assert samples <= fed <= 1.02 * samples + 1
