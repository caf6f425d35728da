"""Oil-injected screw air compressor with load/unload control."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from simulators.faults import Effects
from simulators.machines.base import RUNNING, Arr, MachineModel, Wander, segments


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
        self.demand = Wander(self.rng, 0.65, 0.08, 1200, self.dt)
        self.pressure = float(self.rng.uniform(self.p["load_bar"], self.p["unload_bar"]))
        self.loaded = True

    def initial_rises(self) -> Mapping[str, float]:
        return {"discharge": 55.0, "oil": 45.0, "motor": 40.0}

    def _receiver(self, demand: Arr, running: Arr) -> tuple[Arr, Arr]:
        """Receiver pressure after each step and whether the compressor was loaded in it.

        Load/unload hysteresis by segments: loaded, the pressure rises monotonically until
        it reaches the upper band; unloaded, it falls to the lower band (a search on the
        cumulative sums, not a loop over samples)."""
        p = self.p
        n = len(demand)
        k = self.dt / p["receiver_s_per_bar"]
        pressure = np.empty(n)
        loaded = np.zeros(n, dtype=bool)
        level = self.pressure
        for s, e in segments(running):
            if not running[s]:
                pressure[s:e] = np.maximum(level - np.cumsum(demand[s:e] * k), 0.0)
                level = float(pressure[e - 1])
                continue
            i = s
            while i < e:
                if level <= p["load_bar"]:
                    self.loaded = True
                elif level >= p["unload_bar"]:
                    self.loaded = False
                if self.loaded:
                    path = level + np.cumsum((1.0 - demand[i:e]) * k)
                    steps = int(np.searchsorted(path, p["unload_bar"], side="left")) + 1
                else:
                    path = level - np.cumsum(demand[i:e] * k)
                    steps = int(np.searchsorted(-path, -p["load_bar"], side="left")) + 1
                steps = min(steps, e - i)
                pressure[i : i + steps] = path[:steps]
                loaded[i : i + steps] = self.loaded
                level = float(path[steps - 1])
                i += steps
        self.pressure = level
        return pressure, loaded

    def physics(self, t: Arr, fx: Effects, ambient: Arr, codes: Arr) -> dict[str, Arr]:
        p = self.p
        n = len(t)
        running = codes == RUNNING
        demand = np.clip(self.demand.block(n) * self.demand_factor, 0.1, 0.98)
        pressure, loaded = self._receiver(demand, running)
        load = np.where(running, np.where(loaded, 1.0, 0.25), 0.0)
        shaft = p["rated_kw"] * load * (0.97 + 0.03 * pressure / p["unload_bar"]) * (1 + fx.power_extra)
        power = np.where(running, np.maximum(shaft + self.noise(0.2, n), 0.0), 0.0)
        flow = np.where(loaded, p["fad_m3h"] + self.noise(3, n), 0.0)
        speed = np.where(running, p["speed_rpm"] + self.noise(2, n), 0.0)
        heat = load
        return {
            "speed": np.round(speed, 1),
            "load": np.round(load * 100, 1),
            "discharge_pressure": np.round(pressure + self.noise(0.02, n), 3),
            "flow": np.round(np.maximum(flow, 0.0), 1),
            "motor_current": np.round(self.motor_current(power, running), 2),
            "power": np.round(power, 3),
            "energy": self._energy(power),
            "vibration_rms": self._vibration(p["vibration_mm_s"] * (0.7 + 0.3 * load), fx, running),
            "discharge_temp": self._thermal("discharge", ambient + 60 * heat + fx.winding_heat, 300),
            "oil_temp": self._thermal("oil", ambient + 48 * heat + 0.8 * fx.winding_heat, 900),
            "motor_temp": self._thermal("motor", ambient + 42 * heat + fx.winding_heat + fx.bearing_heat, 1500),
            "ambient_temp": np.round(ambient + self.noise(0.1, n), 2),
        }
