"""Single-screw extruder for plastic pipe and profile (building materials)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

from birlik.payload import Value
from simulators.faults import Effects
from simulators.machines.base import MachineModel, current_from_power, lag


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
        self.good = self.rng.randrange(50_000, 2_000_000)
        self.scrap = self.good // 60
        self.unit_fraction = 0.0
        self.since_start = self.p["startup_scrap_s"]  # running and settled when the run begins
        self.changeover_left = 0.0

    def initial_rises(self) -> Mapping[str, float]:
        return {"motor": 24.0}

    def _new_product(self) -> None:
        """Set-points of the next product: its screw speed and barrel temperature."""
        self.speed_set = self.p["screw_rpm"] * self.rng.uniform(0.9, 1.0)
        self.barrel_set = self.p["barrel_c"] + self.rng.uniform(-8.0, 8.0)

    def _advance_state(self, dt_s: float, tripped: bool) -> None:
        before = self.state
        if self.state == "changeover" and not tripped:
            self.changeover_left -= dt_s
            if self.changeover_left <= 0:
                self.state = "running"
        else:
            super()._advance_state(dt_s, tripped)
            if before == "running" and self.state == "idle" and self.rng.random() < self.p["changeover_share"]:
                self.state = "changeover"
                self.changeover_left = self.p["changeover_s"]
                self._new_product()
        if self.state == "running" and before != "running":
            self.since_start = 0.0

    def physics(self, t_s: float, dt_s: float, fx: Effects, ambient: float) -> dict[str, Value]:
        p = self.p
        running = self.state == "running"
        barrel_before = self.temps["barrel"]
        barrel = self._thermal("barrel", self.barrel_set, dt_s, p["barrel_tau_s"], sigma=0.3)
        # Hotter melt is thinner: less torque, less pressure at the die.
        thinning = math.exp(-0.012 * (self.temps["barrel"] - p["barrel_c"]))
        if running:
            self.since_start += dt_s
            speed = self.speed_set * (1 + self.noise(0.002))
            output_kg_h = p["output_kg_h_per_rpm"] * speed
            drive = p["drive_kwh_per_kg"] * output_kg_h * thinning**0.5 + 0.05 * p["rated_kw"]
            drive = drive * (1 + fx.power_extra) + self.noise(0.3)
            shear_kw = 0.1 * drive
            target_melt = p["melt_bar"] * (speed / p["screw_rpm"]) ** 0.4 * thinning
            self.melt = target_melt + self.noise(1.5)
            self._count(output_kg_h * dt_s / 3600)
        else:
            speed = output_kg_h = drive = shear_kw = 0.0
            self.melt = lag(self.melt, 6.0, dt_s, 90)  # the melt in the die relaxes
        # Heaters: the barrel's losses, plus what the approach to the set-point takes, minus shear heat.
        needed = (
            p["barrel_loss_kw_per_k"] * (self.temps["barrel"] - ambient)
            + p["barrel_kj_per_k"] * (self.temps["barrel"] - barrel_before) / dt_s
            - shear_kw
        )
        heaters = min(max(needed, 0.0), p["heater_kw"])
        load = drive / p["rated_kw"]
        power = max(drive, 0.0) + heaters
        return {
            "speed": round(speed, 2),
            "load": round(load * 100, 1),
            "motor_current": round(current_from_power(max(drive, 0.0), no_load_a=4.0), 2),
            "power": round(power, 3),
            "energy": self._energy(power, dt_s),
            "melt_pressure": round(max(self.melt, 0.0), 1),
            "barrel_temp": barrel,
            "motor_temp": self._thermal(
                "motor", ambient + 40 * load * load + fx.winding_heat + fx.bearing_heat, dt_s, 1800
            ),
            "vibration_rms": self._vibration(p["vibration_mm_s"] * (0.5 + 0.5 * speed / p["screw_rpm"]), fx, running),
            "count_good": self.good,
            "count_scrap": self.scrap,
            "ambient_temp": round(ambient + self.noise(0.1), 2),
        }

    def _count(self, made_kg: float) -> None:
        self.unit_fraction += made_kg / self.p["kg_per_unit"]
        while self.unit_fraction >= 1.0:
            self.unit_fraction -= 1.0
            settling = self.since_start < self.p["startup_scrap_s"]
            if settling or self.rng.random() < self.p["scrap_share"]:
                self.scrap += 1
            else:
                self.good += 1
