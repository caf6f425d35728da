"""Centrifugal pump driven by an induction motor at fixed speed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from simulators.faults import Effects
from simulators.machines.base import RUNNING, Arr, MachineModel, Wander, set_or_lag

#: Share of the pumped fluid's temperature above ambient that reaches the bearing housing.
BEARING_FLUID_SHARE = 0.25


class CentrifugalPump(MachineModel):
    """Flow follows process demand; head follows the pump curve H = H0 (1 - 0.35 (Q/Qbep)^2);
    shaft power is hydraulic power over efficiency; temperatures lag toward load-dependent
    equilibria above ambient (the bearings run 20-40 K above it: 50-75 degC on a warm day).
    The suction strainer's pressure drop grows with the square of the flow (and with
    fouling); the pumped fluid is process water warmed by the plant it serves, plus the
    pump's own losses."""

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
        "differential_pressure",
        "fluid_temp",
    )
    defaults: ClassVar[Mapping[str, float]] = {
        "rated_kw": 22.0,
        "speed_rpm": 2950.0,
        "bep_flow_m3h": 120.0,
        "shutoff_head_m": 62.0,
        "efficiency": 0.74,
        "vibration_mm_s": 1.9,
        "suction_bar": 0.6,  # at the pump inlet, with a clean strainer
        "strainer_dp_bar": 0.05,  # clean strainer's pressure drop at the best-efficiency flow
        "fluid_rise_k": 8.0,  # process fluid above ambient
        # Bearing above ambient running at rated load; 60 % of it comes from running speed
        # (rolling friction, grease churning, the shaft seal) whatever the load.
        "bearing_rise_k": 30.0,
    }
    state_durations: ClassVar[Mapping[str, float]] = {"running": 8 * 3600, "idle": 20 * 60}
    effect_signals: ClassVar[Mapping[str, tuple[str, ...]]] = {
        **MachineModel.effect_signals,
        "power_extra": ("power", "motor_current", "energy", "motor_temp"),
        "flow_loss": ("flow", "discharge_pressure", "power", "motor_current", "energy", "differential_pressure"),
        "flow_fluctuation": ("flow", "discharge_pressure"),
        "strainer_clogging": ("differential_pressure", "suction_pressure", "discharge_pressure"),
    }

    def initial_rises(self) -> Mapping[str, float]:
        rise = self.p["bearing_rise_k"] + BEARING_FLUID_SHARE * self.p["fluid_rise_k"]
        return {"bearing": rise, "motor": 38.0, "fluid": self.p["fluid_rise_k"]}

    def setup(self) -> None:
        self.demand = Wander(self.rng, 0.85, 0.05, 1800, self.dt)
        self.fluid = Wander(self.rng_extra, 0.0, 0.8, 3600, self.dt)

    def physics(self, t: Arr, fx: Effects, ambient: Arr, codes: Arr) -> dict[str, Arr]:
        p = self.p
        n = len(t)
        extra = self.rng_extra
        running = codes == RUNNING
        demand = self.demand.block(n) * self.demand_factor
        suction = p["suction_bar"] + self.noise(0.01, n)
        q = np.maximum(0.0, p["bep_flow_m3h"] * demand * (1 - fx.flow_loss) + self.noise(0.6, n))
        # Cavitation: the flow surges as vapour pockets form and collapse.
        surge = self.rng_fault.standard_normal((2, n))
        q = np.maximum(0.0, q * (1 + fx.flow_fluctuation * surge[0]))
        x = q / p["bep_flow_m3h"]
        head = p["shutoff_head_m"] * (1 - 0.35 * x * x) * (1 + 0.8 * fx.flow_fluctuation * surge[1])
        hydraulic_kw = 9.81 * (q / 3600) * head
        shaft_kw = (hydraulic_kw / p["efficiency"] + 0.12 * p["rated_kw"]) * (1 + fx.power_extra)
        power = shaft_kw / 0.93 + self.noise(0.05, n)
        load = power / p["rated_kw"]
        # The strainer's drop grows with the square of the flow, and many-fold when fouled;
        # the suction transmitter behind it reads the difference.
        clean_dp = p["strainer_dp_bar"] * x * x
        strainer_dp = clean_dp * (1 + 20 * fx.strainer_clogging)
        suction_run = suction - (strainer_dp - clean_dp)
        discharge = suction_run + 0.0981 * head + self.noise(0.02, n)
        speed = p["speed_rpm"] * (1 - 0.01 * load) + self.noise(1.5, n)
        # Losses heat the fluid a little: dT = P_loss / (m' c_p), with q in m3/h.
        losses_k = (shaft_kw - hydraulic_kw) * 0.86 / np.maximum(q, 5.0)
        fluid_run = ambient + p["fluid_rise_k"] + self.fluid.block(n) + losses_k
        # Still fluid in the casing cools toward the room.
        fluid = set_or_lag(self.temps["fluid"], fluid_run, running, ambient + 0.2 * p["fluid_rise_k"], self.dt, 1800)
        self.temps["fluid"] = float(fluid[-1])
        still_discharge = suction + self.noise(0.01, n)
        current_noise = self.noise(0.15, n)
        q, head, power, load, speed, strainer_dp = (
            np.where(running, a, 0.0) for a in (q, head, power, load, speed, strainer_dp)
        )
        suction = np.where(running, suction_run, suction)
        discharge = np.where(running, discharge, still_discharge)
        power = np.maximum(power, 0.0)
        # The bearing housing warms with running speed and load, and from the pumped fluid
        # along the shaft (also at rest).
        bearing_rise = np.where(running, p["bearing_rise_k"] * (0.6 + 0.4 * np.minimum(load, 1.2)), 0.0)
        bearing_rise = bearing_rise + BEARING_FLUID_SHARE * (fluid - ambient)
        return {
            "speed": np.round(speed, 1),
            "flow": np.round(q, 2),
            "suction_pressure": np.round(suction, 3),
            "discharge_pressure": np.round(discharge, 3),
            "motor_current": np.round(self.motor_current(power, running) + np.where(running, current_noise, 0.0), 2),
            "power": np.round(power, 3),
            "energy": self._energy(power),
            "vibration_rms": self._vibration(p["vibration_mm_s"] * (0.75 + 0.25 * load), fx, running),
            "bearing_temp": self._thermal("bearing", ambient + bearing_rise + fx.bearing_heat, 1200),
            "motor_temp": self._thermal("motor", ambient + 45 * load * load + fx.winding_heat, 1800),
            "ambient_temp": np.round(ambient + self.noise(0.1, n), 2),
            "differential_pressure": np.round(strainer_dp + extra.normal(0, 0.003, n), 3),
            "fluid_temp": np.round(fluid + extra.normal(0, 0.05, n), 2),
        }
