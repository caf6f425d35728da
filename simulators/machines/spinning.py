"""Ring spinning frame (cotton yarn)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from birlik.payload import Value
from simulators.faults import Effects
from simulators.machines.base import MachineModel, current_from_power


class SpinningFrame(MachineModel):
    """Spindles run at constant speed while a set of cops fills; then the frame stops for
    doffing (a changeover of a few minutes) and the full cops are counted as good units.
    Yarn breaks (ends down) are counted as scrap, more often at higher spindle speed."""

    kind: ClassVar[str] = "spinning_frame"
    signals = (
        "state",
        "spindle_speed",
        "motor_current",
        "power",
        "energy",
        "vibration_rms",
        "bearing_temp",
        "motor_temp",
        "count_good",
        "count_scrap",
        "ambient_temp",
    )
    defaults: ClassVar[Mapping[str, float]] = {
        "rated_kw": 37.0,
        "spindle_rpm": 16_000.0,
        "spindles": 1008.0,
        "doff_every_s": 2.5 * 3600,
        "doff_s": 6 * 60,
        "breaks_per_hour": 40.0,
        "vibration_mm_s": 1.6,
    }
    state_durations: ClassVar[Mapping[str, float]] = {"running": 48 * 3600, "idle": 15 * 60}

    def setup(self) -> None:
        self.good = self.rng.randrange(100_000, 900_000)
        self.scrap = self.good // 200
        self.cop_progress = self.rng.uniform(0.0, 1.0)  # fraction of the current doff cycle
        self.doffing_left = 0.0

    def initial_rises(self) -> Mapping[str, float]:
        return {"bearing": 20.0, "motor": 36.0}

    def _advance_state(self, dt_s: float, tripped: bool) -> None:
        if self.state == "changeover":
            self.doffing_left -= dt_s
            if self.doffing_left <= 0:
                self.state = "running"
                self.good += int(self.p["spindles"])
            return
        super()._advance_state(dt_s, tripped)
        if self.state == "running":
            self.cop_progress += dt_s / self.p["doff_every_s"]
            if self.cop_progress >= 1.0:
                self.cop_progress = 0.0
                self.state = "changeover"
                self.doffing_left = self.p["doff_s"]

    def physics(self, t_s: float, dt_s: float, fx: Effects, ambient: float) -> dict[str, Value]:
        p = self.p
        running = self.state == "running"
        if running:
            # The builder motion ramps the spindle speed over the cop build.
            speed = p["spindle_rpm"] * (0.93 + 0.07 * min(1.0, self.cop_progress * 4)) + self.noise(15)
            load = 0.78 + 0.12 * self.cop_progress
            power = p["rated_kw"] * load * (1 + fx.power_extra) + self.noise(0.15)
            if self.rng.random() < p["breaks_per_hour"] * dt_s / 3600 * speed / p["spindle_rpm"]:
                self.scrap += 1
        else:
            speed = load = power = 0.0
        return {
            "spindle_speed": round(max(speed, 0.0), 1),
            "motor_current": round(current_from_power(max(power, 0.0)), 2),
            "power": round(max(power, 0.0), 3),
            "energy": self._energy(max(power, 0.0), dt_s),
            "vibration_rms": self._vibration(p["vibration_mm_s"] * (0.6 + 0.4 * load), fx, running),
            "bearing_temp": self._thermal("bearing", ambient + 24 * load + fx.bearing_heat, dt_s, 1500),
            "motor_temp": self._thermal("motor", ambient + 44 * load + fx.winding_heat, dt_s, 2000),
            "count_good": self.good,
            "count_scrap": self.scrap,
            "ambient_temp": round(ambient + self.noise(0.1), 2),
        }
