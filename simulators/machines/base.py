"""What every machine model shares: operating states, site ambient, thermal lags, noise.

The models compute their samples in blocks (numpy arrays), carrying their state from one
block to the next: noise comes from per-machine generators, first-order lags and wandering
set-points are linear recurrences solved per block, and the operating state changes at
events drawn ahead (durations), not by a test at every sample. Blocks always have the same
length and start at the same samples, whichever spans a caller asks for: the readings do
not depend on how a run is split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from birlik.plant import Machine, PlantError, Site
from simulators.faults import Effects, Fault, SensorFault, apply_maintenance, parse_maintenance
from simulators.schedule import DayFactor, Schedule, parse_schedule

Arr = npt.NDArray[Any]

SQRT3 = math.sqrt(3)
LINE_VOLTAGE_V = 400.0
#: Power factor of the motors at rated load.
POWER_FACTOR = 0.86
AMPS_PER_KW = 1000 / (SQRT3 * LINE_VOLTAGE_V * POWER_FACTOR)
#: Reactive share of the rated current at rated load (sin phi).
REACTIVE_SHARE = math.sqrt(1 - POWER_FACTOR**2)
#: Current an induction motor draws at no load (its magnetising current), as a share of the
#: rated current: the machine parameter ``no_load_share``, within :data:`NO_LOAD_SHARE_RANGE`.
NO_LOAD_SHARE = 0.35
NO_LOAD_SHARE_RANGE = (0.1, 0.7)

#: Samples a model computes at once.
BLOCK = 1024

STATES = ("running", "idle", "changeover", "fault", "stopped")
RUNNING, IDLE, CHANGEOVER, FAULT, STOPPED = range(5)
#: A stop at least this long is a shutdown (state ``stopped``: planned stop, no orders);
#: a shorter one is ``idle`` (waiting for material, an operator, the next batch).
SHUTDOWN_S = 45 * 60
STATE_CODE = {name: i for i, name in enumerate(STATES)}
STATE_NAMES = np.array(STATES)
NEVER = 1 << 62


def current_from_power(power_kw: float, *, no_load_a: float = 0.0) -> float:
    """Three-phase motor current for an electrical power at 400 V."""
    if power_kw <= 0:
        return 0.0
    return no_load_a + power_kw * AMPS_PER_KW


def currents(power_kw: Arr, no_load_a: float | Arr = 0.0) -> Arr:
    """:func:`current_from_power` of every element."""
    return np.where(power_kw > 0, no_load_a + power_kw * AMPS_PER_KW, 0.0)


def rated_current_a(rated_kw: float) -> float:
    """Rated current of a motor whose electrical power at rated load is ``rated_kw`` (400 V,
    power factor :data:`POWER_FACTOR`)."""
    return rated_kw * AMPS_PER_KW


def motor_currents(power_kw: Arr, running: Arr, *, rated_kw: float, no_load_share: float = NO_LOAD_SHARE) -> Arr:
    """Phase current of an induction motor drawing ``power_kw`` (electrical), 0 where it is
    not ``running``.

    The current has an active part proportional to the power and a reactive one: the
    magnetising current (``no_load_share`` of the rated current, drawn even at no load)
    plus the leakage reactance's share, which grows with the square of the load, so that
    at rated power the current is the rated one at the rated power factor. So a running
    motor draws 30-50 % of its rated current at no load, and the current rises with load
    steeply only above half load."""
    rated_a = rated_current_a(rated_kw)
    load = np.maximum(power_kw, 0.0) / rated_kw
    active = POWER_FACTOR * load
    reactive = no_load_share + (REACTIVE_SHARE - no_load_share) * load * load
    reactive = np.maximum(reactive, min(no_load_share, REACTIVE_SHARE))
    return np.where(running, rated_a * np.hypot(active, reactive), 0.0)


#: Day of the year of the warmest days in Central Asia (late July).
WARMEST_DAY = 201


def ambient_c(site: Site, t_s: Arr) -> Arr:
    """Site ambient temperature: a yearly cycle warmest in late July (Turkestan and
    Syrdarya summers reach 40 degC) and a daily cycle peaking at 15:00 local time."""
    local_hour = (t_s / 3600 + site.utc_offset_h) % 24
    day_of_year = (t_s / 86_400) % 365.25
    seasonal = site.ambient_annual_swing_c / 2 * np.cos(2 * np.pi * (day_of_year - WARMEST_DAY) / 365.25)
    daily = site.ambient_daily_swing_c / 2 * np.sin(2 * np.pi * (local_hour - 9) / 24)
    return site.ambient_mean_c + seasonal + daily


_POWERS: dict[tuple[float, int], Arr] = {}


def recur(y0: float, a: float, u: Arr) -> Arr:
    """``y[n] = a y[n-1] + u[n]`` from ``y[-1] = y0``, solved in closed form in sub-blocks short
    enough that ``a^-m`` stays below 1e6 (relative error ~1e-10)."""
    n = len(u)
    out = np.empty(n)
    if n == 0:
        return out
    if a <= 0.0:
        out[:] = u
        return out
    m = n if a >= 1.0 else max(1, min(n, int(13.8 / -math.log(a))))
    y = float(y0)
    for i in range(0, n, m):
        k = min(m, n - i)
        p = _POWERS.get((a, k))
        if p is None:
            p = _POWERS[(a, k)] = a ** np.arange(1, k + 1, dtype=np.float64)
        seg = p * (y + np.cumsum(u[i : i + k] / p))
        out[i : i + k] = seg
        y = float(seg[-1])
    return out


def lag(y0: float, target: Arr, dt_s: float, tau_s: float) -> Arr:
    """First-order lag from ``y0`` toward ``target`` (one element a step of ``dt_s``)."""
    a = math.exp(-dt_s / tau_s)
    return recur(y0, a, (1 - a) * target)


def segments(mask: Arr) -> list[tuple[int, int]]:
    """The runs of equal values of ``mask``, as (start, end) index pairs."""
    n = len(mask)
    if n == 0:
        return []
    bounds = np.flatnonzero(mask[1:] != mask[:-1]) + 1
    edges = [0, *bounds.tolist(), n]
    return list(itertools.pairwise(edges))


def set_or_lag(y0: float, direct: Arr, set_mask: Arr, target: Arr, dt_s: float, tau_s: float) -> Arr:
    """``direct`` where ``set_mask``, elsewhere a first-order lag toward ``target`` from the last value."""
    out = np.empty(len(direct))
    y = y0
    for s, e in segments(set_mask):
        out[s:e] = direct[s:e] if set_mask[s] else lag(y, target[s:e], dt_s, tau_s)
        y = float(out[e - 1])
    return out


def stream(*parts: object) -> np.random.Generator:
    """A generator seeded from the parts' text: the same parts, the same numbers."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


