"""Analytics: features from readings, the z-score detector, and alerts from scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.alerts import AlertTracker
from analytics.detectors import DETECTORS, ZScoreDetector
from analytics.features import CONDITION_SIGNALS, HEAT_TAU_S, Heat, features, heat_key
from birlik.topics import MachinePath

PUMP = MachinePath("sirdaryo-agro", "uz-syrdarya", "juice-1", "pump-302")
COMP = MachinePath("ontustik-textile", "kz-turkestan", "utilities-1", "comp-102")

# --- features -------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["idle", "stopped", "changeover", "fault"])
def test_samples_not_running_are_not_scored(state: str) -> None:
    assert features({"state": state, "vibration_rms": 9.0, "bearing_temp": 80.0}) is None


def test_temperatures_become_rises_over_ambient_and_only_condition_signals_count() -> None:
    values = {
        "state": "running",
        "ambient_temp": 31.5,
        "bearing_temp": 60.0,
        "motor_temp": 71.5,
        "vibration_rms": 2.5,
        "power": 18.0,
        "flow": 100.0,
        "speed": 2950.0,
        "energy": 12345.0,
    }

    assert features(values) == {"bearing_temp": 28.5, "motor_temp": 40.0, "vibration_rms": 2.5}


def test_without_ambient_temperatures_stay_absolute_and_without_state_the_sample_counts() -> None:
    assert features({"bearing_temp": 60, "oil_temp": 70.5}) == {"bearing_temp": 60.0, "oil_temp": 70.5}


def test_nothing_to_score_is_none() -> None:
    assert features({"state": "running", "power": 10.0, "ambient_temp": 20.0}) is None
    assert features({"state": "running", "vibration_rms": None}) is None


def test_condition_signals() -> None:
    expected = {"vibration_rms", "accel_rms", "accel2_rms", "bearing_temp", "motor_temp", "oil_temp", "discharge_temp"}
    assert expected == CONDITION_SIGNALS


# --- z-score detector -----------------------------------------------------------------


def _trained(warmup: int = 50) -> ZScoreDetector:
    """Vibration 2.0 +- 0.5 (well above its floor), bearing rise 30 +- 2, a two-sided signal
    100 +- 10 (any signal the features pass that is neither rising-only nor a square law's)."""
    detector = ZScoreDetector(warmup=warmup)
    for i in range(warmup):
        sign = 1 if i % 2 else -1
        detector.learn_one(
            {"vibration_rms": 2.0 + 0.5 * sign, "bearing_temp": 30.0 + 2 * sign, "power": 100 + 10 * sign}
        )
    return detector


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["vibration_rms", "bearing_temp", "power", "motor_temp"]),
            st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
            max_size=4,
        ),
        max_size=20,
    )
)
def test_zscore_batch_form_scores_and_explains_as_one_by_one(rows: list[dict[str, float]]) -> None:
    detector = _trained()
    names = ["vibration_rms", "bearing_temp", "power", "motor_temp"]
    x = np.array([[r.get(n, np.nan) for n in names] for r in rows]).reshape(len(rows), len(names))
    scores, which = detector.score_many(x, names)
    for row, score, col in zip(rows, scores, which, strict=True):
        one, name = detector.score_and_explain(row)
        assert one == detector.score_one(row) and name == detector.explain_one(row)
        assert math.isclose(score, one, rel_tol=1e-12, abs_tol=1e-12)
        # The same signal, unless two tie (then either is the explanation).
        if col >= 0 and names[col] != name:
            assert math.isclose(detector.score_and_explain({names[col]: row[names[col]]})[0], one, rel_tol=1e-12)
        assert (col < 0) == (name == "")


def test_not_ready_and_scores_zero_before_warmup() -> None:
    detector = _trained(warmup=50)
    fresh = ZScoreDetector(warmup=10)
    for _ in range(9):
        fresh.learn_one({"vibration_rms": 2.0})

    assert not fresh.ready
    assert fresh.score_one({"vibration_rms": 50.0}) == 0.0
    assert fresh.explain_one({"vibration_rms": 50.0}) == ""
    fresh.learn_one({"vibration_rms": 2.0})
    assert fresh.ready
    assert detector.ready


