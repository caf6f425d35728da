"""What every machine model shares: operating states, site ambient, thermal lags, noise."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from birlik.payload import Value
from birlik.plant import Machine, Site
from simulators.faults import Effects, Fault

SQRT3 = math.sqrt(3)
LINE_VOLTAGE_V = 400.0
POWER_FACTOR = 0.86


def current_from_power(power_kw: float, *, no_load_a: float = 0.0) -> float:
    """Three-phase motor current for an electrical power at 400 V."""
    if power_kw <= 0:
        return 0.0
    return no_load_a + power_kw * 1000 / (SQRT3 * LINE_VOLTAGE_V * POWER_FACTOR)


def ambient_c(site: Site, t_s: float) -> float:
    """Site ambient temperature with a daily cycle peaking at 15:00 local time."""
    local_hour = (t_s / 3600 + site.utc_offset_h) % 24
    return site.ambient_mean_c + site.ambient_daily_swing_c / 2 * math.sin(2 * math.pi * (local_hour - 9) / 24)


def lag(value: float, target: float, dt_s: float, tau_s: float) -> float:
    """First-order lag: one step of ``value`` toward ``target`` with time constant ``tau_s``."""
    return target + (value - target) * math.exp(-dt_s / tau_s)


class MachineModel:
    """Base of the machine models.

    A model advances in steps of the sample interval and returns one reading per signal.
    Subclasses implement :meth:`physics` (healthy behaviour under the current operating
    state, with the faults' :class:`Effects`) and set the class attributes.
    """

    kind: ClassVar[str] = ""
    signals: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[Mapping[str, float]] = {}
    #: Mean time in each state (s) before leaving it, and where it goes next.
    state_durations: ClassVar[Mapping[str, float]] = {"running": 6 * 3600, "idle": 15 * 60}
    next_state: ClassVar[Mapping[str, str]] = {"running": "idle", "idle": "running"}
    #: Which signals each :class:`Effects` field changes in this model (for the ground truth).
    effect_signals: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "vibration_add": ("vibration_rms",),
        "vibration_bursts": ("vibration_rms",),
        "bearing_heat": ("bearing_temp",),
        "winding_heat": ("motor_temp",),
        "power_extra": ("power", "motor_current", "energy"),
    }

    def __init__(self, machine: Machine, site: Site, faults: Sequence[Fault], *, seed: int, start_s: float) -> None:
        self.machine = machine
        self.site = site
        self.faults = tuple(faults)
        self.rng = random.Random(f"{seed}/{machine.path}")
        # Noise of signals added after the first models comes from a second generator, so
        # adding them left the other signals' values unchanged; the randomness of faults
        # (cavitation surges, bursts) from a third, so a fault leaves the noise of the
        # signals it does not affect exactly as in a healthy twin.
        self.rng_extra = random.Random(f"{seed}/{machine.path}/extra")
        self.rng_fault = random.Random(f"{seed}/{machine.path}/faults")
        self.start_s = start_s
        self.p = {**self.defaults, **{k: float(v) for k, v in machine.params.items()}}
        self.state = "running"
        self.energy_kwh = self.rng.uniform(10_000, 90_000)
        amb = ambient_c(site, start_s)
        # Machines have been running before the simulation starts: temperatures begin warm.
        self.temps: dict[str, float] = {name: amb + rise for name, rise in self.initial_rises().items()}
        self.setup()

    def setup(self) -> None:
        """Kind-specific state (set-points, counters); called at the end of ``__init__``."""

    def initial_rises(self) -> Mapping[str, float]:
        return {}

    def noise(self, sigma: float) -> float:
        return self.rng.gauss(0.0, sigma)

    def _advance_state(self, dt_s: float, tripped: bool) -> None:
        if tripped:
            self.state = "fault"
            return
        if self.state == "fault":
            return
        mean = self.state_durations.get(self.state)
        if mean and self.rng.random() < dt_s / mean:
            self.state = self.next_state[self.state]

    def step(self, t_s: float, dt_s: float) -> dict[str, Value]:
        """Advance by ``dt_s`` to time ``t_s`` (epoch seconds) and return the readings."""
        effects = Effects()
        elapsed = t_s - self.start_s
        for fault in self.faults:
            fault.apply(elapsed, effects)
        self._advance_state(dt_s, effects.tripped)
        values = self.physics(t_s, dt_s, effects, ambient_c(self.site, t_s))
        values["state"] = self.state
        return values

    def physics(self, t_s: float, dt_s: float, fx: Effects, ambient: float) -> dict[str, Value]:
        raise NotImplementedError

    def _energy(self, power_kw: float, dt_s: float) -> float:
        self.energy_kwh += power_kw * dt_s / 3600
        return round(self.energy_kwh, 3)

    def _thermal(self, name: str, target: float, dt_s: float, tau_s: float, sigma: float = 0.1) -> float:
        self.temps[name] = lag(self.temps[name], target, dt_s, tau_s)
        return round(self.temps[name] + self.noise(sigma), 2)

    def _vibration(self, healthy: float, fx: Effects, running: bool, sigma: float = 0.06) -> float:
        if not running:
            return round(abs(self.noise(0.02)), 3)
        vibration = healthy + fx.vibration_add * (1 + self.noise(0.05)) + self.noise(sigma)
        if fx.vibration_bursts > 0 and self.rng_fault.random() < 0.2:
            vibration += fx.vibration_bursts * self.rng_fault.uniform(0.3, 1.0)
        return round(max(0.0, vibration), 3)

    def affected_signals(self, fault: Fault) -> tuple[str, ...]:
        """The signals of this model that ``fault`` changes, in the model's order."""
        touched = {s for effect in fault.effects for s in self.effect_signals.get(effect, ())}
        if fault.trips:
            touched.add("state")
        return tuple(s for s in self.signals if s in touched)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": self.p, "faults": [f.type for f in self.faults]}


class Wander:
    """A slowly wandering set-point (Ornstein-Uhlenbeck process) around ``mean``."""

    def __init__(self, rng: random.Random, mean: float, spread: float, tau_s: float) -> None:
        self.rng, self.mean, self.spread, self.tau_s = rng, mean, spread, tau_s
        self.value = mean

    def step(self, dt_s: float) -> float:
        a = math.exp(-dt_s / self.tau_s)
        self.value = (
            self.mean + (self.value - self.mean) * a + self.spread * math.sqrt(1 - a * a) * self.rng.gauss(0, 1)
        )
        return self.value
