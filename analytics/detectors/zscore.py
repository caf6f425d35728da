"""Per-signal baseline z-score.

The idea: a healthy machine in a given operating state keeps each signal near a typical
value. During a warm-up the detector learns every feature's mean and standard deviation
(Welford's online algorithm); afterwards the baseline is frozen, so a slow degradation is
not learned as normal, and a sample's score is its largest standardised deviation over the
features. Temperatures and vibration only count when they rise: a machine running cooler
or smoother than usual is not a maintenance case.

A floor on each standard deviation (a share of the mean and an absolute minimum per unit)
keeps near-constant signals (shaft speed at 2950 rpm +- 2) from turning tiny changes into
huge scores.

>>> d = ZScoreDetector(warmup=3)
>>> for v in (2.0, 2.1, 1.9):
...     d.learn_one({"vibration_rms": v})
>>> d.ready, round(d.score_one({"vibration_rms": 2.0}), 1), round(d.score_one({"vibration_rms": 4.0}), 1)
(True, 0.0, 13.3)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from analytics.detectors.base import Features
from analytics.features import HEAT_INPUTS, HEAT_LAWS, SQUARE_LAWS, heat_key

FloatArray = npt.NDArray[np.float64]

#: Features where only an increase is a sign of trouble.
RISING_ONLY = ("vibration_rms", "accel_rms", "accel2_rms", "bearing_temp", "motor_temp", "oil_temp", "discharge_temp")
#: Smallest standard deviation assumed per feature, in its unit.
#: Temperatures wander a few kelvin with load over an hour; vibration is steadier.
MIN_STD = {"vibration_rms": 0.15, "bearing_temp": 2.5, "motor_temp": 2.5, "oil_temp": 2.5, "discharge_temp": 2.5}


#: The drivers of the square laws: inputs of a law, never scored themselves.
DRIVERS = frozenset(SQUARE_LAWS.values())
#: Square-law sums needed: samples, sum y q^2, sum q^4, sum y^2, sum y.
_LAW_SUMS = 5
#: Heating-law sums: samples, sum h, sum h^2, sum y, sum y^2, sum y h, min h, max h.
_HEAT_SUMS = 8
#: A heating law is trusted within the heat levels of its warm-up, widened by this share of
#: their range (beyond, the plain per-signal baseline alone judges the temperature).
HEAT_ENVELOPE = 0.25


def _law_sums(raw: object, key: str, laws: Mapping[str, str], size: int) -> dict[str, list[float]]:
    """A saved law's sums per target (see :meth:`ZScoreDetector.state`); ValueError if unusable."""
    if not isinstance(raw, dict):
        raise ValueError(f"{key} is not an object")
    sums = {str(t): [float(v) for v in values] for t, values in raw.items() if t in laws}
    if not all(len(v) == size and all(math.isfinite(a) for a in v) for v in sums.values()):
        raise ValueError(f"{key}: bad sums")
    return sums


