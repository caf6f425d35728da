"""Belt conveyor drive (motor, gearbox, belt)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from simulators.faults import Effects
from simulators.machines.base import RUNNING, Arr, MachineModel, Wander


class ConveyorDrive(MachineModel):
    """The belt runs at constant speed; the material on it sets the load, which drives
    current, power and the temperatures. Units are counted as they leave the belt."""

    kind: ClassVar[str] = "conveyor_drive"
    signals = (
        "state",
        "speed",
        "belt_speed",
        "load",
        "motor_current",
        "power",
        "energy",
        "vibration_rms",
        "bearing_temp",
        "motor_temp",
        "count_good",
        "ambient_temp",
    )
    defaults: ClassVar[Mapping[str, float]] = {
        "rated_kw": 7.5,
        "belt_m_s": 1.6,
        "motor_rpm": 1460.0,
        "units_per_min_full": 30.0,
        "vibration_mm_s": 1.4,
    }
    state_durations: ClassVar[Mapping[str, float]] = {"running": 5 * 3600, "idle": 12 * 60}

    def setup(self) -> None:
        self.material = Wander(self.rng, 0.6, 0.06, 900, self.dt)
        self.good = int(self.rng.integers(10_000, 500_000))
        self.unit_fraction = 0.0

    def initial_rises(self) -> Mapping[str, float]:
        return {"bearing": 18.0, "motor": 30.0}

    def physics(self, t: Arr, fx: Effects, ambient: Arr, codes: Arr) -> dict[str, Arr]:
        p = self.p
        n = len(t)
        running = codes == RUNNING
        material = np.clip(self.material.block(n) * self.demand_factor, 0.05, 1.0)
        load = np.where(running, 0.3 + 0.6 * material, 0.0)
        power = np.where(running, p["rated_kw"] * load * (1 + fx.power_extra) + self.noise(0.03, n), 0.0)
        speed = np.where(running, p["motor_rpm"] * (1 - 0.02 * load) + self.noise(1, n), 0.0)
        belt = p["belt_m_s"] * speed / p["motor_rpm"]
        made = self.unit_fraction + np.cumsum(np.where(running, p["units_per_min_full"] * material * self.dt / 60, 0.0))
        whole = np.floor(made)
        self.unit_fraction = float(made[-1] - whole[-1])
        good = self.good + whole.astype(np.int64)
        self.good = int(good[-1])
        power = np.maximum(power, 0.0)
        return {
            "speed": np.round(speed, 1),
            "belt_speed": np.round(belt, 3),
            "load": np.round(load * 100, 1),
            "motor_current": np.round(self.motor_current(power, running), 2),
            "power": np.round(power, 3),
            "energy": self._energy(power),
            "vibration_rms": self._vibration(p["vibration_mm_s"] * (0.7 + 0.3 * load), fx, running),
            "bearing_temp": self._thermal("bearing", ambient + 20 * load + fx.bearing_heat, 1200),
            "motor_temp": self._thermal("motor", ambient + 40 * load + fx.winding_heat, 1500),
            "count_good": good,
            "ambient_temp": np.round(ambient + self.noise(0.1, n), 2),
        }
