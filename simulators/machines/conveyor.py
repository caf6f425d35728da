"""Belt conveyor drive (motor, gearbox, belt)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from birlik.payload import Value
from simulators.faults import Effects
from simulators.machines.base import MachineModel, Wander, current_from_power


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
        self.material = Wander(self.rng, 0.6, 0.06, 900)
        self.good = self.rng.randrange(10_000, 500_000)
        self.unit_fraction = 0.0

    def initial_rises(self) -> Mapping[str, float]:
        return {"bearing": 18.0, "motor": 30.0}

    def physics(self, t_s: float, dt_s: float, fx: Effects, ambient: float) -> dict[str, Value]:
        p = self.p
        running = self.state == "running"
        material = min(max(self.material.step(dt_s), 0.05), 1.0)
        if running:
            load = 0.3 + 0.6 * material
            power = p["rated_kw"] * load * (1 + fx.power_extra) + self.noise(0.03)
            speed = p["motor_rpm"] * (1 - 0.02 * load) + self.noise(1)
            belt = p["belt_m_s"] * speed / p["motor_rpm"]
            self.unit_fraction += p["units_per_min_full"] * material * dt_s / 60
            whole = int(self.unit_fraction)
            self.good += whole
            self.unit_fraction -= whole
        else:
            load = power = speed = belt = 0.0
        return {
            "speed": round(speed, 1),
            "belt_speed": round(belt, 3),
            "load": round(load * 100, 1),
            "motor_current": round(current_from_power(max(power, 0.0), no_load_a=1.5 if running else 0.0), 2),
            "power": round(max(power, 0.0), 3),
            "energy": self._energy(max(power, 0.0), dt_s),
            "vibration_rms": self._vibration(p["vibration_mm_s"] * (0.7 + 0.3 * load), fx, running),
            "bearing_temp": self._thermal("bearing", ambient + 20 * load + fx.bearing_heat, dt_s, 1200),
            "motor_temp": self._thermal("motor", ambient + 40 * load + fx.winding_heat, dt_s, 1500),
            "count_good": self.good,
            "ambient_temp": round(ambient + self.noise(0.1), 2),
        }
