"""Machine faults that develop over time, and the ground truth of what was injected.

A fault has a start (it begins to develop) and a failure time (the machine would fail and
trips). Its severity rises from 0 at the start to 1 at failure along a curve typical of
the failure mode; the machine model turns severity into physical effects on its signals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from birlik.plant import PlantError, parse_duration


@dataclass
class Effects:
    """What the active faults do to a machine at one instant."""

    vibration_add: float = 0.0  # mm/s RMS added to the healthy vibration
    bearing_heat: float = 0.0  # K added to the bearing's equilibrium temperature
    winding_heat: float = 0.0  # K added to motor / discharge / oil equilibrium temperatures
    tripped: bool = False  # the fault reached failure: the machine stops


@dataclass(frozen=True)
class Fault:
    """A developing fault on one machine. Times are seconds since the start of the run."""

    type: ClassVar[str] = ""
    #: Severity from which the fault is visible in the signals in principle.
    detectable_at: ClassVar[float] = 0.1

    start_s: float
    failure_s: float

    def severity(self, t_s: float) -> float:
        if t_s <= self.start_s:
            return 0.0
        return min(1.0, self._curve((t_s - self.start_s) / (self.failure_s - self.start_s)))

    def _curve(self, x: float) -> float:
        return x

    def detectable_s(self) -> float:
        """First time the severity reaches :attr:`detectable_at`."""
        lo, hi = self.start_s, self.failure_s
        for _ in range(50):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.severity(mid) < self.detectable_at else (lo, mid)
        return hi

    def apply(self, t_s: float, effects: Effects) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class BearingWear(Fault):
    """Rolling-element bearing wear: vibration and bearing temperature rise slowly, then
    faster, as spalls grow (severity ~ x^2), until the bearing seizes."""

    type: ClassVar[str] = "bearing_wear"

    def _curve(self, x: float) -> float:
        return x * x

    def apply(self, t_s: float, effects: Effects) -> None:
        s = self.severity(t_s)
        effects.vibration_add += 7.0 * s
        effects.bearing_heat += 32.0 * s
        effects.tripped |= t_s >= self.failure_s


@dataclass(frozen=True)
class CoolingFailure(Fault):
    """Cooling degrades (fouled cooler, failing fan): winding, oil and discharge temperatures
    climb toward the trip limit (severity ~ 1 - e^-3x, fast at first, then levelling)."""

    type: ClassVar[str] = "cooling_failure"

    def _curve(self, x: float) -> float:
        return (1 - math.exp(-3 * x)) / (1 - math.exp(-3))

    def apply(self, t_s: float, effects: Effects) -> None:
        s = self.severity(t_s)
        effects.winding_heat += 40.0 * s
        effects.vibration_add += 0.3 * s
        effects.tripped |= t_s >= self.failure_s


FAULT_TYPES: dict[str, type[Fault]] = {f.type: f for f in (BearingWear, CoolingFailure)}


def parse_fault(spec: Mapping[str, Any], where: str) -> Fault:
    kind = spec.get("type")
    if kind not in FAULT_TYPES:
        raise PlantError(f"{where}: unknown fault type {kind!r} (known: {', '.join(FAULT_TYPES)})")
    start = parse_duration(spec.get("start", 0), f"{where}: start")
    if "failure" in spec:
        failure = parse_duration(spec["failure"], f"{where}: failure")
    else:
        failure = start + parse_duration(spec.get("duration", "1h"), f"{where}: duration")
    if failure <= start:
        raise PlantError(f"{where}: failure ({failure:g} s) must come after start ({start:g} s)")
    return FAULT_TYPES[kind](start, failure)
