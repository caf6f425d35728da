"""Faults injected into a simulated plant: machine faults that develop, sensor faults, and
random scenarios drawn from a seed.

A **machine fault** has a start (it begins to develop) and a failure time. Its progress
rises from 0 at the start to 1 at failure along a curve typical of the failure mode, times
its ``severity`` (0-1, default 1); the machine model turns it into physical effects
(:class:`Effects`) on its signals. At failure a fault that ``trips`` stops the machine;
one that does not stays at full strength (a machine does not heal itself) until it is
repaired: optionally at ``repaired_at``, or by a maintenance window of the machine
(:func:`parse_maintenance`), from when its progress is 0 again (the worn part is new) and a
tripped machine is back in service.

A **sensor fault** leaves the machine healthy and falsifies one signal's readings after the
physics (stuck, drift, spikes, dropout, wrong scaling), between its start and end.

Times are seconds since the start of the run.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from birlik.plant import Plant, PlantError, parse_duration
from birlik.signals import SIGNALS
from birlik.topics import MachinePath

PUMP = "centrifugal_pump"
Arr = npt.NDArray[Any]


@dataclass
class Effects:
    """What the active machine faults do to a machine, one element per sample of a block."""

    vibration_add: Arr  # mm/s RMS added to the healthy vibration
    vibration_bursts: Arr  # mm/s: size of random vibration bursts (cavitation)
    bearing_heat: Arr  # K added to the bearing's equilibrium temperature
    winding_heat: Arr  # K added to motor / discharge / oil equilibrium temperatures
    power_extra: Arr  # extra shaft power as a share of the healthy one (friction)
    flow_loss: Arr  # share of the flow lost (pump)
    flow_fluctuation: Arr  # relative standard deviation of flow and head (pump)
    strainer_clogging: Arr  # 0 clean .. 1 fully fouled suction strainer (pump)

    @classmethod
    def zeros(cls, n: int) -> Effects:
        return cls(*(np.zeros(n) for _ in range(8)))


@dataclass(frozen=True)
class Fault:
    """A developing fault on one machine. Times are seconds since the start of the run."""

    type: ClassVar[str] = ""
    #: Progress from which the fault is visible in the signals in principle.
    detectable_at: ClassVar[float] = 0.1
    #: The :class:`Effects` fields the fault changes: the model maps them to its signals.
    effects: ClassVar[tuple[str, ...]] = ()
    #: Machine kinds the fault applies to (empty: every kind).
    kinds: ClassVar[tuple[str, ...]] = ()
    category: ClassVar[str] = "machine"

    start_s: float
    failure_s: float
    #: Strength at failure, 0-1: scales every effect.
    scale: float = 1.0
    #: Whether the machine trips at failure.
    trips: bool = True
    #: When the fault is repaired (infinite: never): from then on its progress is 0.
    repaired_s: float = math.inf

    @property
    def fails(self) -> bool:
        """Whether the fault reaches its failure before it is repaired."""
        return self.failure_s < self.repaired_s

    @property
    def end_s(self) -> float:
        """End of the fault's development: its failure, or its repair if that comes first."""
        return min(self.failure_s, self.repaired_s)

    def severity(self, t_s: float) -> float:
        """Progress of the fault at ``t_s``: 0 before the start, 1 at failure, 0 from the repair."""
        return float(self.severities(np.array([t_s], dtype=np.float64))[0])

    def severities(self, t_s: Arr) -> Arr:
        """:meth:`severity` at every element of ``t_s``."""
        return np.where(t_s >= self.repaired_s, 0.0, self._progress(t_s))

    def _progress(self, t_s: Arr) -> Arr:
        """Progress as if the fault were never repaired."""
        x = np.maximum(t_s - self.start_s, 0.0) / (self.failure_s - self.start_s)
        return np.where(t_s <= self.start_s, 0.0, np.minimum(1.0, self._curve(x)))

    def _curve(self, x: Arr) -> Arr:
        return x

    def level(self, t_s: float) -> float:
        """Strength of the effects at ``t_s``: progress times :attr:`scale`."""
        return self.scale * self.severity(t_s)

    @property
    def detectable(self) -> bool:
        """Whether the strength reaches :attr:`detectable_at` (before a repair)."""
        return self.scale >= self.detectable_at and self._detectable_s() < self.repaired_s

    def _detectable_s(self) -> float:
        lo, hi = self.start_s, self.failure_s
        for _ in range(50):
            mid = (lo + hi) / 2
            level = self.scale * float(self._progress(np.array([mid]))[0])
            lo, hi = (mid, hi) if level < self.detectable_at else (lo, mid)
        return hi

    def detectable_s(self) -> float:
        """First time the strength reaches :attr:`detectable_at` (the end, :attr:`end_s`, if it never does)."""
        if not self.detectable:
            return self.end_s
        return self._detectable_s()

    def apply(self, t_s: Arr, effects: Effects) -> None:
        """Add the effects at every element of ``t_s`` (tripping is the model's business)."""
        if np.any((t_s > self.start_s) & (t_s < self.repaired_s)):
            self._apply(self.scale * self.severities(t_s), effects)

    def _apply(self, s: Arr, effects: Effects) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class BearingWear(Fault):
    """Rolling-element bearing wear: vibration and bearing temperature rise slowly, then
    faster, as spalls grow (progress ~ x^2), until the bearing seizes."""

    type: ClassVar[str] = "bearing_wear"
    effects: ClassVar[tuple[str, ...]] = ("vibration_add", "bearing_heat")

    def _curve(self, x: Arr) -> Arr:
        return x * x

    def _apply(self, s: Arr, effects: Effects) -> None:
        effects.vibration_add += 7.0 * s
        effects.bearing_heat += 32.0 * s


