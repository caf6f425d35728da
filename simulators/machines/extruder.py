"""Single-screw extruder for plastic pipe and profile (building materials)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from simulators.faults import Effects
from simulators.machines.base import CHANGEOVER, IDLE, RUNNING, Arr, MachineModel, lag, set_or_lag


class Extruder(MachineModel):
    """The screw turns at the product's set speed; output (kg/h) is proportional to it. The
    melt's viscosity falls as the barrel gets hotter, and sets the drive power (specific
    energy per kg) and the melt pressure at the die (shear-thinning: ~ speed^0.4). The barrel
    heater zones (lumped here into one reported barrel temperature) follow their set-point
    with a first-order lag; the heaters supply the barrel's losses to the room plus what
    the lag demands, minus the screw's shear heat, and their power counts in ``power``
    (``motor_current`` is the main drive's only). Heaters stay on in short stops.

    A product change (``changeover``) stops the screw, swaps die and sizing tools and moves
    the barrel to the new product's set-point. After every start the product is scrap until
    melt and dimensions settle; in steady running a small share is cut off as scrap.
    ``count_good`` and ``count_scrap`` count units of ``kg_per_unit`` (e.g. metres of pipe).
    """

    kind: ClassVar[str] = "extruder"
    signals = (
        "state",
        "speed",
        "load",
        "motor_current",
        "power",
        "energy",
        "melt_pressure",
        "barrel_temp",
        "motor_temp",
        "vibration_rms",
        "count_good",
        "count_scrap",
        "ambient_temp",
    )
    defaults: ClassVar[Mapping[str, float]] = {
        "rated_kw": 90.0,  # main drive
        "screw_rpm": 80.0,  # nominal screw speed
        "output_kg_h_per_rpm": 4.0,  # 320 kg/h at the nominal speed
        "drive_kwh_per_kg": 0.2,  # drive's specific energy at the nominal set-point
        "barrel_c": 200.0,  # barrel set-point of the nominal product
        "heater_kw": 60.0,  # installed heater power of all zones
        "barrel_loss_kw_per_k": 0.08,  # barrel's heat loss to the room per K above ambient
        "barrel_kj_per_k": 1500.0,  # barrel's heat capacity
        "barrel_tau_s": 500.0,  # heater control's time constant toward the set-point
        "melt_bar": 220.0,  # melt pressure at the die, nominal speed and set-point
        "kg_per_unit": 2.5,  # product mass per counted unit (a metre of pipe)
        "scrap_share": 0.01,  # cut-offs and out-of-tolerance pieces in steady running
        "startup_scrap_s": 600.0,  # product made this long after a start is scrap
        "changeover_s": 45 * 60,  # product change: tools swapped, barrel to the new profile
        "changeover_share": 0.4,  # share of stops that are product changes
        "vibration_mm_s": 1.8,
    }
    state_durations: ClassVar[Mapping[str, float]] = {"running": 10 * 3600, "idle": 20 * 60}
    effect_signals: ClassVar[Mapping[str, tuple[str, ...]]] = {
        **MachineModel.effect_signals,
        "bearing_heat": ("motor_temp",),  # the thrust bearing sits in the gearbox: no sensor of its own
        "power_extra": ("power", "load", "motor_current", "energy", "motor_temp"),
    }

    def setup(self) -> None:
        self._new_product()
        self.temps["barrel"] = self.barrel_set
        self.melt = self.p["melt_bar"]
        self.good = int(self.rng.integers(50_000, 2_000_000))
        self.scrap = self.good // 60
        self.unit_fraction = 0.0
        self.since_start = self.p["startup_scrap_s"]  # running and settled when the run begins
        self.changeover_n = max(1, math.ceil(self.p["changeover_s"] / self.dt))
        self.changeover_left = 0

    def initial_rises(self) -> Mapping[str, float]:
        return {"motor": 24.0}

    def _new_product(self) -> None:
        """Set-points of the next product: its screw speed and barrel temperature."""
        self.speed_set = self.p["screw_rpm"] * float(self.rng_state.uniform(0.9, 1.0))
        self.barrel_set = self.p["barrel_c"] + float(self.rng_state.uniform(-8.0, 8.0))

    def _begin_states(self, n: int) -> None:
        self._speed_set = np.empty(n)
        self._barrel_set = np.empty(n)
        self._since = np.zeros(n)

    def _down_states(self, start: int, end: int) -> None:
        self._speed_set[start:end], self._barrel_set[start:end] = self.speed_set, self.barrel_set

    def _repaired(self) -> None:
        self._enter(RUNNING)
        self.since_start = 0.0

    def _run_states(self, codes: Arr, i: int, limit: int) -> None:
        while i < limit:
            left = self.changeover_left if self.state == CHANGEOVER else self.left
            steps = min(limit - i, left)
            codes[i : i + steps] = self.state
            self._speed_set[i : i + steps], self._barrel_set[i : i + steps] = self.speed_set, self.barrel_set
            if self.state == RUNNING:
                self._since[i : i + steps] = self.since_start + self.dt * np.arange(1, steps + 1)
                self.since_start += self.dt * steps
            i += steps
            if self.state == CHANGEOVER:
                self.changeover_left -= steps
                if self.changeover_left == 0:
                    self._enter(RUNNING)
                    self.since_start = 0.0
                continue
            self.left -= steps
            if self.left > 0:
                continue
            if self.state == RUNNING and self.rng_state.random() < self.p["changeover_share"]:
                self.state = CHANGEOVER
                self.changeover_left = self.changeover_n
                self._new_product()
            elif self.state == RUNNING:
                self._enter(IDLE)
            else:
                self._enter(RUNNING)
                self.since_start = 0.0

    def physics(self, t: Arr, fx: Effects, ambient: Arr, codes: Arr) -> dict[str, Arr]:
        p = self.p
        n = len(t)
        running = codes == RUNNING
        before = self.temps["barrel"]
        barrel = lag(before, self._barrel_set, self.dt, p["barrel_tau_s"])
        barrel_before = np.concatenate(([before], barrel[:-1]))
        self.temps["barrel"] = float(barrel[-1])
        barrel_reading = np.round(barrel + self.noise(0.3, n), 2)
        # Hotter melt is thinner: less torque, less pressure at the die.
        thinning = np.exp(-0.012 * (barrel - p["barrel_c"]))
        speed = np.where(running, self._speed_set * (1 + self.noise(0.002, n)), 0.0)
        output_kg_h = p["output_kg_h_per_rpm"] * speed
        drive = p["drive_kwh_per_kg"] * output_kg_h * thinning**0.5 + 0.05 * p["rated_kw"]
        drive = np.where(running, drive * (1 + fx.power_extra) + self.noise(0.3, n), 0.0)
        shear_kw = 0.1 * drive
        target_melt = p["melt_bar"] * (speed / p["screw_rpm"]) ** 0.4 * thinning + self.noise(1.5, n)
        # Stopped, the melt in the die relaxes.
        melt = set_or_lag(self.melt, target_melt, running, np.full(n, 6.0), self.dt, 90)
        self.melt = float(melt[-1])
        good, scrap = self._count(output_kg_h * self.dt / 3600, running)
        # Heaters: the barrel's losses, plus what the approach to the set-point takes, minus shear heat.
        needed = (
            p["barrel_loss_kw_per_k"] * (barrel - ambient)
            + p["barrel_kj_per_k"] * (barrel - barrel_before) / self.dt
            - shear_kw
        )
        heaters = np.clip(needed, 0.0, p["heater_kw"])
        load = drive / p["rated_kw"]
        power = np.maximum(drive, 0.0) + heaters
        return {
            "speed": np.round(speed, 2),
            "load": np.round(load * 100, 1),
            "motor_current": np.round(self.motor_current(drive, running), 2),
            "power": np.round(power, 3),
            "energy": self._energy(power),
            "melt_pressure": np.round(np.maximum(melt, 0.0), 1),
            "barrel_temp": barrel_reading,
            "motor_temp": self._thermal("motor", ambient + 40 * load * load + fx.winding_heat + fx.bearing_heat, 1800),
            "vibration_rms": self._vibration(p["vibration_mm_s"] * (0.5 + 0.5 * speed / p["screw_rpm"]), fx, running),
            "count_good": good,
            "count_scrap": scrap,
            "ambient_temp": np.round(ambient + self.noise(0.1, n), 2),
        }

    def _count(self, made_kg: Arr, running: Arr) -> tuple[Arr, Arr]:
        """Good and scrap counters: units finished in each sample; scrap while settling after a start."""
        made = self.unit_fraction + np.cumsum(np.where(running, made_kg / self.p["kg_per_unit"], 0.0))
        whole = np.floor(made)
        self.unit_fraction = float(made[-1] - whole[-1])
        units = np.diff(whole, prepend=0.0).astype(np.int64)
        settling = self._since < self.p["startup_scrap_s"]
        scrapped = np.where(settling, units, self.rng.binomial(units, self.p["scrap_share"]))
        scrap = self.scrap + np.cumsum(scrapped)
        good = self.good + np.cumsum(units - scrapped)
        self.good, self.scrap = int(good[-1]), int(scrap[-1])
        return good, scrap
