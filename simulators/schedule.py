"""Production schedules: shifts, working days and demand that set when a machine runs and
how hard (opt-in, per machine).

A machine without a schedule runs as before (its own random running/idle/stopped states,
demand wandering around a constant mean). With one, given in the plant file as the
machine parameter ``schedule`` (share it between machines with a YAML anchor)::

    x-schedules:
      two-shift: &two-shift {shifts: 2, days: 5, shift_load: [1.0, 0.8], demand_spread: 0.08}
    ...
    machines:
      - {id: pump-1, kind: centrifugal_pump, params: {schedule: *two-shift}}

the machine works ``shifts`` shifts of ``shift_h`` hours a day from ``first_shift_h``
(local time of the site) on the first ``days`` days of the week (from Monday). Outside
them it is ``stopped`` (``off_load: 0``, the default) or runs on at ``off_load`` (a
utility that keeps a reduced load at night and at weekends). Within a shift the demand is
that shift's ``shift_load`` (the last one repeats), times a factor drawn per day around 1
with relative spread ``demand_spread`` (the day's orders; the same for every machine of
the site and seed). The models multiply their demand (pump flow, compressed-air
consumption, material on a conveyor) by this factor; extruders and spinning frames only
follow the on/off pattern.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from birlik.plant import PlantError

Arr = npt.NDArray[Any]

DAY_S = 86_400.0
#: 1970-01-01 was a Thursday: day 0 of the epoch is weekday 3 (Monday 0).
EPOCH_WEEKDAY = 3
KEYS = ("shifts", "shift_h", "first_shift_h", "days", "shift_load", "off_load", "demand_spread")


@dataclass(frozen=True)
class Schedule:
    shifts: int = 3
    shift_h: float = 8.0
    first_shift_h: float = 6.0
    days: int = 7
    shift_load: tuple[float, ...] = (1.0,)
    off_load: float = 0.0
    demand_spread: float = 0.0

    def factors(self, t_s: Arr, utc_offset_h: float, day_factor: DayFactor) -> Arr:
        """The demand factor at each time (epoch seconds): 0 where the machine is off."""
        local_s = t_s + utc_offset_h * 3600.0
        day = np.floor(local_s / DAY_S)
        since_first_h = (local_s - day * DAY_S) / 3600.0 - self.first_shift_h
        # A shift that runs past midnight belongs to the day it started on.
        work_day = np.where(since_first_h < 0, day - 1, day)
        since_first_h = np.where(since_first_h < 0, since_first_h + 24.0, since_first_h)
        weekday = (work_day.astype(np.int64) + EPOCH_WEEKDAY) % 7
        shift = np.floor(since_first_h / self.shift_h).astype(np.int64)
        on = (shift < self.shifts) & (weekday < self.days)
        loads = np.array(self.shift_load, dtype=np.float64)
        level = loads[np.minimum(shift, len(loads) - 1)]
        if self.demand_spread > 0:
            level = level * day_factor.of(work_day)
        return np.where(on, level, self.off_load)


class DayFactor:
    """The day's demand, drawn per (site, seed, day): lognormal around 1 with ``spread``."""

    def __init__(self, seed: object, site: str, spread: float) -> None:
        self.seed, self.site, self.spread = seed, site, spread
        self._cache: dict[int, float] = {}

    def _draw(self, day: int) -> float:
        digest = hashlib.sha256(f"demand/{self.seed}/{self.site}/{day}".encode()).digest()
        u = (int.from_bytes(digest[:8], "little") + 0.5) / 2**64
        z = max(-2.5, min(2.5, NormalDist().inv_cdf(u)))
        return math.exp(self.spread * z - self.spread**2 / 2)

    def of(self, days: Arr) -> Arr:
        out = np.empty(len(days))
        for d in np.unique(days).tolist():
            key = int(d)
            if key not in self._cache:
                self._cache[key] = self._draw(key)
            out[days == d] = self._cache[key]
        return out


def _num(spec: Mapping[str, Any], key: str, where: str, low: float, high: float) -> float:
    value = spec[key]
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise PlantError(f"{where}: schedule {key!r} must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def parse_schedule(spec: Any, where: str) -> Schedule:
    """A :class:`Schedule` from its plant-file mapping; PlantError says what is wrong."""
    if not isinstance(spec, Mapping):
        raise PlantError(f"{where}: 'schedule' must be a mapping (keys: {', '.join(KEYS)})")
    unknown = set(spec) - set(KEYS)
    if unknown:
        raise PlantError(f"{where}: unknown schedule keys {', '.join(sorted(unknown))} (known: {', '.join(KEYS)})")
    values: dict[str, Any] = {}
    if "shift_h" in spec:
        values["shift_h"] = _num(spec, "shift_h", where, 0.5, 24)
    shift_h = values.get("shift_h", Schedule.shift_h)
    if "shifts" in spec:
        shifts = _num(spec, "shifts", where, 0, 24)
        if not shifts.is_integer() or shifts * shift_h > 24:
            raise PlantError(f"{where}: schedule 'shifts' must be a whole number of shifts within 24 h")
        values["shifts"] = int(shifts)
    if "first_shift_h" in spec:
        values["first_shift_h"] = _num(spec, "first_shift_h", where, 0, 24) % 24
    if "days" in spec:
        days = _num(spec, "days", where, 0, 7)
        if not days.is_integer():
            raise PlantError(f"{where}: schedule 'days' must be a whole number of days a week (0-7)")
        values["days"] = int(days)
    if "shift_load" in spec:
        loads = spec["shift_load"]
        if isinstance(loads, int | float) and not isinstance(loads, bool):
            loads = [loads]
        if not isinstance(loads, list) or not loads:
            raise PlantError(f"{where}: schedule 'shift_load' must be a number or a list of numbers")
        values["shift_load"] = tuple(_num({"shift_load": x}, "shift_load", where, 0.05, 1.5) for x in loads)
    if "off_load" in spec:
        values["off_load"] = _num(spec, "off_load", where, 0, 1.5)
    if "demand_spread" in spec:
        values["demand_spread"] = _num(spec, "demand_spread", where, 0, 0.5)
    return Schedule(**values)