@dataclass(frozen=True)
class CoolingFailure(Fault):
    """Cooling degrades (fouled cooler, failing fan): winding, oil and discharge temperatures
    climb toward the trip limit (progress ~ 1 - e^-3x, fast at first, then levelling)."""

    type: ClassVar[str] = "cooling_failure"
    effects: ClassVar[tuple[str, ...]] = ("winding_heat", "vibration_add")

    def _curve(self, x: Arr) -> Arr:
        return np.asarray((1 - np.exp(-3 * x)) / (1 - math.exp(-3)))

    def _apply(self, s: Arr, effects: Effects) -> None:
        effects.winding_heat += 40.0 * s
        effects.vibration_add += 0.3 * s


@dataclass(frozen=True)
class Overheating(CoolingFailure):
    """Cooling lost at once (fan stopped, cooling water shut off): the heat load is there
    from the start, so temperatures climb with the machine's own thermal time constants
    (the first-order lags of the model) toward a hotter equilibrium than a fouled cooler
    gives, until the over-temperature trip at failure."""

    type: ClassVar[str] = "overheating"

    def _curve(self, x: Arr) -> Arr:
        return np.asarray(np.minimum(1.0, 50 * x))  # a step, smoothed over the first 2 % of the window

    def _apply(self, s: Arr, effects: Effects) -> None:
        effects.winding_heat += 55.0 * s
        effects.vibration_add += 0.2 * s


@dataclass(frozen=True)
class Imbalance(Fault):
    """Mass imbalance of the rotor (deposits, erosion, a lost balance weight): vibration at
    1x running speed rises steadily, independent of load; the bearing warms slightly."""

    type: ClassVar[str] = "imbalance"
    effects: ClassVar[tuple[str, ...]] = ("vibration_add", "bearing_heat")

    def _apply(self, s: Arr, effects: Effects) -> None:
        effects.vibration_add += 6.0 * s
        effects.bearing_heat += 4.0 * s


