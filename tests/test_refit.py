"""The refit policy (analytics.refit_every_h): a model follows a healthy machine's normal
and never learns a developing fault as normal."""

from __future__ import annotations

import dataclasses

import numpy as np

from analytics.detectors import DETECTORS
from analytics.refit import Refit
from analytics.worker import AnalyticsWorker
from birlik.config import load_config
from birlik.payload import Sample, Telemetry
from birlik.topics import MachinePath

START_MS = 1_763_856_000_000
STEP_MS = 60_000
PATH = MachinePath("t", "s", "l", "pump-1")


def run(vibration: list[float], *, every_h: float, max_drift: float = 0.33) -> tuple[AnalyticsWorker, list[bool]]:
    """One machine, a sample a minute; per sample whether it was anomalous (warm-up: False)."""
    config = load_config(None, env={})
    analytics = dataclasses.replace(
        config.analytics, warmup_samples=200, data_quality=False, refit_every_h=every_h, refit_max_drift=max_drift
    )
    worker = AnalyticsWorker(None, analytics, detector_factory=DETECTORS["zscore"], since_ms=0)  # type: ignore[arg-type]
    flags: list[bool] = []
    for i, v in enumerate(vibration):
        lines: list[str] = []
        sample = Sample(START_MS + i * STEP_MS, {"state": "running", "accel_rms": v})
        worker.score_telemetry(Telemetry(PATH, "gw", i + 1, "centrifugal_pump", [sample], []), lines, [])
        flags.append(any("anomalous=true" in line for line in lines))
    return worker, flags


def test_a_healthy_machine_settling_after_its_warm_up_is_refitted_and_its_false_alarms_stop() -> None:
    rng = np.random.default_rng(1)
    day = 24 * 60
    warm = 1.0 + rng.normal(0, 0.005, 200)  # a calm warm-up: the spread floor (2 % of the level)
    later = 1.03 + rng.normal(0, 0.03, 4 * day)  # settled a little higher, noisier
    vibration = [*warm, *later]
    fixed_worker, fixed = run(vibration, every_h=0)
    refit_worker, refit = run(vibration, every_h=24)
    assert fixed_worker.stats.refits == 0 and refit_worker.stats.refits >= 1
    assert sum(fixed[-2 * day :]) > 0  # the first model keeps finding the settled normal odd
    assert sum(refit[-2 * day :]) == 0  # the refitted one does not


def test_a_fault_developing_over_days_is_not_learned_as_normal() -> None:
    rng = np.random.default_rng(2)
    day = 24 * 60
    warm = 1.0 + rng.normal(0, 0.005, 200)
    # A bearing wearing over ten days: its vibration climbs 30 % (15 spreads of the first model).
    wear = 1.0 + np.linspace(0.0, 0.3, 10 * day) + rng.normal(0, 0.005, 10 * day)
    vibration = [*warm, *wear]
    guarded_worker, guarded = run(vibration, every_h=24)
    unguarded_worker, unguarded = run(vibration, every_h=24, max_drift=1e9)
    assert guarded_worker.stats.refits_refused >= 1
    assert all(guarded[-day:])  # the worn bearing is abnormal all its last day
    assert unguarded_worker.stats.refits >= 5  # refitting without the bound follows the wear ...
    assert sum(unguarded[-day:]) < 0.05 * day  # ... and learns it as normal


def test_refit_state_survives_a_restart() -> None:
    factory = DETECTORS["zscore"]
    policy = Refit(factory, warmup=20, every_h=1, max_drift=0.33, threshold=6.0)
    model = factory(20)
    for i in range(20):
        model.learn_one({"accel_rms": 1.0 + 0.01 * (i % 3)})
    for i in range(30):
        policy.observe(model, START_MS + i * STEP_MS, {"accel_rms": 1.0}, 0.5)
    again = Refit(factory, warmup=20, every_h=1, max_drift=0.33, threshold=6.0)
    again.load_state(policy.state())
    assert again.state() == policy.state()
    for bad in (None, {"since": "x"}, {"reference": {"v": 99}}):
        fresh = Refit(factory, warmup=20, every_h=1, max_drift=0.33, threshold=6.0)
        fresh.load_state(bad)
        assert fresh.reference is None and fresh.candidate is None