def test_scores_are_standardised_deviations() -> None:
    detector = _trained()
    # Sample std of +-0.5 alternating over 50 samples: 0.5 * sqrt(50 / 49).
    std = 0.5 * (50 / 49) ** 0.5

    assert detector.score_one({"vibration_rms": 2.0}) == pytest.approx(0.0)
    assert detector.score_one({"vibration_rms": 2.0 + 6 * std}) == pytest.approx(6.0)


def test_baseline_is_frozen_after_warmup() -> None:
    detector = _trained()
    before = detector.score_one({"vibration_rms": 5.0})

    for _ in range(500):  # a slow degradation must not become the new normal
        detector.learn_one({"vibration_rms": 5.0, "bearing_temp": 50.0, "power": 100.0})

    assert detector.score_one({"vibration_rms": 5.0}) == before > 5


def test_square_law_scores_a_strainer_drop_rising_at_the_same_flow_never_the_flow() -> None:
    detector = ZScoreDetector(warmup=400)
    rng = np.random.default_rng(3)
    for i in range(400):  # demand changes: the flow moves between 45 % and 95 % of 120 m3/h
        q = 120 * (0.45 if i % 100 < 40 else 0.95) + rng.normal(0, 0.6)
        detector.learn_one(
            {
                "vibration_rms": 2.0 + rng.normal(0, 0.05),
                "differential_pressure": 0.05 * (q / 120) ** 2 + rng.normal(0, 0.003),
                "flow": q,
            }
        )
    clean = {"vibration_rms": 2.0, "differential_pressure": 0.05 * 0.45**2, "flow": 54.0}
    assert detector.score_one(clean) < 2  # a low flow with its low drop is normal
    assert detector.score_one({**clean, "flow": 20.0, "differential_pressure": 0.05 * (20 / 120) ** 2}) < 2
    fouled = {**clean, "differential_pressure": 3 * clean["differential_pressure"]}
    assert detector.score_one(fouled) > 6 and detector.explain_one(fouled) == "differential_pressure"
    assert detector.score_one({**clean, "differential_pressure": 0.0}) == 0.0  # below the law: not a case
    assert detector.normal("differential_pressure") is not None
    again = ZScoreDetector(warmup=400)
    again.load_state(detector.state())
    assert again.score_one(fouled) == detector.score_one(fouled)


def test_heat_smooths_the_squared_current_with_the_motor_time_constant_and_cools_when_stopped() -> None:
    heat = Heat()
    key = heat_key("motor_current")
    assert heat.update(0, {"motor_current": 10.0}) == {key: 100.0}
    after = heat.update(int(HEAT_TAU_S * 1000), {"motor_current": 20.0})[key]
    assert after == pytest.approx(100 + (400 - 100) * (1 - math.exp(-1)))
    assert heat.update(1000, {"motor_current": 99.0})[key] == after  # older: changes nothing
    cooled = heat.update(int(4 * HEAT_TAU_S * 1000), {"motor_current": 0.0, "state": "stopped"})[key]
    assert cooled < 0.1 * after
    again = Heat()
    again.load_state(heat.state())
    assert again.update(int(5 * HEAT_TAU_S * 1000), {}) == heat.update(int(5 * HEAT_TAU_S * 1000), {})
    for bad in (None, 3, {"level": {"motor_current": -1.0}, "ts": 5}, {"level": [], "ts": "x"}):
        fresh = Heat()
        fresh.load_state(bad)
        assert fresh.update(0, {}) == {}