@dataclass(frozen=True)
class Misalignment(Fault):
    """Shaft misalignment at the coupling (soft foot, thermal growth, worn coupling): more
    vibration (2x and axial), a warmer bearing, and friction that raises power and current."""

    type: ClassVar[str] = "misalignment"
    effects: ClassVar[tuple[str, ...]] = ("vibration_add", "bearing_heat", "power_extra")

    def _apply(self, s: Arr, effects: Effects) -> None:
        effects.vibration_add += 2.5 * s
        effects.bearing_heat += 8.0 * s
        effects.power_extra += 0.05 * s


@dataclass(frozen=True)
class Cavitation(Fault):
    """Pump cavitation (falling suction head, warm fluid): vapour bubbles collapse on the
    impeller. Flow and discharge pressure fluctuate more and more, the mean flow drops a
    little, and vibration rises with random bursts. A cavitating pump usually keeps running."""

    type: ClassVar[str] = "cavitation"
    effects: ClassVar[tuple[str, ...]] = ("flow_fluctuation", "flow_loss", "vibration_add", "vibration_bursts")
    kinds: ClassVar[tuple[str, ...]] = (PUMP,)
    trips: bool = False

    def _apply(self, s: Arr, effects: Effects) -> None:
        effects.flow_fluctuation += 0.07 * s
        effects.flow_loss += 0.06 * s
        effects.vibration_add += 1.5 * s
        effects.vibration_bursts += 5.0 * s


@dataclass(frozen=True)
class CloggedFilter(Fault):
    """The pump's suction strainer fouls: its pressure drop rises (slowly, then faster as the
    cake closes the mesh, progress ~ x^2), the suction pressure and the flow fall, and with
    less flow the pump draws a little less power."""

    type: ClassVar[str] = "clogged_filter"
    effects: ClassVar[tuple[str, ...]] = ("strainer_clogging", "flow_loss")
    kinds: ClassVar[tuple[str, ...]] = (PUMP,)
    trips: bool = False

    def _curve(self, x: Arr) -> Arr:
        return x * x

    def _apply(self, s: Arr, effects: Effects) -> None:
        effects.strainer_clogging += s
        effects.flow_loss += 0.2 * s


FAULT_TYPES: dict[str, type[Fault]] = {
    f.type: f for f in (BearingWear, CoolingFailure, Overheating, Imbalance, Misalignment, Cavitation, CloggedFilter)
}


# --- sensor faults ----------------------------------------------------------------------


@dataclass
class SensorFault:
    """A wrong measurement of one signal between ``start_s`` and ``end_s``; the machine is fine.

    :meth:`apply_block` changes a block of readings in place, after the physics. ``seed``
    makes any randomness (spikes) reproducible.
    """

    type: ClassVar[str] = ""
    category: ClassVar[str] = "sensor"
    #: Share of the window after which the fault is visible in principle.
    detectable_after: ClassVar[float] = 0.0

    signal: str
    start_s: float
    end_s: float
    seed: str = ""

    def active(self, t_s: Arr) -> Arr:
        return (self.start_s <= t_s) & (t_s < self.end_s)

    def detectable_s(self) -> float:
        return self.start_s + self.detectable_after * (self.end_s - self.start_s)

    def apply_block(self, t_s: Arr, values: MutableMapping[str, Arr]) -> None:
        """Falsify the readings of a block (``t_s``: each sample's seconds since the start)."""
        value = values.get(self.signal)
        if value is None or value.dtype.kind not in "iuf":
            return
        active = self.active(t_s)
        if not active.any():
            return
        idx = np.flatnonzero(active)
        falsified = self._falsify(t_s[idx], value[idx].astype(np.float64))
        out = value.copy()
        out[idx] = np.rint(falsified) if value.dtype.kind in "iu" else np.round(falsified, 4)
        values[self.signal] = out

    def _falsify(self, t_s: Arr, value: Arr) -> Arr:
        raise NotImplementedError


@dataclass
class Stuck(SensorFault):
    """The reading freezes at its value at the onset (a hung transmitter or a stale register)."""

    type: ClassVar[str] = "stuck"
    _held: float | None = field(default=None, init=False, repr=False)

    def _falsify(self, t_s: Arr, value: Arr) -> Arr:
        if self._held is None:
            self._held = float(value[0])
        return np.full(len(value), self._held)


