"""Centrifugal pump driven by an induction motor at fixed speed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from birlik.payload import Value
from simulators.faults import Effects
from simulators.machines.base import MachineModel, Wander, current_from_power


class CentrifugalPump(MachineModel):
    """Flow follows process demand; head follows the pump curve H = H0 (1 - 0.35 (Q/Qbep)^2);
    shaft power is hydraulic power over efficiency; temperatures lag toward load-dependent
    equilibria above ambient."""

    kind: ClassVar[str] = "centrifugal_pump"
    signals = (
        "state",
        "speed",
        "flow",
        "suction_pressure",
        "discharge_pressure",
        "motor_current",
        "power",
        "energy",
        "vibration_rms",
        "bearing_temp",
        "motor_temp",
        "ambient_temp",
    )
    defaults: ClassVar[Mapping[str, float]] = {
        "rated_kw": 22.0,
        "speed_rpm": 2950.0,
        "bep_flow_m3h": 120.0,
        "shutoff_head_m": 62.0,
        "efficiency": 0.74,
        "vibration_mm_s": 1.9,
        "suction_bar": 0.6,
    }
    state_durations: ClassVar[Mapping[str, float]] = {"running": 8 * 3600, "idle": 20 * 60}

    def initial_rises(self) -> Mapping[str, float]:
        return {"bearing": 22.0, "motor": 38.0}

    def setup(self) -> None:
        self.demand = Wander(self.rng, 0.85, 0.05, 1800)

    def physics(self, t_s: float, dt_s: float, fx: Effects, ambient: float) -> dict[str, Value]:
        p = self.p
        running = self.state == "running"
        demand = self.demand.step(dt_s)
        suction = p["suction_bar"] + self.noise(0.01)
        if running:
            q = max(0.0, p["bep_flow_m3h"] * demand + self.noise(0.6))
            x = q / p["bep_flow_m3h"]
            head = p["shutoff_head_m"] * (1 - 0.35 * x * x)
            shaft_kw = 9.81 * (q / 3600) * head / p["efficiency"] + 0.12 * p["rated_kw"]
            power = shaft_kw / 0.93 + self.noise(0.05)
            load = power / p["rated_kw"]
            discharge = suction + 0.0981 * head + self.noise(0.02)
            speed = p["speed_rpm"] * (1 - 0.01 * load) + self.noise(1.5)
        else:
            q = head = power = load = speed = 0.0
            discharge = suction + self.noise(0.01)
        return {
            "speed": round(speed, 1),
            "flow": round(q, 2),
            "suction_pressure": round(suction, 3),
            "discharge_pressure": round(discharge, 3),
            "motor_current": round(current_from_power(power, no_load_a=0.0) + (self.noise(0.15) if running else 0), 2),
            "power": round(max(power, 0.0), 3),
            "energy": self._energy(max(power, 0.0), dt_s),
            "vibration_rms": self._vibration(p["vibration_mm_s"] * (0.75 + 0.25 * load), fx, running),
            "bearing_temp": self._thermal("bearing", ambient + 25 * load + fx.bearing_heat, dt_s, 1200),
            "motor_temp": self._thermal("motor", ambient + 45 * load * load + fx.winding_heat, dt_s, 1800),
            "ambient_temp": round(ambient + self.noise(0.1), 2),
        }
