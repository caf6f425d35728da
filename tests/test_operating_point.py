"""The operating-point detector: quiet through load shifts, finds a clogging strainer."""

from __future__ import annotations

import json
import math

import numpy as np

from analytics.detectors import DETECTORS, OperatingPointDetector
from analytics.detectors.operating_point import operating_point_features

THRESHOLD = 6.0


def pump(i: int, rng: np.random.Generator, *, clog: float = 0.0) -> dict[str, object]:
    """A pump sample: demand steps between shifts (every 120 samples), dp ~ flow^2."""
    demand = (1.0, 0.8, 0.45)[(i // 120) % 3]
    q = 160.0 * demand + rng.normal(0, 0.6)
    x = q / 160.0
    load = 0.3 + 0.6 * x
    dp = 0.05 * x * x * (1 + 20 * clog) + rng.normal(0, 0.003)
    ambient = 20.0 + 5 * math.sin(i / 300) + rng.normal(0, 0.1)
    return {
        "state": "running",
        "flow": round(q, 2),
        "speed": round(2950 * (1 - 0.01 * load) + rng.normal(0, 1.5), 1),
        "differential_pressure": round(dp, 3),
        "suction_pressure": round(0.6 - 0.05 * x * x * 20 * clog + rng.normal(0, 0.01), 3),
        "vibration_rms": round(1.9 * (0.75 + 0.25 * load) + rng.normal(0, 0.06), 3),
        "bearing_temp": round(ambient + 25 * load + rng.normal(0, 0.1), 2),
        "ambient_temp": round(ambient, 2),
        "power": 20.0,
    }


def trained(rng: np.random.Generator, warmup: int = 360) -> OperatingPointDetector:
    d = OperatingPointDetector(warmup=warmup)
    for i in range(warmup):
        x = operating_point_features(pump(i, rng))
        assert x is not None
        d.learn_one(x)
    assert d.ready
    return d


def test_quiet_through_shifts() -> None:
    rng = np.random.default_rng(7)
    d = trained(rng)
    scores = []
    for i in range(360, 2000):
        x = operating_point_features(pump(i, rng))
        assert x is not None
        scores.append(d.score_one(x))
    assert max(scores) < THRESHOLD


def test_rising_differential_pressure_found_and_explained() -> None:
    rng = np.random.default_rng(3)
    d = trained(rng)
    x = operating_point_features(pump(400, rng, clog=0.3))
    assert x is not None
    assert d.score_one(x) > THRESHOLD
    assert d.explain_one(x) in ("differential_pressure", "suction_pressure")
    normal = d.normal("differential_pressure")
    assert normal is not None and 0 < normal < x["differential_pressure"]


def test_state_round_trip() -> None:
    rng = np.random.default_rng(5)
    d = trained(rng)
    e = OperatingPointDetector(warmup=360)
    e.load_state(json.loads(json.dumps(d.state())))
    assert e.ready
    for i in range(360, 420):
        x = operating_point_features(pump(i, rng, clog=0.2 * (i > 400)))
        assert x is not None
        assert d.score_one(x) == e.score_one(x)
        assert d.explain_one(x) == e.explain_one(x)
    # Half-way through the warm-up, too.
    f = OperatingPointDetector(warmup=50)
    for i in range(20):
        x = operating_point_features(pump(i, rng))
        assert x is not None
        f.learn_one(x)
    g = OperatingPointDetector(warmup=50)
    g.load_state(json.loads(json.dumps(f.state())))
    assert g.state() == f.state()


def test_bad_state_refused() -> None:
    d = OperatingPointDetector(warmup=10)
    for bad in ({}, {"v": 1, "detector": "zscore"}, {"v": 1, "detector": "operating_point", "models": 3}):
        try:
            d.load_state(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")


def test_junk_never_raises() -> None:
    rng = np.random.default_rng(11)
    assert operating_point_features({"state": "stopped", "flow": 3.0}) is None
    assert operating_point_features({"flow": float("nan"), "speed": "x"}) is None
    d = OperatingPointDetector(warmup=40)
    junk: list[dict[str, object]] = [
        {},
        {"flow": float("nan")},
        {"flow": float("inf"), "differential_pressure": -float("inf")},
        {"vibration_rms": 1.0},
        {"unknown": 1.0},
    ]
    for i in range(60):
        x = dict(pump(i, rng))
        if i % 7 == 0:
            x.pop("flow")
        if i % 5 == 0:
            x["differential_pressure"] = float("nan")
        f = operating_point_features(x)
        d.learn_one(f or {})
        for j in junk:
            if d.ready:
                d.learn_one(j)  # type: ignore[arg-type]
            assert math.isfinite(d.score_one(j))  # type: ignore[arg-type]
            assert isinstance(d.explain_one(j), str)  # type: ignore[arg-type]
    assert d.ready
    for j in junk:
        assert math.isfinite(d.score_one(j))  # type: ignore[arg-type]
        d.explain_one(j)  # type: ignore[arg-type]
    assert d.normal("nothing") is None


def test_registered() -> None:
    d = DETECTORS["operating_point"](30)
    assert d.name == "operating_point"
    assert callable(getattr(d, "features", None))
