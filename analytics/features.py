"""From a machine's readings to the features a detector scores."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from birlik.signals import SIGNALS

#: Condition signals: what degrades when a machine does. Process variables (load, flow,
#: pressures, power, speed) follow production, not health; scoring them here would alarm on
#: every change of demand. A per-machine multivariate model can relate the two later.
CONDITION_SIGNALS = frozenset(
    {"vibration_rms", "accel_rms", "accel2_rms", "bearing_temp", "motor_temp", "oil_temp", "discharge_temp"}
)
assert SIGNALS.keys() >= CONDITION_SIGNALS

#: Square laws: a process variable and what drives it. A strainer's (or an orifice's)
#: pressure drop grows with the square of the flow through it, whatever the demand; the same
#: flow with a higher drop is fouling (a clogging suction strainer). Both signals go to the
#: detector, which scores the drop's excess over its learned square law and never the
#: driver itself (see :mod:`analytics.detectors.zscore`).
SQUARE_LAWS = {"differential_pressure": "flow"}
assert SIGNALS.keys() >= SQUARE_LAWS.keys() | set(SQUARE_LAWS.values())

#: Heating laws: a temperature whose rise over ambient follows the losses of what drives it.
#: A motor winding's copper losses grow with the square of its current, and the winding
#: follows them through a thermal lag (a first-order time constant of about half an hour for
#: motors of 5 to 100 kW). So the rise is modelled as ``a + b * heat``, ``heat`` the squared
#: current smoothed over :data:`HEAT_TAU_S`; a rise above that at the same duty is a cooling
#: problem, whatever the shift's load (see :mod:`analytics.detectors.zscore`).
HEAT_LAWS = {"motor_temp": "motor_current"}
HEAT_TAU_S = 1800.0
assert SIGNALS.keys() >= HEAT_LAWS.keys() | set(HEAT_LAWS.values())


def heat_key(driver: str) -> str:
    """The feature name of a driver's smoothed square (``motor_current^2~1800s``)."""
    return f"{driver}^2~{HEAT_TAU_S:.0f}s"


#: The features that are inputs of a heating law (never scored themselves).
HEAT_INPUTS = frozenset(heat_key(d) for d in HEAT_LAWS.values())
_HEAT_KEYS = tuple((d, heat_key(d)) for d in dict.fromkeys(HEAT_LAWS.values()))


class Heat:
    """One machine's smoothed squared drivers (:data:`HEAT_LAWS`), fed every sample in time
    order, stopped ones too (a stopped motor reads 0 A and cools)."""

    def __init__(self) -> None:
        self.level: dict[str, float] = {}
        self.ts_ms: int | None = None
        self._features: dict[str, float] = {}

    def update(self, ts_ms: int, values: Mapping[str, Any]) -> dict[str, float]:
        """The levels after this sample, by feature name (an older sample changes nothing;
        the same dict each time, updated in place: copy it to keep it)."""
        if self.ts_ms is None or ts_ms > self.ts_ms:
            a = 1.0 if self.ts_ms is None else 1.0 - math.exp(-(ts_ms - self.ts_ms) / 1000 / HEAT_TAU_S)
            self.ts_ms = ts_ms
            for driver, key in _HEAT_KEYS:
                v = values.get(driver)
                if type(v) is not float and type(v) is not int:
                    continue
                sq = float(v) * float(v)
                old = self.level.get(driver)
                self.level[driver] = level = sq if old is None else old + a * (sq - old)
                self._features[key] = level
        return self._features

    def state(self) -> dict[str, Any]:
        return {"level": dict(self.level), "ts": self.ts_ms}

    def load_state(self, state: Any) -> None:
        """Go on from :meth:`state`; anything unusable starts afresh."""
        if not isinstance(state, dict):
            return
        level, ts = state.get("level"), state.get("ts")
        if isinstance(level, dict) and (ts is None or type(ts) is int):
            self.level = {
                str(k): float(v)
                for k, v in level.items()
                if k in HEAT_LAWS.values() and type(v) in (int, float) and math.isfinite(v) and v >= 0
            }
            self.ts_ms = ts
            self._features = {heat_key(d): v for d, v in self.level.items()}


def features(values: Mapping[str, Any]) -> dict[str, float] | None:
    """The condition signals of a sample taken while running (and the signals of a square law,
    :data:`SQUARE_LAWS`, both present), or None if it is not scored.

    Samples in any state but ``running`` are left out: idle and stopped machines are not
    compared with running ones. Temperatures become rises over the ambient temperature
    when it is reported, so a hot afternoon in Turkestan is not taken for an overheating
    bearing.
    """
    state = values.get("state")
    if state is not None and state != "running":
        return None
    ambient = values.get("ambient_temp")
    out: dict[str, float] = {}
    for name, value in values.items():
        if name not in CONDITION_SIGNALS or value is None or isinstance(value, str | bool):
            continue
        if ambient is not None and name.endswith("_temp"):
            out[name] = float(value) - float(ambient)
        else:
            out[name] = float(value)
    for target, driver in SQUARE_LAWS.items():
        y, q = values.get(target), values.get(driver)
        if (type(y) is float or type(y) is int) and (type(q) is float or type(q) is int):  # not bools
            out[target], out[driver] = float(y), float(q)
    return out or None
