"""Degradation trend and remaining useful life, per machine, with an uncertainty band.

The **health indicator** of a machine is its anomaly score in units of the alarm threshold
(``score / threshold``): 0 to 1 is normal, 1 is the alarm limit. A developing fault (bearing
wear, fouling, a failing cooler) pushes it up over hours to weeks. The machine is taken to
have **failed** when the indicator reaches ``failure_level`` (4: four times the alarm limit,
where the alarm turns critical).

Every ``step_s`` of device time the tracker averages the indicator (so noise and single
samples do not count), keeps the last ``history`` averages, and fits a straight line through
the last ``fit_window_s`` of them (least squares). When the indicator is rising
significantly (slope above twice its standard error), the **remaining useful life** is the
time the line takes to reach ``failure_level``, reported once the indicator is past
``min_indicator`` (half the alarm limit: below it a machine is healthy); its **band** comes from the slope's 95 %
interval (a slower or faster rise), so a short or noisy trend gives a wide band and a clear
one a narrow band. Health, for people, is ``1 - indicator / failure_level`` clipped to [0, 1].

A straight line is the simplest trend that can be wrong in a known way: most wear
accelerates near the end, so the estimate is early in the fault's life too long, and it
shortens as the fault develops. Each estimate is a fresh look at the recent trend, not a
model of the fault's physics. The failure level is a convention (the indicator's scale is
the detector's), not the machine's breaking point: on the simulated plant a bearing-wear pump
reaches it about two days before it would trip, so the estimate errs early, which is the side
maintenance planning can live with.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Estimate:
    ts_ms: int
    #: The health indicator now (score / threshold, averaged over ``step_s``).
    indicator: float
    #: 1 healthy ... 0 failed.
    health: float
    #: Hours to failure and the band, or None when the indicator is not rising.
    rul_h: float | None = None
    rul_low_h: float | None = None
    rul_high_h: float | None = None
    #: Rise of the indicator per hour.
    slope_per_h: float = 0.0


class RulTracker:
    """One machine's health indicator and its trend (see the module docstring)."""

    def __init__(
        self,
        *,
        failure_level: float = 4.0,
        step_s: float = 600.0,
        fit_window_s: float = 12 * 3600.0,
        history: int = 500,
        min_points: int = 6,
        min_indicator: float = 0.5,
    ) -> None:
        self.failure_level = failure_level
        self.min_indicator = min_indicator
        self.step_ms = int(step_s * 1000)
        self.fit_window_ms = int(fit_window_s * 1000)
        self.min_points = min_points
        self.points: deque[tuple[int, float]] = deque(maxlen=history)
        self._bucket_start: int | None = None
        self._sum = 0.0
        self._n = 0
        self.latest: Estimate | None = None

    def update(self, ts_ms: int, score: float, threshold: float) -> Estimate | None:
        """Add one scored sample; a new estimate once a ``step_s`` bucket is complete."""
        if threshold <= 0 or not math.isfinite(score):
            return None
        if self._bucket_start is None:
            self._bucket_start = ts_ms
        if ts_ms - self._bucket_start >= self.step_ms and self._n:
            mid = self._bucket_start + self.step_ms // 2
            self.points.append((mid, self._sum / self._n))
            self._bucket_start, self._sum, self._n = ts_ms, 0.0, 0
            self.latest = self._estimate(mid)
            self._sum += score / threshold
            self._n += 1
            return self.latest
        self._sum += score / threshold
        self._n += 1
        return None

    def _estimate(self, ts_ms: int) -> Estimate:
        recent = [(t, v) for t, v in self.points if ts_ms - t <= self.fit_window_ms]
        indicator = recent[-1][1]
        health = min(max(1.0 - indicator / self.failure_level, 0.0), 1.0)
        if len(recent) < self.min_points:
            return Estimate(ts_ms, indicator, health)
        t = [(x - recent[0][0]) / 3.6e6 for x, _ in recent]
        v = [y for _, y in recent]
        n = len(t)
        tm, vm = sum(t) / n, sum(v) / n
        sxx = sum((x - tm) ** 2 for x in t)
        if sxx <= 0:
            return Estimate(ts_ms, indicator, health)
        slope = sum((x - tm) * (y - vm) for x, y in zip(t, v, strict=True)) / sxx
        resid = [y - (vm + slope * (x - tm)) for x, y in zip(t, v, strict=True)]
        se = math.sqrt(sum(r * r for r in resid) / max(n - 2, 1) / sxx)
        if slope <= 0 or slope < 2 * se or indicator < self.min_indicator:
            return Estimate(ts_ms, indicator, health, slope_per_h=slope)
        level = vm + slope * (t[-1] - tm)  # the fitted indicator now
        gap = max(self.failure_level - level, 0.0)
        fast, slow = slope + 2 * se, max(slope - 2 * se, 1e-9)
        return Estimate(
            ts_ms,
            indicator,
            health,
            rul_h=gap / slope,
            rul_low_h=gap / fast,
            rul_high_h=min(gap / slow, 1e6),
            slope_per_h=slope,
        )