class MachineModel:
    """Base of the machine models.

    A model computes blocks of samples at a fixed interval (:meth:`take`). Subclasses
    implement :meth:`physics` (healthy behaviour under the operating states, with the
    faults' :class:`Effects`, all as arrays) and set the class attributes.
    """

    kind: ClassVar[str] = ""
    signals: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[Mapping[str, float]] = {}
    #: Mean time in each state (s) before leaving it, and where it goes next.
    state_durations: ClassVar[Mapping[str, float]] = {"running": 6 * 3600, "idle": 15 * 60}
    next_state: ClassVar[Mapping[str, str]] = {"running": "idle", "idle": "running", "stopped": "running"}
    #: Which signals each :class:`Effects` field changes in this model (for the ground truth).
    effect_signals: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "vibration_add": ("vibration_rms",),
        "vibration_bursts": ("vibration_rms",),
        "bearing_heat": ("bearing_temp",),
        "winding_heat": ("motor_temp",),
        "power_extra": ("power", "motor_current", "energy"),
    }

    def __init__(
        self,
        machine: Machine,
        site: Site,
        faults: Sequence[Fault],
        *,
        seed: int,
        start_s: float,
        dt_s: float = 5.0,
        sensor_faults: Sequence[SensorFault] = (),
    ) -> None:
        self.machine = machine
        self.site = site
        self.sensor_faults = tuple(sensor_faults)
        self.dt = dt_s
        # Noise of signals added after the first models comes from a second generator, the
        # randomness of faults (cavitation surges, bursts) from a third, so a fault leaves
        # the noise of the signals it does not affect exactly as in a healthy twin; state
        # changes from a fourth. Every block draws the same counts whatever the states.
        self.rng = stream(seed, machine.path)
        self.rng_extra = stream(seed, machine.path, "extra")
        self.rng_fault = stream(seed, machine.path, "faults")
        self.rng_state = stream(seed, machine.path, "state")
        self.start_s = start_s
        params = dict(machine.params)
        where = f"machine {machine.path}"
        #: The production schedule (opt-in, parameter ``schedule``): None runs as always.
        self.schedule: Schedule | None = None
        if "schedule" in params:
            self.schedule = parse_schedule(params.pop("schedule"), where)
            self._day_factor = DayFactor(seed, site.id, self.schedule.demand_spread)
        #: Maintenance windows (parameter ``maintenance``), seconds since the start: the
        #: machine is out of service (``stopped``) and the faults under way are repaired.
        self.maintenance: tuple[tuple[float, float], ...] = ()
        if "maintenance" in params:
            self.maintenance = parse_maintenance(params.pop("maintenance"), where)
        self.faults = tuple(apply_maintenance(faults, self.maintenance))
        self.p = {
            **self.defaults,
            "no_load_share": NO_LOAD_SHARE,
            **{k: _param(k, v, where) for k, v in params.items()},
        }
        self._check_params(where)
        #: The schedule's demand factor of the block being computed (1 without a schedule).
        self.demand_factor: Arr = np.ones(0)
        self.state = RUNNING
        self.left = self._duration(RUNNING)
        self.energy_kwh = float(self.rng.uniform(10_000, 90_000))
        amb = float(ambient_c(site, np.array([start_s]))[0])
        # Machines have been running before the simulation starts: temperatures begin warm.
        self.temps: dict[str, float] = {name: amb + rise for name, rise in self.initial_rises().items()}
        #: Sample index ranges [from, to) in which the machine is down after a trip, until its repair.
        self.down = _down_windows(self.faults, dt_s)
        self._maintenance_k = [(_sample(a, dt_s), _sample(b, dt_s)) for a, b in self.maintenance]
        self.k = 0  # index of the next sample computed
        self._block: dict[str, Arr] = {}
        self._pos = 0
        self.setup()

    def _check_params(self, where: str) -> None:
        share = self.p["no_load_share"]
        low, high = NO_LOAD_SHARE_RANGE
        if not low <= share <= high:
            raise PlantError(
                f"{where}: 'no_load_share' (current at no load as a share of the rated current) must be "
                f"between {low:g} and {high:g}, got {share:g}"
            )
        if self.p["rated_kw"] <= 0:
            raise PlantError(f"{where}: 'rated_kw' must be positive, got {self.p['rated_kw']:g}")

    @property
    def rated_current_a(self) -> float:
        """The motor's (the main drive's) rated current, from its rated power."""
        return rated_current_a(self.p["rated_kw"])

    def motor_current(self, power_kw: Arr, running: Arr) -> Arr:
        """:func:`motor_currents` of this machine's motor."""
        return motor_currents(power_kw, running, rated_kw=self.p["rated_kw"], no_load_share=self.p["no_load_share"])

    def setup(self) -> None:
        """Kind-specific state (set-points, counters); called at the end of ``__init__``."""

    def initial_rises(self) -> Mapping[str, float]:
        return {}

    def noise(self, sigma: float, n: int) -> Arr:
        return self.rng.normal(0.0, sigma, n)

    def _duration(self, state: int) -> int:
        """Samples the machine stays in ``state`` (a geometric draw), if it leaves it at random."""
        mean = self.state_durations.get(STATES[state])
        if not mean:
            return NEVER
        return int(self.rng_state.geometric(min(1.0, self.dt / mean)))

    def _enter(self, state: int) -> None:
        self.state = state
        self.left = self._duration(state)
        if state == IDLE and self.left * self.dt >= SHUTDOWN_S:
            self.state = STOPPED  # the same draw, named for what it is: a long stop

    def _states(self, n: int, down: Sequence[tuple[int, int]]) -> Arr:
        """The state of each of the next ``n`` samples; in the ``down`` ranges (block indices,
        in order) the machine is tripped (``fault``), after each it is back in service."""
        codes = np.empty(n, dtype=np.int8)
        self._begin_states(n)
        if self.state == FAULT and not (down and down[0][0] == 0):
            self._repaired()  # repaired at the block boundary
        i = 0
        for start, end in down:
            self._run_states(codes, i, start)
            codes[start:end] = FAULT
            self._down_states(start, end)
            self.state = FAULT
            i = end
            if end < n:
                self._repaired()
        self._run_states(codes, i, n)
        return codes

    def _begin_states(self, n: int) -> None:
        """Per-sample state of a block of ``n`` samples (kind-specific), before :meth:`_run_states`."""

    def _down_states(self, start: int, end: int) -> None:
        """Per-sample state while the machine is down (kind-specific)."""

    def _repaired(self) -> None:
        """Back in service after a repair: the machine starts."""
        self._enter(RUNNING)

    def _run_states(self, codes: Arr, i: int, n: int) -> None:
        """The states of samples ``i`` to ``n`` of the block, with no trip among them."""
        while i < n:
            end = min(n, i + self.left)
            codes[i:end] = self.state
            self.left -= end - i
            i = end
            if self.left == 0:
                self._enter(STATE_CODE[self.next_state[STATES[self.state]]])

    # --- blocks ---------------------------------------------------------------------

    def block(self, n: int) -> dict[str, Arr]:
        """Compute the next ``n`` samples: every signal an array (``state`` as strings)."""
        k = np.arange(self.k, self.k + n, dtype=np.float64)
        elapsed = k * self.dt
        t = self.start_s + elapsed
        fx = Effects.zeros(n)
        for fault in self.faults:
            fault.apply(elapsed, fx)
        codes = self._states(n, _clip_windows(self.down, self.k, n))
        if self.schedule is None:
            self.demand_factor = np.ones(n)
        else:
            self.demand_factor = self.schedule.factors(t, self.site.utc_offset_h, self._day_factor)
            # Off shift (or a day off): a planned stop, unless the machine has tripped.
            codes = np.where((self.demand_factor <= 0) & (codes != FAULT), np.int8(STOPPED), codes).astype(np.int8)
        # Maintenance: out of service, a planned stop (a tripped machine is repaired in it).
        for start, end in _clip_windows(self._maintenance_k, self.k, n):
            codes[start:end] = STOPPED
        # A fault's heat comes from running (friction, losses): a stopped machine cools down.
        running = codes == RUNNING
        fx.bearing_heat = fx.bearing_heat * running
        fx.winding_heat = fx.winding_heat * running
        values = self.physics(t, fx, ambient_c(self.site, t), codes)
        values["state"] = STATE_NAMES[codes]
        for sensor in self.sensor_faults:
            sensor.apply_block(elapsed, values)
        self.k += n
        return values

    def take(self, n: int) -> dict[str, Arr]:
        """The next ``n`` samples, cut from blocks of :data:`BLOCK` samples."""
        parts: list[dict[str, Arr]] = []
        while n > 0:
            size = len(self._block["state"]) if self._block else 0
            if self._pos >= size:
                self._block, self._pos = self.block(BLOCK), 0
                size = BLOCK
            m = min(n, size - self._pos)
            parts.append({name: a[self._pos : self._pos + m] for name, a in self._block.items()})
            self._pos += m
            n -= m
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts if name in p]) for name in parts[0]}

    def physics(self, t: Arr, fx: Effects, ambient: Arr, codes: Arr) -> dict[str, Arr]:
        raise NotImplementedError

    # --- shared pieces ----------------------------------------------------------------

    def _energy(self, power_kw: Arr) -> Arr:
        energy = self.energy_kwh + np.cumsum(power_kw * (self.dt / 3600))
        self.energy_kwh = float(energy[-1])
        return np.round(energy, 3)

    def _thermal(self, name: str, target: Arr, tau_s: float, sigma: float = 0.1) -> Arr:
        temps = lag(self.temps[name], target, self.dt, tau_s)
        self.temps[name] = float(temps[-1])
        return np.round(temps + self.noise(sigma, len(target)), 2)

    def _vibration(self, healthy: Arr, fx: Effects, running: Arr, sigma: float = 0.06) -> Arr:
        n = len(healthy)
        still = np.abs(self.noise(0.02, n))
        vibration = healthy + fx.vibration_add * (1 + self.noise(0.05, n)) + self.noise(sigma, n)
        burst = (self.rng_fault.random(n) < 0.2) * self.rng_fault.uniform(0.3, 1.0, n)
        vibration = vibration + fx.vibration_bursts * burst
        return np.round(np.where(running, np.maximum(vibration, 0.0), still), 3)

    def affected_signals(self, fault: Fault) -> tuple[str, ...]:
        """The signals of this model that ``fault`` changes, in the model's order."""
        touched = {s for effect in fault.effects for s in self.effect_signals.get(effect, ())}
        if fault.trips:
            touched.add("state")
        return tuple(s for s in self.signals if s in touched)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "params": self.p, "faults": [f.type for f in self.faults]}
        if self.schedule is not None:
            out["schedule"] = dataclasses.asdict(self.schedule)
        return out


