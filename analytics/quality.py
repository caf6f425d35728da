"""Data quality: tell a faulty *sensor* from a faulty *machine*.

A :class:`DataQualityMonitor` watches one machine. It is fed the machine's samples in time
order and reports :class:`SensorIssue` objects: a reading that is stuck, missing, outside
its physical range, spiky, drifting away from what its physically related signals say, or
off by a factor (a wrong transmitter range). Each issue is raised once and cleared once per
(signal, kind). :attr:`DataQualityMonitor.faulty_signals` lists the signals under an issue
right now; the machine-condition model should leave them out, so a broken thermocouple
does not raise a bearing alarm.

How the checks stay honest on any machine: nothing here knows a unit or a typical size of
a signal. Every spread is learned from the machine's own first hours of running (the
"learning period", assumed healthy), and every threshold is a multiple of such a learned
spread or a false-alarm probability. The only fixed numbers with units are the physical
ranges of the signal catalogue (:mod:`birlik.signals`).

How a sensor fault is told from a machine fault: a machine fault changes the physics, so
it shows in several physically related signals together (bearing wear raises vibration
*and* bearing temperature; a cooling failure raises the temperatures and the vibration a
little). A sensor fault changes one reading and nothing else. The drift and scaling check
learns, for every signal, how it follows its physical partners (:data:`PARTNERS`), and
only blames a sensor when that one signal disagrees with its partners while every other
signal still agrees with its own partners (leaving the suspect out of their models).

Limits, in plain words:

* the learning period must be healthy: a sensor already broken then is learned as normal;
* a machine fault that shows in a single signal only (e.g. an imbalance seen by one
  vibration sensor and nothing else) looks exactly like a sensor drift while the machine
  runs; a second, redundant sensor (``accel_rms`` next to ``vibration_rms``) is what
  separates the two, and so does a standstill (:mod:`analytics.standstill`: a machine
  fault's vibration and heat stop with the machine, a sensor's offset does not), and for
  ambient sensors the line's other machines' (:mod:`analytics.reference`);
* signals without partners (no model) are checked for stuck, dropout, range and spikes
  only, and against their own learned level.
"""

from __future__ import annotations

import logging
import math
import pickle
import sys
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from analytics.features import CONDITION_SIGNALS
from birlik.signals import SIGNALS

log = logging.getLogger("analytics.quality")

IssueKind = Literal["stuck", "dropout", "out_of_range", "spikes", "drift", "scaling", "offset"]
IssueState = Literal["raised", "cleared"]
Value = float | int | str | None
FloatArray = npt.NDArray[np.float64]

#: Physically related signals: which readings a signal should agree with on a healthy
#: machine. A signal is modelled from those of its partners the machine reports (a robust
#: linear fit learned on the machine's own healthy data). The reasons:
#:
#: * current, power and load are three views of the same electrical load (an extruder's
#:   power also feeds its barrel heaters, which follow barrel minus ambient temperature);
#: * speeds follow each other (motor and belt) and sag slightly with load;
#: * flow, pressures and power are tied by the pump curve and the strainer's loss;
#: * the two vibration measurements (velocity and acceleration) see the same machine, and
#:   vibration grows with load;
#: * temperatures are a rise over ambient driven by load (with thermal lags, modelled by
#:   smoothed copies of the load signals), and a machine's temperatures rise together;
#: * an extruder's melt pressure follows screw speed and barrel temperature.
PARTNERS: dict[str, tuple[str, ...]] = {
    "motor_current": ("power", "load"),
    "power": ("motor_current", "load", "barrel_temp", "ambient_temp"),
    "load": ("power", "motor_current"),
    "speed": ("belt_speed", "load", "motor_current", "power"),
    "belt_speed": ("speed",),
    "spindle_speed": ("power", "motor_current"),
    "flow": ("power", "motor_current", "discharge_pressure", "differential_pressure", "load"),
    "discharge_pressure": ("flow", "suction_pressure", "power"),
    "suction_pressure": ("differential_pressure", "flow"),
    "differential_pressure": ("flow", "suction_pressure"),
    "melt_pressure": ("speed", "barrel_temp", "motor_current", "load"),
    "barrel_temp": ("melt_pressure", "speed", "motor_current"),
    "vibration_rms": ("accel_rms", "accel2_rms", "load", "power", "speed"),
    "accel_rms": ("vibration_rms", "accel2_rms", "load", "power"),
    "accel2_rms": ("accel_rms", "vibration_rms", "load", "power"),
    "bearing_temp": ("motor_temp", "ambient_temp", "load", "power"),
    "motor_temp": ("bearing_temp", "oil_temp", "ambient_temp", "load", "power"),
    "oil_temp": ("discharge_temp", "motor_temp", "ambient_temp", "load", "power"),
    "discharge_temp": ("oil_temp", "ambient_temp", "load", "power"),
    "fluid_temp": ("ambient_temp", "power", "flow"),
    "ambient_temp": ("fluid_temp", "bearing_temp", "motor_temp", "oil_temp", "discharge_temp", "load", "power"),
}
assert all(s in SIGNALS and all(p in SIGNALS for p in ps) for s, ps in PARTNERS.items())

#: Redundant measurements of the same condition: a vibration rising in one but not in the
#: other is the sensor; rising in both is the machine.
REDUNDANT: dict[str, frozenset[str]] = {
    "vibration_rms": frozenset({"accel_rms", "accel2_rms"}),
    "accel_rms": frozenset({"vibration_rms", "accel2_rms"}),
    "accel2_rms": frozenset({"vibration_rms", "accel_rms"}),
}

#: Thermal time constants (s) of the smoothed load copies a temperature is modelled with:
#: a winding, a bearing and an oil sump heat up over minutes to the better part of an hour.
THERMAL_LAGS_S = (300.0, 900.0, 2700.0)


def _unit(name: str) -> str:
    s = SIGNALS.get(name)
    return s.unit if s else ""


def _fmt(x: float) -> str:
    """A number as a technician reads it: 3 significant digits, no exponent for ordinary sizes."""
    if not math.isfinite(x):
        return str(x)
    a = abs(x)
    if a >= 1000 or float(x).is_integer():
        return f"{x:.0f}"
    digits = max(0, 2 - math.floor(math.log10(a)))
    return f"{x:.{digits}f}"


def _minutes(ms: float) -> str:
    m = ms / 60_000
    if m < 1:
        return f"{ms / 1000:.0f} s"
    if m < 120:
        return f"{m:.0f} min"
    return f"{m / 60:.1f} h"


def _with_unit(x: float, name: str) -> str:
    u = _unit(name)
    return f"{_fmt(x)} {u}".rstrip() if u else _fmt(x)


# --- what the checks see and say --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SensorIssue:
    """A problem with one signal's measurement (not with the machine).

    ``state`` is ``raised`` when the issue starts and ``cleared`` when the reading is back
    to normal; ``started_ms`` is the same in both, ``ts_ms`` is the sample that changed the
    state. ``detail`` explains it in plain words with the measured value and unit.
    """

    signal: str
    kind: IssueKind
    started_ms: int
    detail: str
    state: IssueState = "raised"
    ts_ms: int = 0


@dataclass(slots=True)
class Reading:
    """One sample as the checks see it, sorted out from the raw values.

    ``values``: finite numbers of numeric signals inside their physical range;
    ``out_of_range``: numbers outside it (infinities and overflowing integers included);
    ``missing``: keys sent without a usable number (None, NaN, text, booleans).
    ``refs``: the readings of the same quantity by other machines' sensors, if known.
    """

    ts_ms: int
    state: str | None
    running: bool
    values: dict[str, float]
    out_of_range: dict[str, float]
    missing: set[str]
    #: What other machines' sensors of the same quantity read at that time (the median of
    #: the line's other ambient sensors, see :mod:`analytics.reference`), by signal.
    refs: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Finding:
    """What a check says about one signal: the issue is present (``active``) or not."""

    signal: str
    kind: IssueKind
    active: bool
    detail: str = ""


class QualityCheck(Protocol):
    """A data-quality check of one machine: learns while the monitor is learning, then judges."""

    #: The issue kinds this check reports.
    kinds: tuple[IssueKind, ...]

    def learn(self, r: Reading) -> None:
        """Learn from a sample of the (assumed healthy) learning period."""
        ...

    def freeze(self) -> None:
        """End of the learning period: fix the learned spreads."""
        ...

    def check(self, r: Reading, faulty: frozenset[str]) -> Iterable[Finding]:
        """Judge a sample; ``faulty`` are the signals already under an issue of another check."""
        ...


def _nothing() -> None:
    return None


@dataclass(slots=True)
class Held:
    """A verdict that must hold for a while before it counts: raised after ``confirm_ms`` of
    judged samples off in a row (and at least ``min_samples`` of them), cleared after
    ``clear_ms`` of judged samples back (as many). ``credit`` is the time a judged sample
    stands for (since the judged one before it)."""

    bad_ms: int = 0
    bad_n: int = 0
    good_ms: int = 0
    good_n: int = 0
    active: bool = False
    #: When the last judged sample was (the next one's credit), if any.
    last_ms: int | None = None

    def step(self, off: bool, credit: int, confirm_ms: int, clear_ms: int, min_samples: int) -> bool | None:
        """One judged sample: True when the issue is raised by it, False when cleared, else None."""
        if off:
            self.good_ms = self.good_n = 0
            self.bad_ms += credit
            self.bad_n += 1
            if not self.active and self.bad_ms >= confirm_ms and self.bad_n >= min_samples:
                self.active = True
                return True
        else:
            self.bad_ms = self.bad_n = 0
            self.good_ms += credit
            self.good_n += 1
            if self.active and self.good_ms >= clear_ms and self.good_n >= min_samples:
                self.active = False
                return False
        return None