def test_heating_law_sees_a_motor_running_hot_for_its_duty_on_either_shift() -> None:
    key = heat_key("motor_current")
    detector = ZScoreDetector(warmup=400)
    rng = np.random.default_rng(5)
    for i in range(400):  # a shift change inside the warm-up: half load, then full load
        h = (30.0 if i < 200 else 60.0) ** 2
        rise = 5.0 + 35.0 * h / 3600 + rng.normal(0, 0.5)
        detector.learn_one({"motor_temp": rise, key: h})
    low = {"motor_temp": 5.0 + 35.0 * 900 / 3600, key: 900.0}
    high = {"motor_temp": 40.0, key: 3600.0}
    assert detector.score_one(low) < 2 and detector.score_one(high) < 2
    hot = {**low, "motor_temp": low["motor_temp"] + 20.0}  # a failing fan on the light shift
    assert detector.score_one(hot) > 6 and detector.explain_one(hot) == "motor_temp"
    plain = ZScoreDetector(warmup=400)  # the same warm-up without the currents
    rng = np.random.default_rng(5)
    for i in range(400):
        h = (30.0 if i < 200 else 60.0) ** 2
        plain.learn_one({"motor_temp": 5.0 + 35.0 * h / 3600 + rng.normal(0, 0.5)})
    assert plain.score_one({"motor_temp": hot["motor_temp"]}) < 3  # deaf: the shifts' spread
    # Beyond the warm-up's duty the law is not trusted: the plain baseline alone judges.
    assert detector.score_one({"motor_temp": 40.0, key: 20_000.0}) == plain.score_one({"motor_temp": 40.0})
    x = np.array([[low["motor_temp"], 900.0], [hot["motor_temp"], 900.0], [40.0, 20_000.0]])
    scores, _ = detector.score_many(x, ["motor_temp", key])
    assert np.allclose(
        scores,
        [detector.score_one(low), detector.score_one(hot), detector.score_one({"motor_temp": 40.0, key: 20_000.0})],
    )
    again = ZScoreDetector(warmup=400)
    again.load_state(detector.state())
    assert again.score_one(hot) == detector.score_one(hot)


def test_rising_only_features_ignore_drops_other_features_do_not() -> None:
    detector = _trained()

    assert detector.score_one({"vibration_rms": 0.0, "bearing_temp": 10.0}) == 0.0
    assert detector.score_one({"power": 40.0}) == pytest.approx(6 / (50 / 49) ** 0.5)
    assert detector.score_one({"power": 160.0}) == detector.score_one({"power": 40.0})


def test_explain_one_names_the_largest_contributor() -> None:
    detector = _trained()

    assert detector.explain_one({"vibration_rms": 2.1, "bearing_temp": 45.0, "power": 105.0}) == "bearing_temp"
    assert detector.explain_one({"vibration_rms": 4.5, "bearing_temp": 31.0, "power": 105.0}) == "vibration_rms"
    # A large drop of a rising-only feature is not the explanation; the power change is.
    assert detector.explain_one({"vibration_rms": 0.0, "bearing_temp": 0.0, "power": 120.0}) == "power"


def test_unknown_features_are_ignored() -> None:
    detector = _trained()

    assert detector.score_one({"oil_temp": 500.0}) == 0.0
    assert detector.score_one({"oil_temp": 500.0, "vibration_rms": 2.0}) == pytest.approx(0.0)


def test_std_floors_keep_constant_signals_from_exploding() -> None:
    detector = ZScoreDetector(warmup=20)
    for _ in range(20):
        detector.learn_one({"vibration_rms": 2.0, "bearing_temp": 30.0, "speed": 2950.0, "zero": 0.0})

    # Absolute floors per unit: 0.15 mm/s, 2.5 K.
    assert detector.score_one({"vibration_rms": 2.3}) == pytest.approx(2.0)
    assert detector.score_one({"bearing_temp": 35.0}) == pytest.approx(2.0)
    # Relative floor: 2 % of the mean (59 rpm at 2950 rpm).
    assert detector.score_one({"speed": 2950.0 + 59.0}) == pytest.approx(1.0)
    # The generic absolute floor, 0.01, for a feature whose mean is zero.
    assert detector.score_one({"zero": 0.05}) == pytest.approx(5.0)


