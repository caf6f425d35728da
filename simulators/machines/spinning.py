"""Ring spinning frame (cotton yarn)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from simulators.faults import Effects
from simulators.machines.base import CHANGEOVER, IDLE, RUNNING, Arr, MachineModel


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
        self.good = int(self.rng.integers(100_000, 900_000))
        self.scrap = self.good // 200
        # Progress of the current doff cycle, in running samples: a cycle takes doff_n.
        self.doff_n = max(2, math.ceil(self.p["doff_every_s"] / self.dt))
        self.doffing_n = max(1, math.ceil(self.p["doff_s"] / self.dt))
        self.cop_n = int(self.rng.uniform(0.0, 1.0) * (self.doff_n - 1))
        self.doffing_left = 0
        self.doffed = 0  # full cops counted at the next sample

    def initial_rises(self) -> Mapping[str, float]:
        return {"bearing": 20.0, "motor": 36.0}

    def _begin_states(self, n: int) -> None:
        self._progress = np.zeros(n)
        self._doffs = np.zeros(n, dtype=np.int64)

    def _run_states(self, codes: Arr, i: int, limit: int) -> None:
        while i < limit:
            if self.doffed:
                self._doffs[i] += self.doffed
                self.doffed = 0
            if self.state == CHANGEOVER:
                steps = min(limit - i, self.doffing_left)
                codes[i : i + steps] = CHANGEOVER
                self.doffing_left -= steps
                i += steps
                if self.doffing_left == 0:
                    self.state = RUNNING
                    self.doffed = int(self.p["spindles"])
            elif self.state == RUNNING:
                steps = min(limit - i, self.left, self.doff_n - 1 - self.cop_n)
                codes[i : i + steps] = RUNNING
                self._progress[i : i + steps] = (self.cop_n + np.arange(1, steps + 1)) / self.doff_n
                self.cop_n += steps
                self.left -= steps
                i += steps
                if self.left == 0:
                    self._enter(IDLE)
                elif self.cop_n >= self.doff_n - 1:
                    self.state, self.cop_n, self.doffing_left = CHANGEOVER, 0, self.doffing_n
            else:
                steps = min(limit - i, self.left)
                codes[i : i + steps] = self.state
                self.left -= steps
                i += steps
                if self.left == 0:
                    self._enter(RUNNING)

    def physics(self, t: Arr, fx: Effects, ambient: Arr, codes: Arr) -> dict[str, Arr]:
        p = self.p
        n = len(t)
        running = codes == RUNNING
        progress = self._progress
        # The builder motion ramps the spindle speed over the cop build.
        speed = p["spindle_rpm"] * (0.93 + 0.07 * np.minimum(1.0, progress * 4)) + self.noise(15, n)
        speed = np.where(running, speed, 0.0)
        load = np.where(running, 0.78 + 0.12 * progress, 0.0)
        power = np.where(running, p["rated_kw"] * load * (1 + fx.power_extra) + self.noise(0.15, n), 0.0)
        power = np.maximum(power, 0.0)
        breaks = self.rng.random(n) < p["breaks_per_hour"] * self.dt / 3600 * speed / p["spindle_rpm"]
        good = self.good + np.cumsum(self._doffs)
        scrap = self.scrap + np.cumsum(breaks & running, dtype=np.int64)
        self.good, self.scrap = int(good[-1]), int(scrap[-1])
        return {
            "spindle_speed": np.round(np.maximum(speed, 0.0), 1),
            "motor_current": np.round(self.motor_current(power, running), 2),
            "power": np.round(power, 3),
            "energy": self._energy(power),
            "vibration_rms": self._vibration(p["vibration_mm_s"] * (0.6 + 0.4 * load), fx, running),
            "bearing_temp": self._thermal("bearing", ambient + 24 * load + fx.bearing_heat, 1500),
            "motor_temp": self._thermal("motor", ambient + 44 * load + fx.winding_heat, 2000),
            "count_good": good,
            "count_scrap": scrap,
            "ambient_temp": np.round(ambient + self.noise(0.1, n), 2),
        }
