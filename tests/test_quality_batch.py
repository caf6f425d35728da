"""The data-quality monitor's batch form (``update_many``) says exactly what ``update`` says
sample by sample: on simulated machines with sensor faults, machine faults and stops, on
synthetic faults of every kind, and on any input."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.quality import DataQualityMonitor, SensorIssue, _ewma, _ewma_timed
from tests.test_quality import LEARN, STEP_MS, simulated, synthetic, weird_values, with_fault

Key = tuple[int, str, str, str, int, str]


def key(index: int, issue: SensorIssue) -> Key:
    return (index, issue.signal, issue.kind, issue.state, issue.started_ms, issue.detail)


def one_by_one(mon: DataQualityMonitor, samples: list[tuple[int, dict[str, Any]]]) -> list[Key]:
    return [key(i, issue) for i, (ts, v) in enumerate(samples) for issue in mon.update(ts, v)]


def in_batches(mon: DataQualityMonitor, samples: list[tuple[int, dict[str, Any]]], seed: int) -> list[Key]:
    rng = np.random.default_rng(seed)
    out: list[Key] = []
    i = 0
    while i < len(samples):
        n = int(rng.choice([1, 3, 10, 30, 60, 200, 500]))
        chunk = samples[i : i + n]
        for j, issues in mon.update_many([t for t, _ in chunk], [v for _, v in chunk]):
            out.extend(key(i + j, issue) for issue in issues)
        i += n
    return out


def both(
    learning: list[tuple[int, dict[str, Any]]], rest: list[tuple[int, dict[str, Any]]], learn: int
) -> tuple[list[Key], list[Key], DataQualityMonitor, DataQualityMonitor]:
    mon = DataQualityMonitor(learn_running_samples=learn)
    for ts, v in learning:
        mon.update(ts, v)
    a, b = mon, copy.deepcopy(mon)
    return one_by_one(a, rest), in_batches(b, rest, seed=len(rest)), a, b


@pytest.mark.parametrize(
    ("kind", "faults"),
    [
        ("centrifugal_pump", [{"type": "stuck", "signal": "bearing_temp", "start": "5h", "duration": "1h"}]),
        (
            "centrifugal_pump",
            [{"type": "drift", "signal": "motor_current", "start": "5h", "duration": "2h", "amount": -8.0}],
        ),
        (
            "centrifugal_pump",
            [{"type": "spikes", "signal": "vibration_rms", "start": "5h", "duration": "2h", "amount": 6.0, "rate": 20}],
        ),
        ("centrifugal_pump", [{"type": "dropout", "signal": "flow", "start": "5h", "duration": "30m"}]),
        (
            "centrifugal_pump",
            [{"type": "scaling", "signal": "discharge_pressure", "start": "5h", "duration": "1h", "factor": 1.6}],
        ),
        ("centrifugal_pump", [{"type": "bearing_wear", "start": "270m", "failure": "9h", "trips": False}]),
        ("air_compressor", []),  # loads and unloads: idle samples between running ones
        ("extruder", []),
    ],
)
def test_batches_say_what_samples_say_on_simulated_machines(kind: str, faults: list[dict[str, Any]]) -> None:
    samples = simulated(faults, hours=8.0, kind=kind)
    learn = 4 * 720
    a, b, mon_a, mon_b = both(samples[: learn + 200], samples[learn + 200 :], learn)
    assert a == b
    assert mon_a.faulty_signals == mon_b.faulty_signals
    assert [key(0, i) for i in mon_a.open_issues] == [key(0, i) for i in mon_b.open_issues]
    sensor_fault = bool(faults) and faults[0]["type"] != "bearing_wear"
    # The column form did the work (while a sensor misbehaves, batches go sample by sample).
    assert mon_b.batched_samples > (0 if sensor_fault else 0.5 * (len(samples) - learn))
    if sensor_fault:
        assert any(k[3] == "raised" for k in a), "the sensor fault is found"


@pytest.mark.parametrize(
    ("fault", "signal", "kw"),
    [
        ("stuck", "bearing_temp", {}),
        ("dropout", "power", {}),
        ("nan", "load", {}),
        ("range", "vibration_rms", {"value": 1e6}),
        ("spikes", "vibration_rms", {"amount": 3.0}),
        ("drift", "motor_current", {"amount": -12.0}),
        ("scaling", "power", {"factor": 1.5}),
    ],
)
def test_batches_say_what_samples_say_on_synthetic_faults(fault: str, signal: str, kw: dict[str, float]) -> None:
    samples = list(with_fault(fault, signal, **kw))
    a, b, _, _ = both(samples[: LEARN + 100], samples[LEARN + 100 :], LEARN)
    assert a == b
    assert any(k[3] == "raised" for k in a)


def test_ewma_batch_forms_match_the_step_by_step_updates() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 2.0, 3000)
    for alpha in (1 / 720, 1 / 120, 0.01, 0.5, 1.0):
        e, expect = 3.0, []
        for v in x:
            e += alpha * (v - e)
            expect.append(e)
        assert np.allclose(_ewma(3.0, x, alpha), expect, rtol=1e-9, atol=1e-9)
        assert np.allclose(_ewma(np.array([3.0, 3.0]), np.column_stack((x, x)), alpha)[:, 1], expect, rtol=1e-9)
    dt = rng.choice([1000.0, 5000.0, 5003.0, 60_000.0], 3000)
    for tau in (300.0, 900.0, 2700.0):
        e, expect = 3.0, []
        for v, d in zip(x, dt, strict=True):
            e += (1.0 - np.exp(-d / 1000 / tau)) * (v - e)
            expect.append(e)
        got = _ewma_timed(np.array([3.0, 3.0]), np.column_stack((x, x)), np.cumsum(dt) / 1000, tau)
        assert np.allclose(got[:, 0], expect, rtol=1e-9, atol=1e-9)
        assert np.allclose(got[:, 1], expect, rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def trained() -> DataQualityMonitor:
    mon = DataQualityMonitor(learn_running_samples=LEARN)
    for ts, v in synthetic(LEARN + 50):
        mon.update(ts, v)
    return mon


plain = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=4),
        st.dictionaries(st.sampled_from(["power", "load", "state", "flow"]), weird_values, max_size=4),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plain, st.integers(min_value=0, max_value=2**31))
def test_batches_say_what_samples_say_on_any_input(
    trained: DataQualityMonitor, seq: list[tuple[int, dict[str, Any]]], seed: int
) -> None:
    # Healthy samples with wild ones mixed in: repeated and older times, any values.
    healthy = list(synthetic(LEARN + 50 + len(seq) * 2))[LEARN + 50 :]
    samples: list[tuple[int, dict[str, Any]]] = []
    for k, (step, wild) in enumerate(seq):
        ts, v = healthy[k]
        samples.append((ts - step * STEP_MS, {**v, **wild}))
    a_mon, b_mon = copy.deepcopy(trained), copy.deepcopy(trained)
    assert one_by_one(a_mon, samples) == in_batches(b_mon, samples, seed)
    assert a_mon.faulty_signals == b_mon.faulty_signals
    assert a_mon.internal_errors == b_mon.internal_errors == 0