@dataclass
class Drift(SensorFault):
    """An additive error growing linearly from 0 at the start to ``amount`` at the end
    (ageing sensing element, a thermocouple junction going bad)."""

    type: ClassVar[str] = "drift"
    detectable_after: ClassVar[float] = 0.1
    amount: float = 1.0

    def _falsify(self, t_s: Arr, value: Arr) -> Arr:
        return value + self.amount * (t_s - self.start_s) / (self.end_s - self.start_s)


@dataclass
class Spikes(SensorFault):
    """Isolated spikes of ``amount`` added to single readings, at random times with a mean
    ``rate`` per hour (electrical interference, a loose connector)."""

    type: ClassVar[str] = "spikes"
    amount: float = 10.0
    rate: float = 12.0
    _next_s: float | None = field(default=None, init=False, repr=False)
    _rng: random.Random = field(default_factory=random.Random, init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng.seed(f"spikes/{self.seed}")

    def _falsify(self, t_s: Arr, value: Arr) -> Arr:
        out = value.copy()
        if self._next_s is None:
            self._next_s = self.start_s + self._rng.expovariate(self.rate / 3600)
        while True:
            i = int(np.searchsorted(t_s, self._next_s, side="left"))  # the first sample at or after it
            if i >= len(t_s):
                return out
            out[i] += self.amount
            while self._next_s <= t_s[i]:  # several spikes inside one sample interval are one spike
                self._next_s += self._rng.expovariate(self.rate / 3600)


@dataclass
class Dropout(SensorFault):
    """The signal is missing from the readings (broken wire, sensor offline): NaN in a block,
    the key absent from a sample's readings."""

    type: ClassVar[str] = "dropout"

    def apply_block(self, t_s: Arr, values: MutableMapping[str, Arr]) -> None:
        value = values.get(self.signal)
        active = self.active(t_s)
        if value is not None and active.any():
            values[self.signal] = np.where(active, np.nan, value.astype(np.float64))


@dataclass
class Scaling(SensorFault):
    """Readings multiplied by ``factor``: a wrong transmitter range or unit in the device
    configuration (0-16 bar configured as 0-10 bar reads 1.6 times too little: factor 0.625)."""

    type: ClassVar[str] = "scaling"
    factor: float = 2.0

    def _falsify(self, t_s: Arr, value: Arr) -> Arr:
        return value * self.factor


SENSOR_FAULT_TYPES: dict[str, type[SensorFault]] = {f.type: f for f in (Stuck, Drift, Spikes, Dropout, Scaling)}


# --- the plant file -------------------------------------------------------------------


def _number(spec: Mapping[str, Any], key: str, where: str, default: float, low: float = -math.inf) -> float:
    value = spec.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < low:
        bound = "" if low == -math.inf else f" >= {low:g}"
        raise PlantError(f"{where}: {key!r} must be a number{bound}, got {value!r}")
    return float(value)


def _window(spec: Mapping[str, Any], where: str, end_key: str) -> tuple[float, float]:
    start = parse_duration(spec.get("start", 0), f"{where}: start")
    if end_key in spec:
        end = parse_duration(spec[end_key], f"{where}: {end_key}")
    else:
        end = start + parse_duration(spec.get("duration", "1h"), f"{where}: duration")
    if end <= start:
        raise PlantError(f"{where}: {end_key} ({end:g} s) must come after start ({start:g} s)")
    return start, end


def is_sensor_fault(spec: Mapping[str, Any]) -> bool:
    return spec.get("type") in SENSOR_FAULT_TYPES


def parse_fault(spec: Mapping[str, Any], where: str, *, kind: str | None = None) -> Fault:
    """A machine fault from its plant-file mapping, e.g. ``{type: imbalance, start: 10m, failure: 2h}``."""
    name = spec.get("type")
    if name not in FAULT_TYPES:
        known = ", ".join([*FAULT_TYPES, *SENSOR_FAULT_TYPES])
        raise PlantError(f"{where}: unknown fault type {name!r} (known: {known})")
    cls = FAULT_TYPES[name]
    if kind is not None and cls.kinds and kind not in cls.kinds:
        raise PlantError(f"{where}: fault {name} applies to {', '.join(cls.kinds)} only, not to {kind}")
    unknown = set(spec) - {"type", "start", "failure", "duration", "severity", "trips", "repaired_at"}
    if unknown:
        raise PlantError(f"{where}: unknown keys {', '.join(sorted(unknown))} for fault {name}")
    start, failure = _window(spec, where, "failure")
    scale = _number(spec, "severity", where, 1.0, 0.0)
    if scale > 1:
        raise PlantError(f"{where}: 'severity' must be between 0 and 1, got {scale:g}")
    trips = spec.get("trips", cls.trips)
    if not isinstance(trips, bool):
        raise PlantError(f"{where}: 'trips' must be true or false, got {trips!r}")
    repaired = math.inf
    if "repaired_at" in spec:
        repaired = parse_duration(spec["repaired_at"], f"{where}: repaired_at")
        if repaired <= start:
            raise PlantError(f"{where}: repaired_at ({repaired:g} s) must come after start ({start:g} s)")
    return cls(start, failure, scale, trips, repaired)


MAINTENANCE_KEYS = {"start", "end", "duration"}


def parse_maintenance(spec: Any, where: str) -> tuple[tuple[float, float], ...]:
    """A machine's maintenance windows (machine parameter ``maintenance``), in time order:
    a list of ``{start: 10d, duration: 8h}`` (or ``end``), seconds since the start of the run.

    During a window the machine is out of service (state ``stopped``, a planned stop); every
    machine fault that began before the window's end is repaired (:func:`apply_maintenance`)."""
    if not isinstance(spec, list) or not all(isinstance(w, dict) for w in spec):
        raise PlantError(f"{where}: 'maintenance' must be a list of windows such as {{start: 10d, duration: 8h}}")
    windows = []
    for i, w in enumerate(spec):
        ww = f"{where}: maintenance[{i}]"
        unknown = set(w) - MAINTENANCE_KEYS
        if unknown:
            raise PlantError(f"{ww}: unknown keys {', '.join(sorted(unknown))} (known: start, end, duration)")
        if "start" not in w or not ({"end", "duration"} & set(w)):
            raise PlantError(f"{ww}: a maintenance window needs 'start' and 'end' or 'duration'")
        if {"end", "duration"} <= set(w):
            raise PlantError(f"{ww}: give 'end' or 'duration', not both")
        windows.append(_window(w, ww, "end"))
    windows.sort()
    for (s0, e0), (s1, _) in itertools.pairwise(windows):
        if s1 < e0:
            raise PlantError(f"{where}: maintenance windows overlap ({s0:g}-{e0:g} s and one from {s1:g} s)")
    return tuple(windows)


def apply_maintenance(faults: Sequence[Fault], windows: Sequence[tuple[float, float]]) -> list[Fault]:
    """The machine faults with their repairs by the maintenance windows: the first window
    that ends after a fault began repairs it, at the window's start (at the fault's start if
    it began inside the window), unless the fault's own ``repaired_at`` comes earlier."""
    out = []
    for fault in faults:
        repaired = fault.repaired_s
        for start, end in windows:
            if end > fault.start_s:
                repaired = min(repaired, max(start, fault.start_s))
                break
        out.append(fault if repaired == fault.repaired_s else dataclasses.replace(fault, repaired_s=repaired))
    return out


def parse_sensor_fault(
    spec: Mapping[str, Any], where: str, *, signals: Sequence[str] | None = None, seed: str = ""
) -> SensorFault:
    """A sensor fault from its plant-file mapping, e.g. ``{type: stuck, signal: bearing_temp,
    start: 30m, duration: 20m}``. ``signals``: the machine's signals, to check the name against."""
    name = spec.get("type")
    if name not in SENSOR_FAULT_TYPES:
        raise PlantError(f"{where}: unknown sensor fault type {name!r} (known: {', '.join(SENSOR_FAULT_TYPES)})")
    cls = SENSOR_FAULT_TYPES[name]
    signal = spec.get("signal")
    numeric = [s for s in signals or SIGNALS if s in SIGNALS and SIGNALS[s].is_numeric]
    if signal not in numeric:
        raise PlantError(f"{where}: sensor fault {name} needs 'signal', one of {', '.join(numeric)}; got {signal!r}")
    own = [f.name for f in dataclasses.fields(cls)[4:] if f.init]
    unknown = set(spec) - {"type", "signal", "start", "end", "duration", *own}
    if unknown:
        raise PlantError(f"{where}: unknown keys {', '.join(sorted(unknown))} for sensor fault {name}")
    start, end = _window(spec, where, "end")
    params = {key: _number(spec, key, where, getattr(cls, key)) for key in own if key in spec}
    if params.get("rate", 1.0) <= 0:
        raise PlantError(f"{where}: 'rate' (spikes per hour) must be positive")
    return cls(str(signal), start, end, seed, **params)


def split_faults(
    specs: Sequence[Mapping[str, Any]], where: str, *, kind: str, signals: Sequence[str], seed: str = ""
) -> tuple[list[Fault], list[SensorFault]]:
    """A machine's ``faults`` list, parsed into machine faults and sensor faults."""
    machine: list[Fault] = []
    sensor: list[SensorFault] = []
    for i, spec in enumerate(specs):
        w = f"{where}: faults[{i}]"
        if is_sensor_fault(spec):
            sensor.append(parse_sensor_fault(spec, w, signals=signals, seed=f"{seed}/{i}"))
        else:
            machine.append(parse_fault(spec, w, kind=kind))
    return machine, sensor


# --- random scenarios -----------------------------------------------------------------

#: A typical size of a sensor error, per unit: drift amounts and spikes are drawn from it.
TYPICAL_ERROR = {
    "degC": 10.0,
    "mm/s": 2.0,
    "bar": 0.5,
    "A": 8.0,
    "kW": 4.0,
    "rpm": 60.0,
    "m3/h": 15.0,
    "%": 10.0,
    "m/s": 0.2,
    "V": 20.0,
    "g": 0.5,
}
#: Wrong transmitter ranges: 0-16 read as 0-10, 0-10 as 0-16, and so on.
SCALING_FACTORS = (0.25, 0.4, 0.625, 1.6, 2.5, 4.0)
RANDOM_FAULTS_KEYS = {"machine", "sensor", "seed", "within", "machine_types", "sensor_types"}


def random_scenarios(
    plant: Plant,
    seed: int,
    span_s: float,
    *,
    machine_faults: int = 3,
    sensor_faults: int = 2,
    machine_types: Sequence[str] | None = None,
    sensor_types: Sequence[str] | None = None,
) -> dict[MachinePath, list[dict[str, Any]]]:
    """Fault scenarios drawn at random over the whole plant, as plant-file fault mappings.

    Machine faults go to distinct machines without a machine fault in the plant file (one
    each, of a type the machine's kind can have), start in the first 60 % of ``span_s`` and
    fail 20-60 % of the span later, with a severity of 0.5-1. Sensor faults hit a gauge
    signal of any machine for 5-30 % of the span. The same plant, seed and span give the
    same scenarios, whichever site a fleet then simulates.
    """
    from simulators.machines import KINDS  # the models import this module

    rng = random.Random(f"random-faults/{seed}")
    machines = [m for m in plant.machines() if m.kind in KINDS]
    types = list(machine_types or FAULT_TYPES)
    s_types = list(sensor_types or SENSOR_FAULT_TYPES)
    for t in types:
        if t not in FAULT_TYPES:
            raise PlantError(f"{plant.source}: random_faults: unknown machine fault type {t!r}")
    for t in s_types:
        if t not in SENSOR_FAULT_TYPES:
            raise PlantError(f"{plant.source}: random_faults: unknown sensor fault type {t!r}")
    out: dict[MachinePath, list[dict[str, Any]]] = {}

    def minutes(x: float) -> str:
        return f"{x / 60:.1f}m"

    # A machine with a machine fault in the plant file gets no second one: one cause per machine.
    candidates = [
        m
        for m in machines
        if not any(f.get("type") in FAULT_TYPES for f in m.faults)
        and any(not FAULT_TYPES[t].kinds or m.kind in FAULT_TYPES[t].kinds for t in types)
    ]
    for m in rng.sample(candidates, min(machine_faults, len(candidates))):
        fits = [t for t in types if not FAULT_TYPES[t].kinds or m.kind in FAULT_TYPES[t].kinds]
        start = rng.uniform(0.0, 0.6) * span_s
        spec = {
            "type": rng.choice(fits),
            "start": minutes(start),
            "failure": minutes(start + rng.uniform(0.2, 0.6) * span_s),
            "severity": round(rng.uniform(0.5, 1.0), 2),
        }
        out.setdefault(m.path, []).append(spec)
    for _ in range(sensor_faults if machines and s_types else 0):
        m = rng.choice(machines)
        gauges = [s for s in KINDS[m.kind].signals if SIGNALS[s].kind == "gauge"]
        signal = rng.choice(gauges)
        kind = rng.choice(s_types)
        start = rng.uniform(0.0, 0.8) * span_s
        spec = {
            "type": kind,
            "signal": signal,
            "start": minutes(start),
            "duration": minutes(rng.uniform(0.05, 0.3) * span_s),
        }
        typical = TYPICAL_ERROR.get(SIGNALS[signal].unit, 1.0)
        if kind == "drift":
            spec["amount"] = round(rng.choice((-1, 1)) * rng.uniform(0.5, 1.5) * typical, 3)
        elif kind == "spikes":
            spec["amount"] = round(rng.uniform(2, 5) * typical, 3)
            spec["rate"] = round(rng.uniform(4, 30), 1)
        elif kind == "scaling":
            spec["factor"] = rng.choice(SCALING_FACTORS)
        out.setdefault(m.path, []).append(spec)
    return out


def plant_random_scenarios(plant: Plant, *, seed: int) -> dict[MachinePath, list[dict[str, Any]]]:
    """The scenarios a plant file asks for with ``random_faults`` (none if it does not).

    ``random_faults: {machine: 3, sensor: 2, seed: 7, within: 2h}``: without ``seed``, the
    run's seed is used; ``within`` (default 2h) is the span onsets are drawn from.
    """
    spec = plant.random_faults
    if not spec:
        return {}
    where = f"{plant.source or 'plant'}: random_faults"
    unknown = set(spec) - RANDOM_FAULTS_KEYS
    if unknown:
        raise PlantError(f"{where}: unknown keys {', '.join(sorted(unknown))} (known: {', '.join(RANDOM_FAULTS_KEYS)})")
    counts = {k: _number(spec, k, where, 0, 0) for k in ("machine", "sensor")}
    if not all(c.is_integer() for c in counts.values()):
        raise PlantError(f"{where}: 'machine' and 'sensor' must be whole numbers of faults")
    draw_seed = spec.get("seed", seed)
    if not isinstance(draw_seed, int) or isinstance(draw_seed, bool):
        raise PlantError(f"{where}: 'seed' must be an integer, got {draw_seed!r}")
    lists = {}
    for key in ("machine_types", "sensor_types"):
        value = spec.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise PlantError(f"{where}: {key!r} must be a list of fault types")
        lists[key] = value
    return random_scenarios(
        plant,
        draw_seed,
        parse_duration(spec.get("within", "2h"), f"{where}: within"),
        machine_faults=int(counts["machine"]),
        sensor_faults=int(counts["sensor"]),
        machine_types=lists["machine_types"],
        sensor_types=lists["sensor_types"],
    )
