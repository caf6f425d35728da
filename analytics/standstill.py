"""The zero check: a sensor's offset, seen while the machine stands still.

While a machine runs, a vibration or temperature sensor that slowly reads too high looks
exactly like the machine developing a fault (see :mod:`analytics.quality`). At standstill
the two part: the machine's physics then says what every condition sensor must read,
whatever the fault. A vibration sensor on a shaft that does not turn reads its noise floor;
a bearing, winding, oil or discharge temperature, once the machine has stood long enough
to cool down, reads the ambient temperature (nothing heats it any more). A reading that
stays off at standstill is the sensor: an offset (a drift, a zero error), not the machine.
Instrument technicians make the same check by hand on a stopped machine.

Standstill is told by the machine's own state (not ``running``) and its drive: every motor
current and speed it reports is below ``still_share`` of the machine's usual running level
(learned). Nothing here knows a unit: the limits are shares of the machine's learned
running levels and noise.

* **Vibration** is judged once the machine has stood ``spin_down_s``: a reading above its
  learned standstill floor plus ``vib_share`` of its learned running level is off.
* **Temperatures** are judged once the machine has stood ``settle_s`` (enough for the
  thermal lags of :data:`analytics.quality.THERMAL_LAGS_S` to die out). The ambient reading
  and the machine's temperatures (:data:`SETTLING_TEMPS`, each less its learned standstill
  offset, 0 unless the learning period saw a settled standstill) should then agree. With
  three or more, the one that alone disagrees with their median by more than its tolerance
  is the faulty one (an ambient sensor is judged like the others). With only one machine
  temperature beside ambient, a disagreement is put on the machine's sensor (the detail
  names both). The tolerance is ``temp_share`` of the temperature's learned running rise
  over ambient, at least ``k_noise`` times its noise.

An issue (kind ``offset``) is raised after ``confirm_s`` of judged standstill off in a row
(``vib_confirm_s`` for vibration, whose floor is clean; short stops add up) and at least
``min_samples`` samples, and cleared after ``clear_s`` of judged standstill
back within the limit. Between stops it stays as it is: the machine's running readings
say nothing either way.

Limits: a machine that never stops for long is never judged (utilities that run round the
clock); process temperatures (a barrel kept hot by its heaters, a process fluid) have no
standstill value and are not judged here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from analytics.quality import (
    Batch,
    Commit,
    Finding,
    Held,
    IssueKind,
    Reading,
    _minutes,
    _nothing,
    _robust_spread,
    _with_unit,
)

#: Signals that say whether the motor turns.
DRIVE_SIGNALS = ("motor_current", "speed", "spindle_speed", "belt_speed")
#: Vibration measurements: their noise floor at standstill.
VIBRATIONS = ("vibration_rms", "accel_rms", "accel2_rms")
#: Temperatures with no heat source of their own at standstill: they settle to ambient.
SETTLING_TEMPS = ("bearing_temp", "motor_temp", "oil_temp", "discharge_temp")
AMBIENT = "ambient_temp"
#: At most this many values of a signal are kept to learn from.
_MAX_KEPT = 20_000


class StandstillCheck:
    """Offsets of vibration and temperature sensors, judged at standstill (module docs)."""

    kinds: tuple[IssueKind, ...] = ("offset",)

    def __init__(
        self,
        *,
        still_share: float = 0.05,
        spin_down_s: float = 120.0,
        settle_s: float = 2 * 3600.0,
        vib_share: float = 0.2,
        temp_share: float = 0.12,
        k_noise: float = 6.0,
        confirm_s: float = 1800.0,
        vib_confirm_s: float = 600.0,
        clear_s: float = 1800.0,
        min_samples: int = 5,
    ) -> None:
        self.still_share = still_share
        self.spin_down_ms = int(spin_down_s * 1000)
        self.settle_ms = int(settle_s * 1000)
        self.vib_share = vib_share
        self.temp_share = temp_share
        self.k_noise = k_noise
        self.confirm_ms = int(confirm_s * 1000)
        self.vib_confirm_ms = int(vib_confirm_s * 1000)
        self.clear_ms = int(clear_s * 1000)
        self.min_samples = min_samples
        # Learning: running levels, running rises over ambient, and standstill samples.
        self._run: dict[str, list[float]] = {}
        self._rise: dict[str, list[float]] = {}
        self._steps: dict[str, list[float]] = {}
        self._prev: dict[str, float] = {}
        self._learn_ran = 0  # running samples seen while learning
        self._learn_since: int | None = None
        self._floor: dict[str, list[float]] = {}
        self._offsets: dict[str, list[float]] = {}
        # Learned.
        self._drive_limit: dict[str, float] = {}
        self._vib_limit: dict[str, float] = {}
        self._vib_level: dict[str, float] = {}
        self._temp_tol: dict[str, float] = {}
        self._temp_base: dict[str, float] = {}
        # Judging.
        self._still_since: int | None = None
        self._judged_at: int | None = None
        self._counts: dict[str, Held] = {}

    # -- learning --

    def learn(self, r: Reading) -> None:
        v = r.values
        if r.running:
            for name in (*DRIVE_SIGNALS, *VIBRATIONS):
                x = v.get(name)
                if x is not None and len(self._run.setdefault(name, [])) < _MAX_KEPT:
                    self._run[name].append(x)
            ambient = v.get(AMBIENT)
            for name in (*SETTLING_TEMPS, AMBIENT):
                x = v.get(name)
                if x is None:
                    self._prev.pop(name, None)
                    continue
                if ambient is not None and name != AMBIENT and len(self._rise.setdefault(name, [])) < _MAX_KEPT:
                    self._rise[name].append(x - ambient)
                prev = self._prev.get(name)
                if prev is not None and len(self._steps.setdefault(name, [])) < _MAX_KEPT:
                    self._steps[name].append(x - prev)
                self._prev[name] = x
            self._learn_ran += 1
            self._learn_since = None
            if self._learn_ran % 60 == 1:  # the drive's running level so far, now and then
                self._drive_limit = self._drive_limits()
            return
        # A standstill of the learning period (timed from its start: one that began before
        # the data did is not): the vibration floor and the temperatures' settled offsets.
        if not self._learn_ran or not self._is_still(r):
            self._learn_since = None
            return
        since = self._learn_since = r.ts_ms if self._learn_since is None else self._learn_since
        stood = r.ts_ms - since
        if stood >= self.spin_down_ms:
            for name in VIBRATIONS:
                x = v.get(name)
                if x is not None and len(self._floor.setdefault(name, [])) < _MAX_KEPT:
                    self._floor[name].append(x)
        ambient = v.get(AMBIENT)
        if stood >= self.settle_ms and ambient is not None:
            for name in SETTLING_TEMPS:
                x = v.get(name)
                if x is not None and len(self._offsets.setdefault(name, [])) < _MAX_KEPT:
                    self._offsets[name].append(x - ambient)

    def _drive_limits(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in DRIVE_SIGNALS:
            level = _median(self._run.get(name))
            if level is not None and level > 0:
                out[name] = self.still_share * level
        return out

    def freeze(self) -> None:
        self._drive_limit = self._drive_limits()
        noise = {n: _robust_spread(np.asarray(s)) / math.sqrt(2) for n, s in self._steps.items() if len(s) >= 30}
        for name, rises in self._rise.items():
            rise = _median(rises)
            tol = max(self.temp_share * abs(rise), self.k_noise * noise.get(name, 0.0)) if rise is not None else 0.0
            if tol > 0:
                self._temp_tol[name] = tol
        if self._temp_tol:
            tol_a = min(self._temp_tol.values())
            self._temp_tol[AMBIENT] = max(tol_a, self.k_noise * noise.get(AMBIENT, 0.0))
        floor, offsets = self._floor, self._offsets
        for name in VIBRATIONS:
            level = _median(self._run.get(name))
            if level is None or level <= 0:
                continue
            still = floor.get(name, [])
            base = float(np.quantile(still, 0.95)) if len(still) >= 30 else 0.0
            self._vib_level[name] = level
            self._vib_limit[name] = base + self.vib_share * level
        for name, offs in offsets.items():
            if len(offs) >= 30 and name in self._temp_tol:
                self._temp_base[name] = float(np.median(offs))
        self._still_since = None
        self._run.clear()
        self._rise.clear()
        self._steps.clear()
        self._prev.clear()
        self._floor.clear()
        self._offsets.clear()

    # -- judging --

    def _is_still(self, r: Reading) -> bool:
        """Not running, and every drive signal reported (at least one) near zero."""
        if r.running or not self._drive_limit:
            return False
        seen = False
        for name, limit in self._drive_limit.items():
            x = r.values.get(name)
            if x is None:
                continue
            if abs(x) > limit:
                return False
            seen = True
        return seen

    def _stood(self, r: Reading) -> int | None:
        """How long (ms) the machine has stood still at this sample, or None if it has not.
        (Judging starts at the end of learning, on a running sample: every stop is timed
        from its start.)"""
        if not self._is_still(r):
            self._still_since = self._judged_at = None
            return None
        if self._still_since is None:
            self._still_since = r.ts_ms
        return r.ts_ms - self._still_since

    def plan(self, b: Batch, faulty: frozenset[str] = frozenset()) -> Commit | None:
        """Batch form: in columns, as long as every judged sample is within its limits and
        no count is under way (then nothing but the standstill clock changes)."""
        if b.all_running or not (self._vib_limit or self._temp_tol):
            if self._still_since is None:
                return _nothing
            return self._set_clock(None, None)
        if any(c.bad_n or c.active for c in self._counts.values()):
            return None
        n = len(b.ts_list)
        still = ~b.running
        seen = np.zeros(n, dtype=bool)
        for name, limit in self._drive_limit.items():
            i = b.index.get(name)
            if i is not None:
                still &= np.abs(b.x[:, i]) <= limit
                seen[:] = True
        still &= seen
        ts = b.ts
        before = np.concatenate(([self._still_since is not None], still[:-1]))
        first = np.where(still & ~before, np.arange(n), -1)
        run_start = np.maximum.accumulate(first)
        since = np.where(run_start >= 0, ts[np.maximum(run_start, 0)], self._still_since or 0)
        stood = np.where(still, ts - since, -1)
        judged = stood >= self.spin_down_ms
        if judged.any():
            for name, limit in self._vib_limit.items():
                i = b.index.get(name)
                if i is not None and name not in faulty and bool(np.any(b.x[judged, i] > limit)):
                    return None
            settled = stood >= self.settle_ms
            if settled.any() and not self._temperatures_agree(b, settled, faulty):
                return None
        if not still[-1]:
            return self._set_clock(None, None)
        last_judged = int(np.flatnonzero(judged)[-1]) if judged.any() else -1
        judged_at = b.ts_list[last_judged] if last_judged >= max(int(run_start[-1]), 0) else None
        return self._set_clock(int(since[-1]), judged_at)

    def _temperatures_agree(self, b: Batch, rows: npt.NDArray[np.bool_], faulty: frozenset[str]) -> bool:
        names = [n for n in self._temp_tol if n in b.index and n not in faulty]
        if AMBIENT not in names or len(names) < 2:
            return True
        cols = np.array([b.index[n] for n in names], dtype=np.intp)
        x = b.x[rows][:, cols] - np.array([self._temp_base.get(n, 0.0) for n in names])
        tol = np.array([self._temp_tol[n] for n in names])
        if len(names) == 2:
            j = names.index(AMBIENT)
            return bool(np.all(np.abs(x[:, 1 - j] - x[:, j]) <= tol[1 - j]))
        off = np.abs(x - np.median(x, axis=1, keepdims=True)) > tol
        # Exactly one sensor off on a row is evidence; none or several is not (see check).
        return not bool(np.any(off.sum(axis=1) == 1))

    def _set_clock(self, since: int | None, judged_at: int | None) -> Commit:
        def commit() -> None:
            self._still_since, self._judged_at = since, judged_at

        return commit

    def check(self, r: Reading, faulty: frozenset[str]) -> Iterable[Finding]:
        if not self._vib_limit and not self._temp_tol:
            return ()
        stood = self._stood(r)
        if stood is None or stood < self.spin_down_ms:
            return ()
        credit = 0 if self._judged_at is None else r.ts_ms - self._judged_at
        self._judged_at = r.ts_ms
        out: list[Finding] = []
        how_long = _minutes(stood)
        for name, limit in self._vib_limit.items():
            x = r.values.get(name)
            if x is None or name in faulty:
                continue
            off = x > limit
            detail = (
                f"{name} reads {_with_unit(x, name)} with the machine at standstill for {how_long}, where it "
                f"should read its noise floor (below {_with_unit(limit, name)}; "
                f"{_with_unit(self._vib_level[name], name)} running): the sensor has an offset "
                "(a drift or a zero error), not the machine: check the sensor and its mounting"
            )
            out.extend(self._count(name, off, credit, detail, self.vib_confirm_ms))
        if stood >= self.settle_ms:
            out.extend(self._temperatures(r, faulty, credit, how_long))
        return out

    def _temperatures(self, r: Reading, faulty: frozenset[str], credit: int, how_long: str) -> list[Finding]:
        present = {
            n: x - self._temp_base.get(n, 0.0)
            for n in self._temp_tol
            if n not in faulty and (x := r.values.get(n)) is not None
        }
        if AMBIENT not in present or len(present) < 2:
            return []
        out: list[Finding] = []
        if len(present) == 2:
            (name, x), ambient = next((n, x) for n, x in present.items() if n != AMBIENT), present[AMBIENT]
            d = x - ambient
            detail = (
                f"{name} reads {d:+.1f} K against ambient_temp "
                f"({_with_unit(r.values[AMBIENT], AMBIENT)}) with the machine at standstill for {how_long}, "
                "where it should have cooled to ambient: one of the two sensors has an offset "
                f"(most likely {name}): check both"
            )
            return list(self._count(name, abs(d) > self._temp_tol[name], credit, detail, self.confirm_ms))
        centre = float(np.median(list(present.values())))
        off = [n for n, x in present.items() if abs(x - centre) > self._temp_tol[n]]
        if len(off) > 1:
            return []  # not settled yet, or not one sensor: no evidence either way
        for name, x in present.items():
            d = x - centre
            detail = (
                f"{name} reads {_with_unit(r.values[name], name)}, {d:+.1f} K from the machine's other "
                f"temperatures and ambient ({_with_unit(centre, name)}) with the machine at standstill for "
                f"{how_long}, where all should agree: the sensor has an offset (a drift or a bad junction), "
                "not the machine: check the sensor"
            )
            out.extend(self._count(name, name in off, credit, detail, self.confirm_ms))
        return out

    def _count(self, name: str, off: bool, credit: int, detail: str, confirm_ms: int) -> Iterable[Finding]:
        c = self._counts.get(name)
        if c is None:
            c = self._counts[name] = Held()
        changed = c.step(off, credit, confirm_ms, self.clear_ms, self.min_samples)
        if changed is not None:
            yield Finding(name, "offset", changed, detail if changed else "")


def _median(x: list[float] | None) -> float | None:
    return float(np.median(x)) if x else None