def _param(name: str, value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PlantError(f"{where}: parameter {name!r} must be a number, got {value!r}")
    return float(value)


def _sample(t_s: float, dt_s: float) -> int:
    """Index of the first sample at or after ``t_s`` (:data:`NEVER` for an infinite time)."""
    return NEVER if math.isinf(t_s) else max(0, math.ceil(t_s / dt_s - 1e-9))


def _down_windows(faults: Sequence[Fault], dt_s: float) -> list[tuple[int, int]]:
    """Samples [from, to) in which a machine is down: from each tripping fault's failure to
    its repair, overlapping ranges merged."""
    spans = sorted((_sample(f.failure_s, dt_s), _sample(f.repaired_s, dt_s)) for f in faults if f.trips and f.fails)
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _clip_windows(windows: Sequence[tuple[int, int]], k: int, n: int) -> list[tuple[int, int]]:
    """The parts of sample ranges inside the block of samples ``k`` to ``k + n``, in block indices."""
    return [(max(a, k) - k, min(b, k + n) - k) for a, b in windows if a < k + n and b > k]


class Wander:
    """A slowly wandering set-point (Ornstein-Uhlenbeck process) around ``mean``."""

    def __init__(self, rng: np.random.Generator, mean: float, spread: float, tau_s: float, dt_s: float) -> None:
        self.rng, self.mean, self.spread, self.tau_s = rng, mean, spread, tau_s
        self.a = math.exp(-dt_s / tau_s)
        self.value = mean

    def block(self, n: int) -> Arr:
        a = self.a
        u = (1 - a) * self.mean + self.spread * math.sqrt(1 - a * a) * self.rng.standard_normal(n)
        values = recur(self.value, a, u)
        self.value = float(values[-1])
        return values
