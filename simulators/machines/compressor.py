"""Oil-injected screw air compressor with load/unload control."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from birlik.payload import Value
from simulators.faults import Effects
from simulators.machines.base import MachineModel, Wander, current_from_power


class AirCompressor(MachineModel):
    """Loads when the receiver pressure falls to the lower band and unloads at the upper
    band; the receiver pressure integrates delivered minus consumed air. Loaded it draws
    rated power, unloaded about a quarter; discharge and oil temperatures lag behind."""

    kind: ClassVar[str] = "air_compressor"
    signals = (
        "state",
        "speed",
        "load",
        "discharge_pressure",
        "flow",
        "motor_current",
        "power",
        "energy",
        "vibration_rms",
        "discharge_temp",
        "oil_temp",
        "motor_temp",
        "ambient_temp",
    )
    defaults: ClassVar[Mapping[str, float]] = {
        "rated_kw": 55.0,
        "fad_m3h": 540.0,
        "load_bar": 6.5,
        "unload_bar": 7.5,
        "receiver_s_per_bar": 90.0,
        "vibration_mm_s": 2.4,
        "speed_rpm": 2980.0,
    }
    state_durations: ClassVar[Mapping[str, float]] = {"running": 12 * 3600, "idle": 10 * 60}
    effect_signals: ClassVar[Mapping[str, tuple[str, ...]]] = {
        **MachineModel.effect_signals,
        "bearing_heat": ("motor_temp",),  # no bearing sensor: the motor end-shield warms
        "winding_heat": ("discharge_temp", "oil_temp", "motor_temp"),
    }

    def setup(self) -> None:
        self.demand = Wander(self.rng, 0.65, 0.08, 1200)
        self.pressure = self.rng.uniform(self.p["load_bar"], self.p["unload_bar"])
        self.loaded = True

    def initial_rises(self) -> Mapping[str, float]:
        return {"discharge": 55.0, "oil": 45.0, "motor": 40.0}

    def physics(self, t_s: float, dt_s: float, fx: Effects, ambient: float) -> dict[str, Value]:
        p = self.p
        running = self.state == "running"
        demand = min(max(self.demand.step(dt_s), 0.1), 0.98)
        if running:
            if self.pressure <= p["load_bar"]:
                self.loaded = True
            elif self.pressure >= p["unload_bar"]:
                self.loaded = False
            delivered = 1.0 if self.loaded else 0.0
            self.pressure += (delivered - demand) * dt_s / p["receiver_s_per_bar"]
            load = 1.0 if self.loaded else 0.25
            shaft = p["rated_kw"] * load * (0.97 + 0.03 * self.pressure / p["unload_bar"]) * (1 + fx.power_extra)
            power = shaft + self.noise(0.2)
            flow = p["fad_m3h"] * delivered + (self.noise(3) if self.loaded else 0.0)
            speed = p["speed_rpm"] + self.noise(2)
        else:
            self.pressure += (0.0 - demand) * dt_s / p["receiver_s_per_bar"]
            self.pressure = max(self.pressure, 0.0)
            load = power = flow = speed = 0.0
        heat = load if running else 0.0
        return {
            "speed": round(speed, 1),
            "load": round(load * 100, 1),
            "discharge_pressure": round(self.pressure + self.noise(0.02), 3),
            "flow": round(max(flow, 0.0), 1),
            "motor_current": round(current_from_power(max(power, 0.0)), 2),
            "power": round(max(power, 0.0), 3),
            "energy": self._energy(max(power, 0.0), dt_s),
            "vibration_rms": self._vibration(p["vibration_mm_s"] * (0.7 + 0.3 * load), fx, running),
            "discharge_temp": self._thermal("discharge", ambient + 60 * heat + fx.winding_heat, dt_s, 300),
            "oil_temp": self._thermal("oil", ambient + 48 * heat + 0.8 * fx.winding_heat, dt_s, 900),
            "motor_temp": self._thermal("motor", ambient + 42 * heat + fx.winding_heat + fx.bearing_heat, dt_s, 1500),
            "ambient_temp": round(ambient + self.noise(0.1), 2),
        }