class ZScoreDetector:
    """See the module docstring. A square law (:data:`analytics.features.SQUARE_LAWS`:
    a strainer's pressure drop ``y`` and the flow ``q`` through it) is learned in the warm-up
    as ``y = K q^2`` (least squares) with the spread of its residual; after it, the drop's
    excess over ``K q^2`` in that spread is scored like any feature, rising only (a drop
    below its law is no maintenance case). The flow itself is not scored.

    A heating law (:data:`analytics.features.HEAT_LAWS`: a motor's temperature rise ``y``
    and its smoothed squared current ``h``, the copper losses it follows) is learned as
    ``y = a + b h`` (least squares; only with ``b > 0`` and ``h`` varying in the warm-up),
    its residual spread floored like the plain baseline's; inside the heat levels of the
    warm-up the temperature's excess over it is scored too, rising only. A motor that runs
    hot for its duty is then seen on the light shift as on the heavy one."""

    name = "zscore"

    def __init__(self, *, warmup: int = 60, min_rel_std: float = 0.02, min_abs_std: float = 0.01) -> None:
        self.warmup = warmup
        self.min_rel_std = min_rel_std
        self.min_abs_std = min_abs_std
        self.features: list[str] = []
        self._index: dict[str, int] = {}
        self._n = np.zeros(0)
        self._mean = np.zeros(0)
        self._m2 = np.zeros(0)
        self._seen = 0
        self._std: np.ndarray | None = None
        self._rising = np.zeros(0, dtype=bool)
        #: Once ready: feature -> (mean, 1 / spread, rising only).
        self._model: dict[str, tuple[float, float, bool]] = {}
        #: Square laws: target -> sums over the warm-up (see _LAW_SUMS).
        self._laws: dict[str, list[float]] = {}
        #: Once ready: target -> (driver, K, 1 / spread of the residual).
        self._law_model: dict[str, tuple[str, float, float]] = {}
        #: Heating laws: target -> sums over the warm-up (see _HEAT_SUMS).
        self._heat: dict[str, list[float]] = {}
        #: Once ready: target -> (input, a, b, 1 / spread, lowest h, highest h).
        self._heat_model: dict[str, tuple[str, float, float, float, float, float]] = {}

    @property
    def ready(self) -> bool:
        return self._seen >= self.warmup

    def _grow(self, names: list[str]) -> None:
        for name in names:
            self._index[name] = len(self.features)
            self.features.append(name)
        pad = len(names)
        self._n = np.concatenate([self._n, np.zeros(pad)])
        self._mean = np.concatenate([self._mean, np.zeros(pad)])
        self._m2 = np.concatenate([self._m2, np.zeros(pad)])
        self._rising = np.array([f in RISING_ONLY for f in self.features])

    def learn_one(self, x: Features) -> None:
        if self.ready:
            return  # the baseline is frozen after warm-up
        for target, driver in SQUARE_LAWS.items():
            y, q = x.get(target), x.get(driver)
            if y is not None and q is not None:
                sums = self._laws.setdefault(target, [0.0] * _LAW_SUMS)
                q2 = q * q
                sums[0] += 1
                sums[1] += y * q2
                sums[2] += q2 * q2
                sums[3] += y * y
                sums[4] += y
        for target, driver in HEAT_LAWS.items():
            y, h = x.get(target), x.get(heat_key(driver))
            if y is not None and h is not None:
                hs = self._heat.get(target)
                if hs is None:
                    hs = self._heat[target] = [0.0] * 6 + [h, h]
                hs[0] += 1
                hs[1] += h
                hs[2] += h * h
                hs[3] += y
                hs[4] += y * y
                hs[5] += y * h
                hs[6], hs[7] = min(hs[6], h), max(hs[7], h)
        if any(k in SQUARE_LAWS or k in DRIVERS or k in HEAT_INPUTS for k in x):
            x = {k: v for k, v in x.items() if k not in SQUARE_LAWS and k not in DRIVERS and k not in HEAT_INPUTS}
        new = [k for k in x if k not in self._index]
        if new:
            self._grow(new)
        idx = np.fromiter((self._index[k] for k in x), dtype=int, count=len(x))
        v = np.fromiter(x.values(), dtype=float, count=len(x))
        self._n[idx] += 1
        delta = v - self._mean[idx]
        self._mean[idx] += delta / self._n[idx]
        self._m2[idx] += delta * (v - self._mean[idx])
        self._seen += 1
        if self.ready:
            self._freeze()

    def _freeze(self) -> None:
        var = np.where(self._n > 1, self._m2 / np.maximum(self._n - 1, 1), 0.0)
        floors = np.array([MIN_STD.get(f, self.min_abs_std) for f in self.features])
        self._std = np.maximum.reduce([np.sqrt(var), self.min_rel_std * np.abs(self._mean), floors])
        self._model = {
            f: (float(m), float(1.0 / s), bool(r))
            for f, m, s, r in zip(self.features, self._mean, self._std, self._rising, strict=True)
        }
        self._fit_laws()

    def _fit_laws(self) -> None:
        self._law_model = {}
        for target, (n, sxy, sxx, syy, sy) in self._laws.items():
            if n < 10 or sxx <= 0:
                continue
            k = sxy / sxx
            var = max(syy - 2 * k * sxy + k * k * sxx, 0.0) / (n - 1)
            spread = max(math.sqrt(var), self.min_rel_std * abs(sy / n))
            if spread > 0 and math.isfinite(k) and math.isfinite(spread):
                self._law_model[target] = (SQUARE_LAWS[target], k, 1.0 / spread)
        self._heat_model = {}
        for target, (n, sh, shh, sy, syy, syh, lo, hi) in self._heat.items():
            if n < 10:
                continue
            mh, my = sh / n, sy / n
            var_h = shh / n - mh * mh
            cov = syh / n - my * mh
            if not var_h > 1e-9 * max(mh * mh, 1e-12) or not cov > 0:
                continue  # no duty change in the warm-up to learn from, or no heating with it
            b = cov / var_h
            a = my - b * mh
            resid = max(syy / n - my * my - b * cov, 0.0) * n / (n - 1)
            spread = max(math.sqrt(resid), self.min_rel_std * abs(my), MIN_STD.get(target, self.min_abs_std))
            margin = HEAT_ENVELOPE * (hi - lo)
            if all(math.isfinite(v) for v in (a, b, spread)):
                self._heat_model[target] = (heat_key(HEAT_LAWS[target]), a, b, 1.0 / spread, lo - margin, hi + margin)

    def score_and_explain(self, x: Features) -> tuple[float, str]:
        """The score of ``x`` and the feature behind it, in one pass (the worker's hot path:
        plain Python over a handful of features is faster than numpy's per-call cost)."""
        model = self._model
        best, name = 0.0, ""
        first = True
        for k, v in x.items():
            entry = model.get(k)
            if entry is None:
                continue
            mean, inv, rising = entry
            z = (v - mean) * inv
            if not rising and z < 0:
                z = -z
            if first or z > best:
                best, name, first = z, k, False
        for target, (driver, k_law, inv) in self._law_model.items():
            y, q = x.get(target), x.get(driver)
            if y is None or q is None:
                continue
            z = (y - k_law * q * q) * inv  # rising only: a fouling strainer
            if first or z > best:
                best, name, first = z, target, False
        for target, (key, a, b, inv, lo, hi) in self._heat_model.items():
            y, h = x.get(target), x.get(key)
            if y is None or h is None or not lo <= h <= hi:
                continue
            z = (y - a - b * h) * inv  # rising only: running hot for its duty
            if first or z > best:
                best, name, first = z, target, False
        return (best if best > 0.0 else 0.0), name

    def score_many(self, x: FloatArray, names: Sequence[str]) -> tuple[FloatArray, FloatArray]:
        """Batch form: rows of ``x`` (columns ``names``, NaN where a feature is missing) to
        scores and the column index behind each (-1: nothing scored); the same as
        :meth:`score_and_explain` row by row."""
        n = x.shape[0]
        index = {f: i for i, f in enumerate(names)}
        cols = [i for i, f in enumerate(names) if f in self._model]
        parts: list[FloatArray] = []
        which: list[int] = []
        if cols:
            mean = np.array([self._model[names[i]][0] for i in cols])
            inv = np.array([self._model[names[i]][1] for i in cols])
            rising = np.array([self._model[names[i]][2] for i in cols])
            z = (x[:, cols] - mean) * inv
            parts.append(np.where(rising, z, np.abs(z)))
            which.extend(cols)
        for target, (driver, k_law, inv_law) in self._law_model.items():
            if target in index and driver in index:
                q = x[:, index[driver]]
                parts.append(((x[:, index[target]] - k_law * q * q) * inv_law)[:, None])
                which.append(index[target])
        for target, (key, a, b, inv_heat, lo, hi) in self._heat_model.items():
            if target in index and key in index:
                h = x[:, index[key]]
                z_heat = (x[:, index[target]] - a - b * h) * inv_heat
                parts.append(np.where((h >= lo) & (h <= hi), z_heat, np.nan)[:, None])
                which.append(index[target])
        if self._std is None or not parts:
            return np.zeros(n), np.full(n, -1)
        z = np.hstack(parts)
        z = np.where(np.isnan(z), -np.inf, z)
        best = z.argmax(axis=1)
        top = z[np.arange(n), best]
        scored = np.isfinite(top)
        return np.where(scored, np.maximum(top, 0.0), 0.0), np.where(scored, np.asarray(which)[best], -1)

    def state(self) -> dict[str, object]:
        """What it learned, as JSON-ready values (see :meth:`load_state`)."""
        return {
            "v": 1,
            "detector": self.name,
            "features": list(self.features),
            "n": self._n.tolist(),
            "mean": self._mean.tolist(),
            "m2": self._m2.tolist(),
            "seen": self._seen,
            "std": None if self._std is None else self._std.tolist(),
            "laws": {t: list(v) for t, v in self._laws.items()},
            "heat": {t: list(v) for t, v in self._heat.items()},
        }

    def load_state(self, state: dict[str, object]) -> None:
        """Go on from a :meth:`state`; raises ValueError if it does not fit."""
        try:
            if state.get("v") != 1 or state.get("detector") != self.name:
                raise ValueError("not a zscore state, version 1")
            names = [str(f) for f in state["features"]]  # type: ignore[attr-defined]
            k = len(names)
            arrays = [np.asarray(state[key], dtype=float).reshape(k) for key in ("n", "mean", "m2")]
            std = state["std"]
            std_arr = None if std is None else np.asarray(std, dtype=float).reshape(k)
            seen = int(state["seen"])  # type: ignore[call-overload]
            # (Absent in states saved before the square and heating laws.)
            laws = _law_sums(state.get("laws", {}), "laws", SQUARE_LAWS, _LAW_SUMS)
            heat = _law_sums(state.get("heat", {}), "heat", HEAT_LAWS, _HEAT_SUMS)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad zscore state: {exc}") from None
        if not all(np.isfinite(a).all() for a in arrays) or (std_arr is not None and not (std_arr > 0).all()):
            raise ValueError("bad zscore state: values out of range")
        self.features, self._index = names, {n: i for i, n in enumerate(names)}
        self._n, self._mean, self._m2 = arrays
        self._std, self._seen = std_arr, seen
        self._rising = np.array([f in RISING_ONLY for f in self.features], dtype=bool)
        self._model = {}
        self._laws, self._law_model = laws, {}
        self._heat, self._heat_model = heat, {}
        if std_arr is not None:
            self._model = {
                f: (float(m), float(1.0 / s), bool(r))
                for f, m, s, r in zip(self.features, self._mean, std_arr, self._rising, strict=True)
            }
            self._fit_laws()

    def normal(self, name: str) -> float | None:
        """The learned normal level of feature ``name`` (None before the warm-up ends; for
        a square law's target, its mean over the warm-up)."""
        if name in self._law_model:
            sums = self._laws[name]
            return sums[4] / sums[0]
        i = self._index.get(name)
        return float(self._mean[i]) if i is not None and self._std is not None else None

    def score_one(self, x: Features) -> float:
        return self.score_and_explain(x)[0]

    def explain_one(self, x: Features) -> str:
        return self.score_and_explain(x)[1]
