"""Remaining useful life from the health indicator's trend."""

from __future__ import annotations

import numpy as np

from analytics.rul import RulTracker

T0 = 1_767_225_600_000
MIN = 60_000


def test_a_steady_rise_gives_the_time_to_the_failure_level_with_a_band() -> None:
    rng = np.random.default_rng(1)
    rul = RulTracker(failure_level=4.0, step_s=600, fit_window_s=12 * 3600)
    # The indicator rises 0.1 per hour from 0.5; it reaches 4 after 35 h.
    estimates = []
    for i in range(0, 20 * 60):
        hours = i / 60
        score = 6.0 * (0.5 + 0.1 * hours + rng.normal(0, 0.05))
        e = rul.update(T0 + i * MIN, score, 6.0)
        if e is not None:
            estimates.append((hours, e))
    hours, last = estimates[-1]
    true_left = 35 - hours
    assert last.rul_h is not None and last.rul_low_h is not None and last.rul_high_h is not None
    assert abs(last.rul_h - true_left) < 0.1 * true_left
    assert last.rul_low_h < last.rul_h < last.rul_high_h
    assert 0.0 < last.health < 1.0 and abs(last.slope_per_h - 0.1) < 0.02


def test_a_healthy_or_flat_machine_has_no_remaining_life_estimate() -> None:
    rng = np.random.default_rng(2)
    rul = RulTracker()
    for i in range(0, 48 * 60):
        rul.update(T0 + i * MIN, abs(rng.normal(1.0, 0.5)), 6.0)
    assert rul.latest is not None and rul.latest.rul_h is None and rul.latest.health > 0.9


def test_junk_scores_are_ignored() -> None:
    rul = RulTracker()
    assert rul.update(T0, float("nan"), 6.0) is None
    assert rul.update(T0, 1.0, 0.0) is None