def test_registry_builds_a_zscore_detector() -> None:
    detector = DETECTORS["zscore"](7)

    assert isinstance(detector, ZScoreDetector)
    assert detector.warmup == 7
    assert detector.name == "zscore"


# --- alert tracker --------------------------------------------------------------------


def _tracker(raise_after: int = 3, clear_after: int = 4) -> AlertTracker:
    return AlertTracker(raise_after=raise_after, clear_after=clear_after, threshold=6.0, detector="zscore")


def test_no_alert_after_one_sample_too_few() -> None:
    tracker = _tracker()

    results = [tracker.update(PUMP, t, 8.0, "bearing_temp") for t in range(2)]
    results.append(tracker.update(PUMP, 2, 5.0, "bearing_temp"))  # the run is broken
    results += [tracker.update(PUMP, t, 8.0, "bearing_temp") for t in range(3, 5)]

    assert results == [None] * 5
    assert tracker.active() == []


def test_raise_after_n_consecutive() -> None:
    tracker = _tracker()

    results = [tracker.update(PUMP, 1000 + t, 8.0, "bearing_temp") for t in range(3)]

    assert results[:2] == [None, None]
    alert = results[2]
    assert alert is not None
    assert (alert.state, alert.severity, alert.path, alert.signal) == ("raised", "warning", PUMP, "bearing_temp")
    assert (alert.ts_ms, alert.score, alert.threshold, alert.detector) == (1002, 8.0, 6.0, "zscore")
    assert alert.alert_id == "pump-302-1002"
    assert "bearing_temp" in alert.message
    assert tracker.active() == [alert]


def test_score_equal_to_threshold_is_normal() -> None:
    tracker = _tracker(raise_after=1)

    assert tracker.update(PUMP, 0, 6.0, "vibration_rms") is None
    assert tracker.update(PUMP, 1, 6.01, "vibration_rms") is not None


@pytest.mark.parametrize(("score", "severity"), [(11.99, "warning"), (12.0, "critical"), (40.0, "critical")])
def test_severity_is_critical_at_twice_the_threshold(score: float, severity: str) -> None:
    tracker = _tracker(raise_after=1)

    alert = tracker.update(PUMP, 0, score, "vibration_rms")

    assert alert is not None and alert.severity == severity


def test_one_active_alert_per_machine() -> None:
    tracker = _tracker(raise_after=2)

    raised = [tracker.update(PUMP, t, 9.0, "vibration_rms") for t in range(20)]
    other = [tracker.update(COMP, t, 9.0, "oil_temp") for t in range(2)]

    assert sum(a is not None for a in raised) == 1
    assert other[1] is not None and other[1].path == COMP
    assert {a.path for a in tracker.active()} == {PUMP, COMP}


def test_clear_after_m_normal_samples() -> None:
    tracker = _tracker(raise_after=2, clear_after=4)
    raised = [tracker.update(PUMP, t, 13.0, "oil_temp") for t in range(2)][-1]
    assert raised is not None

    calm = [tracker.update(PUMP, 10 + t, 1.0, "vibration_rms") for t in range(3)]
    calm.append(tracker.update(PUMP, 13, 7.0, "oil_temp"))  # one more anomalous sample restarts the count
    calm += [tracker.update(PUMP, 20 + t, 1.0, "vibration_rms") for t in range(4)]

    assert calm[:-1] == [None] * 7
    cleared = calm[-1]
    assert cleared is not None
    assert (cleared.state, cleared.alert_id, cleared.severity, cleared.signal) == (
        "cleared",
        raised.alert_id,
        "critical",
        "oil_temp",
    )
    assert cleared.ts_ms == 23
    assert tracker.active() == []
    # Once cleared, a new episode raises a new alert.
    again = [tracker.update(PUMP, 100 + t, 8.0, "motor_temp") for t in range(2)][-1]
    assert again is not None and again.state == "raised" and again.alert_id != raised.alert_id