def _robust_spread(x: FloatArray) -> float:
    """Standard deviation estimated from the median absolute deviation (ignores outliers)."""
    if x.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def _ewma(e0: float | FloatArray, x: FloatArray, alpha: float) -> FloatArray:
    """``e[j] = e[j-1] + alpha * (x[j] - e[j-1])`` from ``e0``, for every ``j`` at once (the
    batch form of the per-sample updates; the same values up to rounding). ``x`` is one
    series or a matrix of series in columns (``e0`` then one start per column)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty(x.shape)
    b = 1.0 - alpha
    e = np.array(e0, dtype=np.float64)
    if not 0.0 < b < 1.0 or b**64 < 1e-30:  # no or hardly any memory: step by step
        for j in range(len(x)):
            e = e + alpha * (x[j] - e)
            out[j] = e
        return out
    chunk = 64
    while chunk < 1024 and b ** (2 * chunk) > 1e-30:
        chunk *= 2
    for start in range(0, len(x), chunk):
        seg = x[start : start + chunk]
        bk = b ** np.arange(1, len(seg) + 1)  # b^(j+1)
        if seg.ndim == 2:
            bk = bk[:, None]
        # e[j] = b^(j+1) e0 + alpha * sum_{s<=j} b^(j-s) x[s]
        out[start : start + len(seg)] = bk * (e + alpha * np.cumsum(seg / bk, axis=0))
        e = out[start + len(seg) - 1]
    return out


def _ewma_timed(e0: FloatArray, x: FloatArray, t_s: FloatArray, tau_s: float) -> FloatArray:
    """Smoothed copies with a time constant, columns of ``x`` from starts ``e0``:
    ``e[j] = e[j-1] + a[j] * (x[j] - e[j-1])`` with ``a[j] = 1 - exp(-(t[j] - t[j-1]) / tau)``;
    ``t_s`` (seconds) counts from the previous sample."""
    out = np.empty(x.shape)
    start, n, t_ref = 0, len(x), 0.0
    e = np.asarray(e0, dtype=np.float64)
    while start < n:
        # A chunk spans at most 50 time constants (the weights stay far from overflow).
        stop = min(n, max(start + 1, int(np.searchsorted(t_s, t_ref + 50 * tau_s, side="right"))))
        t = t_s[start:stop] - t_ref
        step = np.empty(len(t))
        step[0] = t[0]
        step[1:] = t[1:] - t[:-1]
        a = (1.0 - np.exp(-step / tau_s))[:, None]
        grow = np.exp(t / tau_s)[:, None]  # 1 / B_j
        out[start:stop] = (e + np.cumsum(a * x[start:stop] * grow, axis=0)) / grow
        e, t_ref, start = out[stop - 1], float(t_s[stop - 1]), stop
    return out


@dataclass(slots=True)
class Batch:
    """A run of one machine's samples in columns, for the checks' batch forms. Built only
    when every sample is plain: time order, the same signals in each, every reading a number
    inside its physical range (so no range, type or dropout finding can come from it)."""

    ts: npt.NDArray[np.int64]
    ts_list: list[int]
    values: Sequence[Mapping[str, Value]]
    running: npt.NDArray[np.bool_]
    all_running: bool
    #: Samples in rows, the numeric signals in columns (``names``, ``index``).
    x: FloatArray
    names: list[str]
    index: dict[str, int]
    #: Per sample, what other machines' sensors read (``Reading.refs``), if anything is known.
    refs: Sequence[Mapping[str, float] | None] | None = None

    @classmethod
    def of(cls, ts_ms: Sequence[int], values: Sequence[Mapping[str, Value]], after_ms: int | None) -> Batch | None:
        n = len(ts_ms)
        if n == 0 or len(values) != n or {type(t) for t in ts_ms} != {int}:
            return None
        ts = np.asarray(ts_ms, dtype=np.int64)
        if (after_ms is not None and ts[0] <= after_ms) or (n > 1 and not bool(np.all(ts[1:] > ts[:-1]))):
            return None
        first = values[0]
        if type(first) is not dict:
            return None
        keys = first.keys()
        if not all(type(v) is dict and v.keys() == keys for v in values):
            return None
        states = [v.get("state") for v in values]
        running = np.fromiter((s is None or s == "running" or not isinstance(s, str) for s in states), bool, n)
        names = [k for k in keys if k not in _STATES and isinstance(k, str)]
        rows = [[v[k] for k in names] for v in values]
        if not {type(x) for row in rows for x in row} <= _NUMBERS:
            return None
        try:
            x = np.array(rows, dtype=np.float64).reshape(n, len(names))
        except OverflowError:
            return None
        low, high = _bounds(tuple(names))
        if not bool(np.all((x >= low) & (x <= high))):
            return None  # out of range (or not finite): judged sample by sample
        return cls(ts, list(ts_ms), values, running, bool(running.all()), x, names, {k: i for i, k in enumerate(names)})


_NUMBERS = frozenset({float, int})
_BOUNDS: dict[tuple[str, ...], tuple[FloatArray, FloatArray]] = {}


def _bounds(names: tuple[str, ...]) -> tuple[FloatArray, FloatArray]:
    """The physical ranges of ``names``, as arrays (cached: a machine sends the same signals)."""
    got = _BOUNDS.get(names)
    if got is None:
        if len(_BOUNDS) > 10_000:
            _BOUNDS.clear()
        pairs = [_RANGES.get(k, _NO_RANGE) for k in names]
        got = _BOUNDS[names] = (np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))
    return got


Commit = Callable[[], None]


#: Gauges: readings of a physical quantity (not totals, counters or states).
GAUGES = frozenset(s.name for s in SIGNALS.values() if s.kind == "gauge")


def _is_gauge(name: str) -> bool:
    return name in GAUGES


# --- out of physical range --------------------------------------------------------------


class RangeCheck:
    """A reading outside the catalogue's physical range (``low``..``high`` in
    :mod:`birlik.signals`) cannot be a true measurement: raised at the first such reading,
    cleared after ``clear_after`` readings in range in a row. Judged in every state."""

    kinds: tuple[IssueKind, ...] = ("out_of_range",)

    def __init__(self, clear_after: int = 12) -> None:
        self.clear_after = clear_after
        self._good: dict[str, int] = {}
        self._active: set[str] = set()

    def learn(self, r: Reading) -> None:
        return None

    def freeze(self) -> None:
        return None

    def plan(self, b: Batch, faulty: frozenset[str] = frozenset()) -> Commit | None:
        """Batch form: a plain batch is in range, so nothing changes unless an issue is open."""
        return None if self._active else _nothing

    def check(self, r: Reading, faulty: frozenset[str]) -> Iterable[Finding]:
        out: list[Finding] = []
        for name, v in r.out_of_range.items():
            self._good[name] = 0
            if name not in self._active:
                self._active.add(name)
                s = SIGNALS.get(name)
                where = f"its physical range {_fmt(s.low)} to {_fmt(s.high)} {s.unit}".rstrip() if s else "any range"
                out.append(
                    Finding(
                        name,
                        "out_of_range",
                        True,
                        f"{name} reads {_with_unit(v, name)}, outside {where}: "
                        "the sensor or its configuration is wrong",
                    )
                )
        for name in list(self._active):
            if name in r.values:
                self._good[name] = self._good.get(name, 0) + 1
                if self._good[name] >= self.clear_after:
                    self._active.discard(name)
                    out.append(Finding(name, "out_of_range", False))
        return out


# --- dropout / stale --------------------------------------------------------------------


class DropoutCheck:
    """A signal missing from the samples (absent, None, NaN or not a number) where it used
    to be reported.

    Learned per signal: the usual time between its reports (median) and the longest gap
    seen while learning. An issue is raised when the signal has been missing for at least
    ``misses`` samples of the machine in a row and for longer than ``gap_factor`` times its
    usual interval (or twice its longest learned gap, if that is longer). Judged in every
    state (a sensor reports while the machine stands still too). Cleared at the next report.
    """

    kinds: tuple[IssueKind, ...] = ("dropout",)

    def __init__(self, gap_factor: float = 5.0, misses: int = 3) -> None:
        self.gap_factor = gap_factor
        self.misses = misses
        self._last: dict[str, int] = {}
        self._gaps: dict[str, list[int]] = {}
        self._missed: dict[str, int] = {}
        self._limit: dict[str, float] = {}
        self._usual: dict[str, float] = {}
        self._active: set[str] = set()
        self._seen_samples = 0
        self._reports: dict[str, int] = {}

    def _reported(self, r: Reading) -> Iterable[str]:
        yield from r.values
        yield from r.out_of_range

    def learn(self, r: Reading) -> None:
        self._seen_samples += 1
        for name in self._reported(r):
            last = self._last.get(name)
            if last is not None:
                gaps = self._gaps.setdefault(name, [])
                if len(gaps) < 20_000:
                    gaps.append(r.ts_ms - last)
            self._last[name] = r.ts_ms
            self._reports[name] = self._reports.get(name, 0) + 1

    def freeze(self) -> None:
        for name, gaps in self._gaps.items():
            # Only signals reported in most samples "used to be reported".
            if len(gaps) < 10 or self._reports.get(name, 0) < 0.5 * self._seen_samples:
                continue
            g = np.asarray(gaps, dtype=np.float64)
            usual = float(np.median(g))
            if usual <= 0:
                continue
            self._usual[name] = usual
            self._limit[name] = max(self.gap_factor * usual, 2.0 * float(g.max()))
        self._gaps.clear()

    def plan(self, b: Batch, faulty: frozenset[str] = frozenset()) -> Commit | None:
        """Batch form: every watched signal reported in every sample, none under an issue."""
        if self._active or any(name not in b.index for name in self._limit):
            return None
        last = b.ts_list[-1]

        def commit() -> None:
            for name in self._limit:
                self._last[name] = last
                self._missed[name] = 0

        return commit

    def check(self, r: Reading, faulty: frozenset[str]) -> Iterable[Finding]:
        out: list[Finding] = []
        reported = set(self._reported(r))
        for name, limit in self._limit.items():
            if name in reported:
                self._last[name] = r.ts_ms
                self._missed[name] = 0
                if name in self._active:
                    self._active.discard(name)
                    out.append(Finding(name, "dropout", False))
                continue
            self._missed[name] = self._missed.get(name, 0) + 1
            last = self._last.get(name, r.ts_ms)
            if name not in self._active and self._missed[name] >= self.misses and r.ts_ms - last > limit:
                self._active.add(name)
                how = "sent without a value" if name in r.missing else "missing from the samples"
                out.append(
                    Finding(
                        name,
                        "dropout",
                        True,
                        f"{name} has not been reported for {_minutes(r.ts_ms - last)} "
                        f"(usually every {_minutes(self._usual[name])}); it is {how}: "
                        "check the sensor, its wiring and the device configuration",
                    )
                )
        return out


# --- stuck ------------------------------------------------------------------------------


@dataclass(slots=True)
class _StuckState:
    prev: float | None = None
    run: int = 0  # running samples in a row with exactly the previous value
    run_start_ms: int = 0
    equal: int = 0
    pairs: int = 0
    longest: int = 0
    mean_abs: float = 0.0  # learned mean sample-to-sample change
    ewma_abs: float = 0.0  # recent mean sample-to-sample change
    flat_start_ms: int = 0
    limit: int = 0  # run length (samples) that raises the issue; 0: not judged
    active: bool = False
    sums: float = 0.0


class StuckCheck:
    """A signal that normally varies keeps exactly the same value (or varies far less than
    it used to) for a long run while the machine runs.

    Learned per signal, over running samples: how often two samples in a row are exactly
    equal (``p``) and the longest such run. A run of ``k`` equal readings is raised when
    ``p**k`` (its chance on a healthy signal, taken as independent) is below
    ``false_alarm`` per sample, and ``k`` is at least ``run_factor`` times the longest
    learned run and at least ``min_run`` samples. Signals equal more than half the time
    (set-points, on/off levels) are not judged. A second test catches a frozen but slightly
    noisy reading: the recent mean sample-to-sample change (smoothed over ``window``
    samples) below ``flat_share`` of the learned one. Only running samples count; idle
    samples neither extend nor break a run. Cleared when the reading moves again.
    """

    kinds: tuple[IssueKind, ...] = ("stuck",)

    def __init__(
        self,
        *,
        false_alarm: float = 1e-7,
        run_factor: float = 3.0,
        min_run: int = 36,
        flat_share: float = 0.05,
        window: int = 120,
    ) -> None:
        self.false_alarm = false_alarm
        self.run_factor = run_factor
        self.min_run = min_run
        self.flat_share = flat_share
        self.alpha = 1.0 / window
        self._s: dict[str, _StuckState] = {}
        self._frozen = False

    def _step(self, st: _StuckState, v: float, ts: int, learning: bool) -> None:
        if st.prev is None:
            st.prev, st.run_start_ms = v, ts
            return
        d = abs(v - st.prev)
        if d == 0.0:
            st.run += 1
        else:
            st.run = 0
            st.run_start_ms = ts
        if learning:
            st.pairs += 1
            st.equal += d == 0.0
            st.longest = max(st.longest, st.run)
            st.sums += d
        else:
            st.ewma_abs += self.alpha * (d - st.ewma_abs)
        st.prev = v

    def learn(self, r: Reading) -> None:
        if not r.running:
            return
        for name, v in r.values.items():
            if _is_gauge(name):
                st = self._s.get(name)
                if st is None:
                    st = self._s[name] = _StuckState()
                self._step(st, v, r.ts_ms, True)

    def freeze(self) -> None:
        self._frozen = True
        for st in self._s.values():
            if st.pairs < 50:
                continue
            p = (st.equal + 1) / (st.pairs + 2)
            st.mean_abs = st.sums / st.pairs
            st.ewma_abs = st.mean_abs
            if p > 0.5 or st.mean_abs <= 0:
                continue
            k = math.log(self.false_alarm) / math.log(p)
            st.limit = max(math.ceil(k), math.ceil(self.run_factor * st.longest), self.min_run)

    def plan(self, b: Batch, faulty: frozenset[str] = frozenset()) -> Commit | None:
        """Batch form: the run lengths and the recent change of every judged signal over the
        batch's running samples, all signals at once; None if any of them could raise or
        clear an issue."""
        idx = None if b.all_running else np.flatnonzero(b.running)
        if idx is not None and idx.size == 0:
            return _nothing  # only idle samples: neither extend nor break a run
        judged: list[_StuckState] = []
        cols: list[int] = []
        for name, col in b.index.items():
            st = self._s.get(name)
            if st is None or not st.limit:
                continue
            if st.active or st.prev is None:
                return None
            judged.append(st)
            cols.append(col)
        if not judged:
            return _nothing
        v = b.x[:, cols] if idx is None else b.x[np.ix_(idx, np.asarray(cols, dtype=np.intp))]
        ts = b.ts if idx is None else b.ts[idx]
        prev = np.array([st.prev for st in judged])
        d = np.abs(np.diff(v, axis=0, prepend=prev[None, :]))
        level = self.flat_share * np.array([st.mean_abs for st in judged])
        e0 = np.array([st.ewma_abs for st in judged])
        if bool((e0 < level).any()):
            return None
        e = _ewma(e0, d, self.alpha)
        if bool((e < level).any()):
            return None
        moved = d != 0.0
        n = len(d)
        pos = np.arange(n)[:, None]
        last_moved = np.maximum.accumulate(np.where(moved, pos, -1), axis=0)
        run0 = np.array([st.run for st in judged])
        runs = np.where(last_moved < 0, run0 + pos + 1, pos - last_moved)
        if bool((runs.max(axis=0) >= np.array([st.limit for st in judged])).any()):
            return None
        ends = last_moved[-1]
        new_prev, new_run, new_e = v[-1].tolist(), runs[-1].tolist(), e[-1].tolist()
        starts = [int(ts[k]) if k >= 0 else st.run_start_ms for k, st in zip(ends.tolist(), judged, strict=True)]

        def commit() -> None:
            for st, p, r, t, ew in zip(judged, new_prev, new_run, starts, new_e, strict=True):
                st.prev, st.run, st.run_start_ms, st.ewma_abs = p, r, t, ew

        return commit

    def check(self, r: Reading, faulty: frozenset[str]) -> Iterable[Finding]:
        if not r.running:
            return ()
        out: list[Finding] = []
        states, share, alpha, ts = self._s, self.flat_share, self.alpha, r.ts_ms
        for name, v in r.values.items():
            st = states.get(name)
            if st is None or not st.limit:
                continue
            level = share * st.mean_abs
            was_flat = st.ewma_abs < level
            if st.prev is None:  # _step, inlined (this runs for every reading)
                st.prev, st.run_start_ms = v, ts
            else:
                d = abs(v - st.prev)
                if d == 0.0:
                    st.run += 1
                else:
                    st.run = 0
                    st.run_start_ms = ts
                st.ewma_abs += alpha * (d - st.ewma_abs)
                st.prev = v
            flat = st.ewma_abs < level
            if not flat and not was_flat and not st.active and st.run < st.limit:
                continue  # the usual case: nothing to decide
            if flat and not was_flat:
                st.flat_start_ms = r.ts_ms
            stuck = st.run >= st.limit
            if not st.active and (stuck or flat):
                st.active = True
                since = st.run_start_ms if stuck else st.flat_start_ms
                what = (
                    f"has read exactly {_with_unit(v, name)}"
                    if stuck
                    else f"has hardly moved from {_with_unit(v, name)} "
                    f"(under 1/{1 / self.flat_share:.0f} of its usual change)"
                )
                out.append(
                    Finding(
                        name,
                        "stuck",
                        True,
                        f"{name} {what} for {_minutes(r.ts_ms - since)} while the machine runs; "
                        "a live sensor would move: check the transmitter and its register",
                    )
                )
            elif st.active and st.run == 0 and st.ewma_abs > 3 * self.flat_share * st.mean_abs:
                st.active = False
                out.append(Finding(name, "stuck", False))
        return out


# --- spikes -----------------------------------------------------------------------------


@dataclass(slots=True)
class _SpikeState:
    x0: float | None = None  # two samples back
    x1: float | None = None  # the previous sample (the one judged when the next arrives)
    t1: int = 0
    skip_next: bool = False  # the previous sample was a spike: its return step is no roughness
    diffs: list[float] = field(default_factory=list)
    sigma: float = 0.0  # learned robust spread of the sample-to-sample change
    base_rough: float = 0.0  # learned mean |change|, capped
    rough: float = 0.0  # recent mean |change|, capped, spikes left out
    limit: float = 0.0
    learned_max: float = 0.0
    events: deque[tuple[int, float]] = field(default_factory=deque)
    active: bool = False
    last_event_ms: int = 0


class SpikeCheck:
    """Isolated single-reading jumps that return at once (interference, a loose connector).

    A reading is a spike when it jumps away from the reading before and comes straight
    back at the reading after: both steps exceed ``k`` times the learned robust spread of
    sample-to-sample changes (median absolute deviation), in opposite directions, and the
    readings before and after agree within a ``back`` share of the jump. The threshold is
    also at least ``learned_factor`` times the largest such score seen while learning.

    ``count`` spikes within ``window_ms`` raise the issue, if between the spikes the signal
    is as smooth as it was while learning (its recent mean change below ``own_rough`` times
    the learned one) and the machine's other signals are too (below ``other_rough``): a
    machine that turns erratic (cavitation: vibration bursts with flow and pressure
    surges) is a machine fault, not a sensor fault. Running samples only; cleared after
    ``2 * window_ms`` without a spike.
    """

    kinds: tuple[IssueKind, ...] = ("spikes",)

    def __init__(
        self,
        *,
        k: float = 8.0,
        back: float = 0.3,
        learned_factor: float = 1.5,
        count: int = 3,
        window_ms: int = 3_600_000,
        own_rough: float = 1.6,
        other_rough: float = 2.0,
        memory: int = 720,
    ) -> None:
        self.k = k
        self.back = back
        self.learned_factor = learned_factor
        self.count = count
        self.window_ms = window_ms
        self.own_rough = own_rough
        self.other_rough = other_rough
        self.alpha = 1.0 / memory
        self._s: dict[str, _SpikeState] = {}
        self._frozen = False

    def _score(self, st: _SpikeState, x2: float) -> tuple[float, float]:
        """(score, jump) of the previous reading as a spike, given the next one ``x2``."""
        assert st.x0 is not None and st.x1 is not None
        d1 = st.x1 - st.x0
        d2 = x2 - st.x1
        if d1 * d2 >= 0 or st.sigma <= 0:
            return 0.0, 0.0
        small = min(abs(d1), abs(d2))
        if abs(x2 - st.x0) > self.back * small:
            return 0.0, 0.0
        return small / st.sigma, d1

    def learn(self, r: Reading) -> None:
        if not r.running:
            for each in self._s.values():
                each.x0 = each.x1 = None
            return
        for name, v in r.values.items():
            if not _is_gauge(name):
                continue
            if name not in self._s:
                self._s[name] = _SpikeState()
            st = self._s[name]
            if st.x1 is not None and len(st.diffs) < 50_000:
                st.diffs.append(v - st.x1)
            st.x0, st.x1, st.t1 = st.x1, v, r.ts_ms

    def freeze(self) -> None:
        self._frozen = True
        for st in self._s.values():
            if len(st.diffs) < 50:
                continue
            d = np.asarray(st.diffs, dtype=np.float64)
            sigma = _robust_spread(d)
            nonzero = np.abs(d[d != 0])
            if sigma <= 0 and nonzero.size:
                sigma = float(np.min(nonzero))  # a steppy signal: its smallest step
            st.sigma = sigma
            if sigma <= 0:
                continue
            capped = np.minimum(np.abs(d), 4 * sigma)
            st.base_rough = float(capped.mean()) or sigma
            st.rough = st.base_rough
            # The largest isolated-jump score of the healthy learning data.
            a = d[:-1]
            b = d[1:]
            opposite = a * b < 0
            small = np.minimum(np.abs(a), np.abs(b))
            back_ok = np.abs(a + b) <= self.back * small
            scores = np.where(opposite & back_ok, small / sigma, 0.0)
            st.learned_max = float(scores.max()) if scores.size else 0.0
            st.limit = max(self.k, self.learned_factor * st.learned_max)
            st.diffs = []
            st.x0 = st.x1 = None

    def _roughness(self, name: str) -> float:
        st = self._s[name]
        return st.rough / st.base_rough if st.base_rough > 0 else 1.0

    def plan(self, b: Batch, faulty: frozenset[str] = frozenset()) -> Commit | None:
        """Batch form: the batch's spike scores and smoothed roughness of every judged signal;
        None if a spike, a new issue or a clearing could come from it."""
        n = len(b.ts_list)
        # Runs of running samples; an idle sample forgets the previous readings.
        if b.all_running:
            segments = [(0, n, False)]
            reset_after = False
        else:
            segments = []
            run_start: int | None = None
            idle_before = False
            for j, running in enumerate(b.running.tolist()):
                if running and run_start is None:
                    run_start = j
                elif not running:
                    if run_start is not None:
                        segments.append((run_start, j, idle_before))
                        run_start = None
                    idle_before = True
            if run_start is not None:
                segments.append((run_start, n, idle_before))
            reset_after = not bool(b.running[-1])
        reset_any = not b.all_running
        updates: list[tuple[_SpikeState, float | None, float | None, int, bool, float]] = []
        steady: list[tuple[_SpikeState, int]] = []  # judged from the first sample: all at once
        for name, col in b.index.items():
            st = self._s.get(name)
            if st is None or st.limit <= 0:
                continue
            if b.all_running and st.x0 is not None and st.x1 is not None:
                steady.append((st, col))
                continue
            x0, x1, t1, skip, rough = st.x0, st.x1, st.t1, st.skip_next, st.rough
            for a, c, reset in segments:
                if reset:
                    x0 = x1 = None
                    skip = False
                pre = [x for x in (x0, x1) if x is not None]
                seg = b.x[a:c, col]
                full = np.concatenate((pre, seg)) if pre else seg
                if len(full) >= 3:
                    d1 = full[1:-1] - full[:-2]
                    d2 = full[2:] - full[1:-1]
                    small = np.minimum(np.abs(d1), np.abs(d2))
                    spike = (d1 * d2 < 0) & (np.abs(full[2:] - full[:-2]) <= self.back * small)
                    if bool((spike & (small / st.sigma >= st.limit)).any()):
                        return None
                    caps = np.minimum(np.abs(d1), 4 * st.sigma)
                    if skip:
                        caps = caps[1:]
                    if caps.size:
                        rough = float(_ewma(rough, caps, self.alpha)[-1])
                    skip = False
                x0 = float(full[-2]) if len(full) >= 2 else None
                x1 = float(full[-1])
                t1 = b.ts_list[c - 1]
            if reset_after:
                x0 = x1 = None
                skip = False
            updates.append((st, x0, x1, t1, skip, rough))
        if steady:
            sts = [st for st, _ in steady]
            head = np.array([[st.x0 for st in sts], [st.x1 for st in sts]], dtype=np.float64)
            full = np.vstack((head, b.x[:, [c for _, c in steady]]))
            sigma = np.array([st.sigma for st in sts])
            d1 = full[1:-1] - full[:-2]
            d2 = full[2:] - full[1:-1]
            small = np.minimum(np.abs(d1), np.abs(d2))
            spike = (d1 * d2 < 0) & (np.abs(full[2:] - full[:-2]) <= self.back * small)
            if bool((spike & (small / sigma >= np.array([st.limit for st in sts]))).any()):
                return None
            caps = np.minimum(np.abs(d1), 4 * sigma)
            rough0 = np.array([st.rough for st in sts])
            skips = np.array([st.skip_next for st in sts])
            if skips.any():  # the reading after a spike: its step back is no roughness
                rough0 = np.where(skips, rough0, rough0 + self.alpha * (caps[0] - rough0))
                caps = caps[1:]
            roughs = _ewma(rough0, caps, self.alpha)[-1] if len(caps) else rough0
            t_last = b.ts_list[-1]
            for st, x0f, x1f, r in zip(sts, full[-2].tolist(), full[-1].tolist(), roughs.tolist(), strict=True):
                updates.append((st, x0f, x1f, t_last, False, r))
        last_running = [t for t, r in zip(b.ts_list, b.running.tolist(), strict=True) if r] if reset_any else b.ts_list
        if last_running:
            first_ts, last_ts = last_running[0], last_running[-1]
            for st in self._s.values():
                if st.active and last_ts - st.last_event_ms > 2 * self.window_ms:
                    return None  # it clears in this batch
                if not st.active and st.events:
                    recent = sum(1 for t, _ in st.events if t >= first_ts - self.window_ms)
                    if recent >= self.count:
                        return None  # it may be raised in this batch

        def commit() -> None:
            if reset_any:
                for each in self._s.values():
                    each.x0 = each.x1 = None
                    each.skip_next = False
            for st, x0, x1, t1, skip, rough in updates:
                st.x0, st.x1, st.t1, st.skip_next, st.rough = x0, x1, t1, skip, rough
            if last_running:
                for st in self._s.values():
                    while st.events and st.events[0][0] < last_running[-1] - self.window_ms:
                        st.events.popleft()

        return commit

    def check(self, r: Reading, faulty: frozenset[str]) -> Iterable[Finding]:
        out: list[Finding] = []
        if not r.running:
            for each in self._s.values():
                each.x0 = each.x1 = None
                each.skip_next = False
            return out
        states = self._s
        back, alpha = self.back, self.alpha
        for name, v in r.values.items():
            st = states.get(name)
            if st is None or st.limit <= 0:
                continue
            x0, x1 = st.x0, st.x1
            if x0 is not None and x1 is not None:
                # _score, inlined (this runs for every reading)
                d1 = x1 - x0
                d2 = v - x1
                score = 0.0
                if d1 * d2 < 0:
                    small = min(abs(d1), abs(d2))
                    if abs(v - x0) <= back * small:
                        score = small / st.sigma
                if score >= st.limit:
                    st.events.append((st.t1, d1))
                    st.last_event_ms = st.t1
                    st.skip_next = True
                else:
                    if not st.skip_next:
                        d = min(abs(d1), 4 * st.sigma)
                        st.rough += alpha * (d - st.rough)
                    st.skip_next = False
            st.x0, st.x1, st.t1 = x1, v, r.ts_ms
        for name, st in states.items():
            if not st.events and not st.active:
                continue
            while st.events and st.events[0][0] < r.ts_ms - self.window_ms:
                st.events.popleft()
            if not st.active and len(st.events) >= self.count:
                others = max((self._roughness(o) for o in self._s if o != name and o not in faulty), default=1.0)
                if self._roughness(name) < self.own_rough and others < self.other_rough:
                    st.active = True
                    jumps = np.abs(np.asarray([j for _, j in st.events]))
                    out.append(
                        Finding(
                            name,
                            "spikes",
                            True,
                            f"{name} jumped by about {_with_unit(float(np.median(jumps)), name)} for single readings "
                            f"{len(st.events)} times in the last {_minutes(self.window_ms)} and came straight back "
                            f"(its normal change between readings is about {_with_unit(st.sigma, name)}); "
                            "the machine's other signals are calm: check the sensor's cable, connector and shielding",
                        )
                    )
            elif st.active and r.ts_ms - st.last_event_ms > 2 * self.window_ms:
                st.active = False
                out.append(Finding(name, "spikes", False))
        return out


# --- drift and scaling against physically related signals --------------------------------


def _base(feature: str) -> str:
    """The signal a model feature is made from (``load~900``: the smoothed load)."""
    return feature.split("~", 1)[0]


@dataclass(frozen=True, slots=True)
class _Model:
    """A learned linear relation: ``target`` from ``features``, both measured from a
    reference temperature if ``ref`` is given (temperatures as a rise over ambient; ambient
    as the machine's temperatures minus their rise), the reference taken with weight one."""

    target: str
    features: tuple[str, ...]
    ref: tuple[str, ...]
    mean: FloatArray
    scale: FloatArray
    coef: FloatArray
    intercept: float
    sigma: float  # spread of the residual on held-out learning data
    low: FloatArray  # the operating envelope the relation was learned in, per feature
    high: FloatArray

    #: Per feature: (name, measured from the reference, low, high, mean, coef / scale), as
    #: plain floats (a block is judged feature by feature: numpy's per-call cost dominates).
    plan: tuple[tuple[str, bool, float, float, float, float], ...] = field(init=False, compare=False, repr=False)
    inputs: frozenset[str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        temps = [bool(self.ref) and _unit(_base(f)) == "degC" for f in self.features]
        plan = tuple(
            (f, t, float(lo), float(hi), float(m), float(c / sc))
            for f, t, lo, hi, m, c, sc in zip(
                self.features, temps, self.low, self.high, self.mean, self.coef, self.scale, strict=True
            )
        )
        object.__setattr__(self, "plan", plan)
        object.__setattr__(self, "inputs", frozenset({_base(f) for f in self.features} | set(self.ref)))

    def predict(self, row: Mapping[str, float]) -> float | None:
        try:
            base = sum(row[r] for r in self.ref) / len(self.ref) if self.ref else 0.0
            total = self.intercept + base
            for f, from_ref, lo, hi, mean, weight in self.plan:
                x = row[f] - base if from_ref else row[f]
                if not lo <= x <= hi:
                    return None  # outside the learned operating envelope: the relation is not trusted there
                total += (x - mean) * weight
        except KeyError:
            return None
        return total


@dataclass(slots=True)
class _Suspect:
    since_ms: int = 0
    blocks: int = 0
    sudden: bool = False
    active: bool = False
    normal_blocks: int = 0
    kind: IssueKind = "drift"
    before: float = 0.0  # the reading's level (block median) just before the deviation


class RelationCheck:
    """Drift and scaling errors: one signal disagrees with its physically related signals.

    While learning, running samples are gathered in blocks of ``block`` samples (their
    medians, so spikes do not count), with smoothed copies of the load signals for the
    thermal lags (:data:`THERMAL_LAGS_S`). At the end a ridge-regularised linear model is
    fitted for every gauge signal from its partners (:data:`PARTNERS`), temperatures as a
    rise over ambient; for each partner a second model without it, to test "this partner is
    the faulty one". A model's residual spread is measured on the last third of the
    learning blocks with a fit on the first two thirds (an honest out-of-sample spread).

    Judging a block: a signal whose residual exceeds ``k`` spreads is a *suspect*. It is
    isolated when every other signal still agrees with its own partners within ``k_iso``
    spreads, with the suspect left out of their models. Only an isolated suspect is a
    sensor fault: a machine fault shows in several signals. The issue is raised after
    ``confirm`` isolated blocks in a row, or after ``confirm_sudden`` if the deviation
    appeared at once (from within ``k_iso`` to more than ``2 k`` spreads from one block to
    the next, by a factor of at least 1.1): that is a **scaling** error (a wrong range), reported with the factor;
    a slowly growing one is a **drift**. A block where the suspect is not isolated starts
    the count again. A deviation that appears across a stop counts as slow (a restart has
    transients of its own). A condition signal (vibration, a temperature) that slowly reads
    *higher* than its partners imply is exactly what a developing machine fault looks like
    (an imbalance raises the vibration and little else; an ambient reading low against all
    the machine's temperatures is a machine running hot): it is blamed on the sensor only
    when a redundant measurement of the same condition (:data:`REDUNDANT`) disagrees, and
    otherwise left to the machine-condition model. A relation is only trusted inside the
    operating envelope it was learned in (each feature within its learned range widened by
    ``envelope`` of it); outside, the signal is not judged. A temperature model's spread is
    at least ``rel_floor`` of the modelled rise (thermal relations learned over a few hours
    hold no better than that: lags and heat paths vary over the day), any other model's at
    least ``rel_floor / 10`` of the signal's level.
    Cleared after ``clear_blocks`` blocks back within ``k_iso`` spreads.
    """

    kinds: tuple[IssueKind, ...] = ("drift", "scaling")

    def __init__(
        self,
        *,
        block: int = 12,
        k: float = 8.0,
        k_iso: float = 4.0,
        confirm: int = 20,
        confirm_sudden: int = 3,
        clear_blocks: int = 5,
        ridge: float = 1e-2,
        min_blocks: int = 60,
        rel_floor: float = 0.01,
        envelope: float = 0.25,
    ) -> None:
        self.block = block
        self.k = k
        self.k_iso = k_iso
        self.confirm = confirm
        self.confirm_sudden = confirm_sudden
        self.clear_blocks = clear_blocks
        self.ridge = ridge
        self.min_blocks = min_blocks
        self.rel_floor = rel_floor
        self.envelope = envelope
        #: The smoothed copies of each lagged signal, one per thermal lag (THERMAL_LAGS_S).
        self._ewma: dict[str, list[float]] = {}
        self._last_ts: int | None = None
        self._buf: list[dict[str, float]] = []
        self._learn_rows: list[dict[str, float]] = []
        self._models: dict[str, _Model] = {}
        self._without: dict[tuple[str, str], _Model] = {}
        self._suspects: dict[str, _Suspect] = {}
        self._prev_z: dict[str, float] = {}
        self._prev_level: dict[str, float] = {}
        self._contiguous = False
        self._interval: float | None = None
        self._lagged: set[str] = set()
        for target, partners in PARTNERS.items():
            if _unit(target) == "degC":
                self._lagged.update(partners)
        self._lag_keys = {n: tuple(f"{n}~{tau:.0f}" for tau in THERMAL_LAGS_S) for n in sorted(self._lagged)}
        self._lag_names = list(self._lag_keys)
        assert len(THERMAL_LAGS_S) == 3  # unrolled in _sample
        self._alpha_dt: int | None = None
        self._alphas: list[float] = []

    # -- samples to blocks --

    def _sample(self, r: Reading) -> dict[str, float] | None:
        """Update the smoothed copies; returns a finished block's row, if one is complete."""
        if self._last_ts is not None:
            dt = r.ts_ms - self._last_ts
            if self._interval is None:
                self._interval = float(dt)
            else:
                self._interval += 0.01 * (dt - self._interval)
            gap = dt > 5 * max(self._interval, 1.0)
        else:
            dt, gap = 0, True
        self._last_ts = r.ts_ms
        if dt != self._alpha_dt:  # regular sampling: the same weights sample after sample
            self._alpha_dt = dt
            self._alphas = [1.0 - math.exp(-dt / 1000 / tau) for tau in THERMAL_LAGS_S]
        a0, a1, a2 = self._alphas
        ewma = self._ewma
        values = r.values
        for name in self._lag_names:
            v = values.get(name)
            if v is None:
                continue
            e = ewma.get(name)
            if e is None or gap:
                ewma[name] = [v, v, v]
            else:
                e[0] += a0 * (v - e[0])
                e[1] += a1 * (v - e[1])
                e[2] += a2 * (v - e[2])
        if not r.running or gap:
            self._buf.clear()
            self._contiguous = False
            return None
        buf = self._buf
        buf.append(values)
        if len(buf) < self.block:
            return None
        row = self._block_row(buf)
        keys = self._lag_keys
        for name, e in ewma.items():
            k0, k1, k2 = keys[name]
            row[k0], row[k1], row[k2] = e
        self._buf = []
        return row

    @staticmethod
    def _block_row(buf: list[dict[str, float]]) -> dict[str, float]:
        """The block's medians of the gauges reported in at least half its samples."""
        row: dict[str, float] = {}
        names = {n for s in buf for n in s if n in GAUGES}
        half = len(buf)
        for n in names:
            vals = sorted([s[n] for s in buf if n in s])
            k = len(vals)
            if 2 * k >= half:
                row[n] = vals[k // 2] if k % 2 else 0.5 * (vals[k // 2 - 1] + vals[k // 2])
        return row

    def learn(self, r: Reading) -> None:
        row = self._sample(r)
        if row is not None and len(self._learn_rows) < 20_000:
            self._learn_rows.append(row)

    # -- fitting --

    def _fit(
        self, target: str, feats: Sequence[str], ref: tuple[str, ...], rows: list[dict[str, float]]
    ) -> _Model | None:
        need = [target, *feats, *ref]
        usable = [r for r in rows if all(n in r for n in need)]
        if len(usable) < self.min_blocks:
            return None

        def design(rs: list[dict[str, float]]) -> tuple[FloatArray, FloatArray]:
            base = np.array([sum(r[n] for n in ref) / len(ref) if ref else 0.0 for r in rs])
            y = np.array([r[target] for r in rs]) - base
            cols = []
            for f in feats:
                col = np.array([r[f] for r in rs])
                if ref and _unit(_base(f)) == "degC":
                    col = col - base
                cols.append(col)
            x = np.column_stack(cols) if cols else np.zeros((len(rs), 0))
            return x, y

        def solve(x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, float]:
            mean = x.mean(axis=0) if x.shape[1] else np.zeros(0)
            scale = x.std(axis=0) if x.shape[1] else np.zeros(0)
            scale = np.where(scale > 1e-12, scale, 1.0)
            xs = (x - mean) / scale
            y0 = float(y.mean())
            if xs.shape[1]:
                a = xs.T @ xs + self.ridge * len(y) * np.eye(xs.shape[1])
                coef = np.linalg.solve(a, xs.T @ (y - y0))
            else:
                coef = np.zeros(0)
            return (
                np.asarray(mean, dtype=np.float64),
                np.asarray(scale, dtype=np.float64),
                np.asarray(coef, dtype=np.float64),
                y0,
            )

        x, y = design(usable)
        cut = (2 * len(usable)) // 3
        m1, s1, c1, i1 = solve(x[:cut], y[:cut])
        held = y[cut:] - (((x[cut:] - m1) / s1) @ c1 + i1)
        mean, scale, coef, y0 = solve(x, y)
        inside = y - (((x - mean) / scale) @ coef + y0)
        level = float(np.mean(np.abs(y)))
        # Out-of-sample spread, never below the in-sample one nor a small share of the
        # signal's own level (a relation fitted over a few hours holds that well at best).
        floor = self.rel_floor if _unit(target) == "degC" else self.rel_floor / 10
        sigma = max(_robust_spread(held), float(np.sqrt(np.mean(inside**2))), floor * level, 1e-9)
        lo = x.min(axis=0) if x.shape[1] else np.zeros(0)
        hi = x.max(axis=0) if x.shape[1] else np.zeros(0)
        margin = self.envelope * (hi - lo) + 1e-9 * (1.0 + np.abs(hi))
        # The weather is no operating point: the ambient leaves its learned range every season.
        free = np.array([_base(f) == "ambient_temp" for f in feats], dtype=bool)
        margin = np.where(free, np.inf, margin)
        return _Model(target, tuple(feats), ref, mean, scale, coef, y0, sigma, lo - margin, hi + margin)

    def freeze(self) -> None:
        rows = self._learn_rows
        self._learn_rows = []
        if len(rows) < self.min_blocks:
            return
        counts: dict[str, int] = {}
        for r in rows:
            for n in r:
                counts[n] = counts.get(n, 0) + 1
        avail = {n for n, c in counts.items() if c >= 0.9 * len(rows)}
        varies = {n for n in avail if float(np.std([r[n] for r in rows if n in r])) > 0}
        for target in sorted(n for n in avail if _is_gauge(n) and n in varies):
            partners = [p for p in PARTNERS.get(target, ()) if p in varies and p != target]
            model = self._fit(target, *self._spec(target, partners), rows)
            if model is None:
                continue
            self._models[target] = model
            for p in partners:
                m2 = self._fit(target, *self._spec(target, [q for q in partners if q != p]), rows)
                if m2 is not None:
                    self._without[(target, p)] = m2
        # From now on only the smoothed copies some model uses are kept up to date.
        used = {f for m in [*self._models.values(), *self._without.values()] for f in m.features if "~" in f}
        self._lag_names = [n for n, keys in self._lag_keys.items() if any(k in used for k in keys)]
        self._ewma = {n: e for n, e in self._ewma.items() if n in self._lag_names}

    def _spec(self, target: str, partners: Sequence[str]) -> tuple[list[str], tuple[str, ...]]:
        """Features and reference of a model of ``target`` from ``partners``."""
        temp = _unit(target) == "degC"
        ref: tuple[str, ...] = ()
        if temp and target == "ambient_temp":
            ref = tuple(p for p in partners if _unit(p) == "degC")
        elif temp and "ambient_temp" in partners:
            ref = ("ambient_temp",)
        feats: list[str] = []
        for r in ref:
            # Temperatures follow each other with thermal lags: smoothed copies of the reference.
            feats.extend(f"{r}~{tau:.0f}" for tau in THERMAL_LAGS_S)
        for p in partners:
            if p in ref or (target == "ambient_temp" and _unit(p) == "degC"):
                continue
            feats.append(p)
            if temp:
                feats.extend(f"{p}~{tau:.0f}" for tau in THERMAL_LAGS_S)
        return feats, ref

    # -- judging --

    def _z(self, target: str, row: Mapping[str, float], leave_out: frozenset[str]) -> float | None:
        """Residual of ``target`` in learned spreads, with its model not using ``leave_out``."""
        model = self._models.get(target)
        if model is None:
            return None
        bad = model.inputs & leave_out
        if bad:
            if len(bad) > 1:
                return None
            alt = self._without.get((target, next(iter(bad))))
            if alt is None:
                return None
            model = alt
        pred = model.predict(row)
        if pred is None or target not in row:
            return None
        return (row[target] - pred) / model.sigma

    def _prediction(self, target: str, row: Mapping[str, float], leave_out: frozenset[str]) -> float | None:
        z = self._z(target, row, leave_out)
        model = self._models[target]
        bad = model.inputs & leave_out
        if z is None:
            return None
        m = self._without.get((target, next(iter(bad)))) if bad else model
        return None if m is None else row[target] - z * m.sigma

    def check(self, r: Reading, faulty: frozenset[str]) -> Iterable[Finding]:
        contiguous = self._contiguous
        row = self._sample(r)
        if row is None or not self._models:
            return ()
        self._contiguous = True
        return self._judge(row, r.ts_ms, contiguous, faulty)

    def check_batch(self, b: Batch, faulty: frozenset[str]) -> list[tuple[int, list[Finding]]]:
        """Batch form of :meth:`check` over a plain batch: the smoothed copies over the whole
        batch at once, then each completed block judged; (index, findings) of the samples
        that completed a block with findings."""
        if self._last_ts is None or self._interval is None:
            return self._one_by_one(b, faulty)
        dt = np.diff(b.ts, prepend=np.int64(self._last_ts)).astype(np.float64)
        interval = _ewma(self._interval, dt, 0.01)
        if bool((dt > 5 * np.maximum(interval, 1.0)).any()):
            return self._one_by_one(b, faulty)  # a gap restarts the copies: sample by sample
        names = [name for name in self._lag_names if name in b.index]
        if any(name not in self._ewma for name in names):
            return self._one_by_one(b, faulty)
        t_s = np.cumsum(dt) / 1000.0
        smooth: dict[str, list[list[float]]] = {}
        if names:
            x = b.x[:, [b.index[name] for name in names]]
            starts = np.array([self._ewma[name] for name in names])  # names x lags
            lags = [_ewma_timed(starts[:, k], x, t_s, tau).T.tolist() for k, tau in enumerate(THERMAL_LAGS_S)]
            smooth = {name: [lags[0][i], lags[1][i], lags[2][i]] for i, name in enumerate(names)}
        out: list[tuple[int, list[Finding]]] = []
        buf = self._buf
        contiguous = self._contiguous
        keys = self._lag_keys
        for j, running in enumerate(b.running.tolist()):
            if not running:
                buf = []
                contiguous = False
                continue
            buf.append(b.values[j])  # type: ignore[arg-type]  # plain numbers (Batch.of)
            if len(buf) < self.block:
                continue
            row = self._block_row(buf)
            for name, e in self._ewma.items():
                k0, k1, k2 = keys[name]
                if name in smooth:
                    e0, e1, e2 = smooth[name]
                    row[k0], row[k1], row[k2] = e0[j], e1[j], e2[j]
                else:
                    row[k0], row[k1], row[k2] = e
            buf = []
            if not self._models:
                continue
            found = self._judge(row, b.ts_list[j], contiguous, faulty)
            contiguous = True
            if found:
                out.append((j, found))
        self._buf, self._contiguous = buf, contiguous
        for name, (e0, e1, e2) in smooth.items():
            self._ewma[name] = [e0[-1], e1[-1], e2[-1]]
        self._interval = float(interval[-1])
        self._last_ts = b.ts_list[-1]
        return out

    def _one_by_one(self, b: Batch, faulty: frozenset[str]) -> list[tuple[int, list[Finding]]]:
        out: list[tuple[int, list[Finding]]] = []
        for j, (ts, values) in enumerate(zip(b.ts_list, b.values, strict=True)):
            found = list(self.check(_parse(ts, values), faulty))
            if found:
                out.append((j, found))
        return out

    def _judge(self, row: dict[str, float], ts_ms: int, contiguous: bool, faulty: frozenset[str]) -> list[Finding]:
        """Judge one completed block's row (``contiguous``: the block before it was judged too)."""
        out: list[Finding] = []
        zs: dict[str, float] = {}
        for target in self._models:
            if target in faulty:
                continue
            z = self._z(target, row, faulty)
            if z is not None:
                zs[target] = z
        for target, z in zs.items():
            st = self._suspects.get(target)
            if st is None:
                st = self._suspects[target] = _Suspect()
            if st.active:
                if abs(z) < self.k_iso:
                    st.normal_blocks += 1
                    if st.normal_blocks >= self.clear_blocks:
                        self._suspects[target] = _Suspect()
                        out.append(Finding(target, st.kind, False))
                else:
                    st.normal_blocks = 0
                continue
            if abs(z) < self.k:
                if st.blocks:
                    self._suspects[target] = _Suspect()
                continue
            leave = faulty | {target}
            isolated = True
            for other in self._models:
                if other == target or other in faulty:
                    continue
                zo = self._z(other, row, leave)
                if zo is not None and abs(zo) >= self.k_iso:
                    isolated = False
                    break
            if not isolated:
                self._suspects[target] = _Suspect()
                continue
            if st.blocks == 0:
                prev = self._prev_z.get(target)
                st.since_ms = ts_ms
                # Sudden: from normal to far off in one block, by a clear factor.
                implied = row[target] - z * self._models[target].sigma
                factor = row[target] / implied if implied and row[target] * implied > 0 else 1.0
                st.sudden = (
                    contiguous
                    and prev is not None
                    and abs(prev) < self.k_iso
                    and abs(z - prev) > 2 * self.k
                    and abs(math.log(factor)) > math.log(1.1)
                )
                st.before = self._prev_level.get(target, row[target])
            st.blocks += 1
            # A vibration or temperature rising alone is what an early machine fault looks
            # like too: blamed on the sensor only once it is far off with no trace elsewhere.
            # (Ambient reading low against the machine's temperatures: the machine runs hot.)
            hotter = z < 0 if target == "ambient_temp" else z > 0 and target in CONDITION_SIGNALS
            rising = hotter and not st.sudden
            if rising and not self._models[target].inputs & REDUNDANT.get(target, frozenset()):
                continue
            if st.blocks >= (self.confirm_sudden if st.sudden else self.confirm):
                st.active = True
                st.kind = "scaling" if st.sudden else "drift"
                out.append(Finding(target, st.kind, True, self._detail(target, row, ts_ms, st, faulty)))
        for target, z in zs.items():
            self._prev_z[target] = z
            if target in row and abs(z) < self.k_iso:
                self._prev_level[target] = row[target]
        if not contiguous:
            self._prev_z.clear()
        return out

    def _detail(self, target: str, row: Mapping[str, float], ts_ms: int, st: _Suspect, faulty: frozenset[str]) -> str:
        model = self._models[target]
        partners = sorted({p for p in model.inputs if p not in faulty and p != target})
        said = ", ".join(partners) if partners else "its own learned level"
        pred = self._prediction(target, row, faulty) or 0.0
        y = row[target]
        spread = _with_unit(model.sigma, target)
        if st.kind == "scaling" and pred and y * pred > 0 and abs(math.log(abs(y / pred))) > 0.05:
            return (
                f"{target} reads {_with_unit(y, target)}, {y / pred:.2f} times what {said} imply "
                f"({_with_unit(pred, target)}); it changed at once while they did not: "
                "a wrong transmitter range or unit in the device configuration?"
            )
        gap = y - pred
        word = "higher" if gap > 0 else "lower"
        return (
            f"{target} reads {_with_unit(y, target)}, {_with_unit(abs(gap), target)} {word} than {said} imply "
            f"(normal spread about {spread}), while the machine's other signals agree with each other: "
            f"the sensor is drifting (first seen {_minutes(ts_ms - st.since_ms)} ago)"
        )


# --- the monitor ------------------------------------------------------------------------


def default_checks() -> list[QualityCheck]:
    """The checks a monitor runs unless told otherwise, in the order they are applied."""
    from analytics.reference import ReferenceCheck  # these build on this module's types
    from analytics.standstill import StandstillCheck

    return [
        RangeCheck(),
        DropoutCheck(),
        StuckCheck(),
        SpikeCheck(),
        StandstillCheck(),
        ReferenceCheck(),
        RelationCheck(),
    ]


#: Physical range of every numeric catalogue signal (state signals are not readings).
#: (Infinities are never in range: the bounds are clamped to the largest finite float.)
_BIG = sys.float_info.max
_RANGES: dict[str, tuple[float, float]] = {
    n: (max(s.low, -_BIG), min(s.high, _BIG)) for n, s in SIGNALS.items() if s.kind != "state"
}
_STATES = frozenset(n for n, s in SIGNALS.items() if s.kind == "state") | {"state"}
_NO_RANGE = (-_BIG, _BIG)
_NO_REFS: Mapping[str, float] = MappingProxyType({})
_NONE: frozenset[str] = frozenset()


def _parse(ts_ms: int, values: Mapping[str, Value], refs: Mapping[str, float] | None = None) -> Reading:
    state_value = values.get("state")
    state = state_value if isinstance(state_value, str) else None
    running = state is None or state == "running"
    good: dict[str, float] = {}
    bad: dict[str, float] = {}
    missing: set[str] = set()
    ranges = _RANGES
    for name, raw in values.items():
        if name in _STATES or not isinstance(name, str):
            continue
        if type(raw) is float:
            v = raw
        elif raw is None or isinstance(raw, bool) or not isinstance(raw, int | float):
            missing.add(name)
            continue
        else:
            try:
                v = float(raw)
            except (OverflowError, ValueError):
                v = math.inf if raw > 0 else -math.inf
        low, high = ranges.get(name, _NO_RANGE)
        if low <= v <= high:
            good[name] = v
        elif v != v:  # NaN
            missing.add(name)
        else:
            bad[name] = v
    return Reading(ts_ms, state, running, good, bad, missing, refs or _NO_REFS)


#: The shortest run of samples :meth:`DataQualityMonitor.update_many` judges in columns
#: (shorter ones are cheaper sample by sample).
BATCH_MIN = 24


#: The saved form of a monitor (:meth:`DataQualityMonitor.dumps`): raise it whenever a
#: check's state changes shape, so an older save is refused (and learned afresh).
STATE_FORMAT = b"birlik-quality/1\n"


class DataQualityMonitor:
    """The data-quality checks of one machine, fed its samples in time order.

    The learning period: the checks learn the machine's own spreads and relations
    (assumed healthy; only the physical range is judged then) over ``learn_running_s`` of
    running (6 hours: long enough to see the load vary and part of the daily temperature
    cycle; running time is the time between consecutive running samples, a gap of more
    than 10 minutes not counted) or ``max_learn_samples`` running samples (4,320), whichever
    comes first, and at least ``min_learn_samples`` (800: the relations need 60 blocks of
    12): 1.2 running hours at 1-second samples, 6 at 5-second ones, 13 at 1-minute ones.
    ``learn_running_samples``, when given, sets the period as a count of running samples
    instead.

    :meth:`update` returns the issues raised or cleared by that sample. A sample older
    than or as old as the last one is ignored (it cannot be placed in time order).
    """

    def __init__(
        self,
        *,
        learn_running_samples: int | None = None,
        learn_running_s: float = 6 * 3600.0,
        min_learn_samples: int = 800,
        max_learn_samples: int = 4320,
        checks: Sequence[QualityCheck] | None = None,
    ) -> None:
        self.learn_running_samples = learn_running_samples
        self.learn_running_s = learn_running_s
        self.min_learn_samples = min_learn_samples
        self.max_learn_samples = max_learn_samples
        self._running_s = 0.0
        self._last_running = False
        self.checks: list[QualityCheck] = list(checks) if checks is not None else default_checks()
        self._running_seen = 0
        self._learning = True
        self._last_ts: int | None = None
        self._open: dict[tuple[str, IssueKind], SensorIssue] = {}
        #: The checks (by index) that hold each open issue.
        self._holders: dict[tuple[str, IssueKind], set[int]] = {}
        #: Unexpected errors swallowed by :meth:`update` (should stay 0; logged).
        self.internal_errors = 0
        #: Samples :meth:`update_many` judged in columns.
        self.batched_samples = 0
        # Derived from ``_open``, rebuilt after an issue is raised or cleared.
        self._others: list[frozenset[str]] | None = None
        self._faulty: frozenset[str] | None = None
        self._issues: tuple[SensorIssue, ...] | None = None

    @property
    def learning(self) -> bool:
        return self._learning

    def dumps(self) -> bytes:
        """The monitor as it is, to be saved and loaded again after a restart (:meth:`loads`),
        so what it learned is not learned again from whatever the machine does then."""
        return STATE_FORMAT + zlib.compress(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))

    @staticmethod
    def loads(data: bytes) -> DataQualityMonitor:
        """A monitor saved by :meth:`dumps` (by this release); ValueError when it cannot be used.
        (The save is the worker's own alarm store, as trusted as the worker's configuration.)"""
        if not isinstance(data, bytes) or not data.startswith(STATE_FORMAT):
            raise ValueError("not a saved data-quality monitor of this release")
        try:
            mon = pickle.loads(zlib.decompress(data[len(STATE_FORMAT) :]))
        except Exception as exc:  # corrupt or from other code: learned afresh
            raise ValueError(f"the saved data-quality monitor cannot be read: {exc}") from None
        if not isinstance(mon, DataQualityMonitor):
            raise ValueError("the saved data-quality monitor is something else")
        return mon

    def _learned(self) -> bool:
        if self.learn_running_samples is not None:
            return self._running_seen >= self.learn_running_samples
        seen = self._running_seen
        return seen >= self.min_learn_samples and (
            self._running_s >= self.learn_running_s or seen >= self.max_learn_samples
        )

    @property
    def faulty_signals(self) -> frozenset[str]:
        """Signals under a sensor issue now: leave them out of the machine-condition model."""
        if self._faulty is None:
            self._faulty = frozenset(s for s, _ in self._open)
        return self._faulty

    @property
    def open_issues(self) -> Sequence[SensorIssue]:
        """The issues open now (the same object until one is raised or cleared)."""
        if self._issues is None:
            self._issues = tuple(self._open.values())
        return self._issues

    def update(
        self, ts_ms: int, values: Mapping[str, Value], refs: Mapping[str, float] | None = None
    ) -> list[SensorIssue]:
        """Judge one sample; returns the issues it raised or cleared. ``refs``: what other
        machines' sensors of the same quantity read then (``Reading.refs``). Never raises."""
        try:
            return self._update(ts_ms, values, refs)
        except Exception:  # any input, no crash: a bug here must not stop the analytics
            self.internal_errors += 1
            log.exception("data-quality monitor failed on a sample at %r", ts_ms)
            return []

    def update_many(
        self,
        ts_ms: Sequence[int],
        values: Sequence[Mapping[str, Value]],
        refs: Sequence[Mapping[str, float] | None] | None = None,
    ) -> list[tuple[int, list[SensorIssue]]]:
        """Judge a run of samples, exactly as :meth:`update` one by one would; returns
        ``(index, issues)`` for each sample that raised or cleared any. A plain run (see
        :class:`Batch`) of at least ``BATCH_MIN`` samples is judged in columns while no check
        has anything to decide (the usual case), which is several times faster; anything
        else, sample by sample. Never raises."""
        try:
            if not self._learning and len(ts_ms) >= BATCH_MIN:
                b = Batch.of(ts_ms, values, self._last_ts)
                if b is not None:
                    if refs is not None and len(refs) == len(ts_ms):
                        b.refs = refs
                    done = self._update_batch(b)
                    if done is not None:
                        self.batched_samples += len(ts_ms)
                        return done
        except Exception:  # any input, no crash: a bug here must not stop the analytics
            self.internal_errors += 1
            log.exception("data-quality monitor failed on a batch of %d samples", len(ts_ms))
            return []
        out: list[tuple[int, list[SensorIssue]]] = []
        for i, (ts, v) in enumerate(zip(ts_ms, values, strict=False)):
            issues = self.update(ts, v, refs[i] if refs is not None and i < len(refs) else None)
            if issues:
                out.append((i, issues))
        return out

    def _update_batch(self, b: Batch) -> list[tuple[int, list[SensorIssue]]] | None:
        """The batch form, or None (nothing changed) if some check must go sample by sample."""
        *planned, last = self.checks
        others = self._others
        if others is None:
            others = self._others = self._faulty_for_each()
        commits: list[Commit] = []
        for c, faulty in zip(planned, others, strict=False):
            plan = getattr(c, "plan", None)
            commit = plan(b, faulty) if plan is not None else None
            if commit is None:
                return None
            commits.append(commit)
        judge: Callable[[Batch, frozenset[str]], list[tuple[int, list[Finding]]]] | None
        judge = getattr(last, "check_batch", None)
        if judge is None:
            last_plan = getattr(last, "plan", None)
            last_commit = last_plan(b, others[-1]) if last_plan is not None else None
            if last_commit is None:
                return None
            commits.append(last_commit)
        for commit in commits:
            commit()
        self._last_ts = b.ts_list[-1]
        if judge is None:
            return []
        out: list[tuple[int, list[SensorIssue]]] = []
        i_last = len(self.checks) - 1
        for j, findings in judge(b, others[-1]):
            issues = self._apply(Reading(b.ts_list[j], None, True, {}, {}, set()), [(i_last, f) for f in findings])
            if issues:
                out.append((j, issues))
        return out

    def _update(
        self, ts_ms: int, values: Mapping[str, Value], refs: Mapping[str, float] | None = None
    ) -> list[SensorIssue]:
        if isinstance(ts_ms, bool) or not isinstance(ts_ms, int) or not isinstance(values, Mapping):
            return []
        if self._last_ts is not None and ts_ms <= self._last_ts:
            return []
        last = self._last_ts
        self._last_ts = ts_ms
        r = _parse(ts_ms, values, refs if isinstance(refs, Mapping) else None)
        if self._learning:
            self._running_seen += r.running
            if r.running and self._last_running and last is not None:
                self._running_s += min(ts_ms - last, 600_000) / 1000
            self._last_running = r.running
            for c in self.checks:
                c.learn(r)
            if self._learned():
                self._learning = False
                for c in self.checks:
                    c.freeze()
            # The physical range needs no learning.
            return self._apply(
                r,
                [(i, f) for i, c in enumerate(self.checks) if "out_of_range" in c.kinds for f in c.check(r, _NONE)],
            )
        findings: list[tuple[int, Finding]] = []
        others = self._others
        if others is None:  # the signals under another check's issue, per check (until an issue changes)
            others = self._others = self._faulty_for_each()
        for i, (c, faulty) in enumerate(zip(self.checks, others, strict=True)):
            if findings:
                faulty = faulty | {f.signal for _, f in findings if f.active}
            findings.extend((i, f) for f in c.check(r, faulty))
        return self._apply(r, findings) if findings else []

    def _faulty_for_each(self) -> list[frozenset[str]]:
        """Per check: the signals under an issue another check holds."""
        return [
            frozenset(s for (s, _), holders in self._holders.items() if holders - {i}) for i in range(len(self.checks))
        ]

    def _apply(self, r: Reading, findings: Iterable[tuple[int, Finding]]) -> list[SensorIssue]:
        """Findings of the checks (by their index): an issue is open while any check holds it
        (two checks can see the same problem: a drift against the line's other sensors and
        against the machine's own physics)."""
        out: list[SensorIssue] = []
        for i, f in findings:
            key = (f.signal, f.kind)
            holders = self._holders.get(key)
            if f.active:
                if holders is None:
                    holders = self._holders[key] = set()
                if i not in holders:
                    holders.add(i)
                    self._others = None
                if key not in self._open:
                    issue = SensorIssue(f.signal, f.kind, r.ts_ms, f.detail, "raised", r.ts_ms)
                    self._open[key] = issue
                    out.append(issue)
            elif holders is not None and i in holders:
                holders.discard(i)
                self._others = None
                if not holders:
                    del self._holders[key]
                    if key in self._open:
                        old = self._open.pop(key)
                        out.append(SensorIssue(f.signal, f.kind, old.started_ms, old.detail, "cleared", r.ts_ms))
        if out:
            self._others = self._faulty = self._issues = None
        return out
