"""Operating-point detector: each signal against what the machine's own operating point predicts.

The idea, in plain words
------------------------
A healthy machine's condition and process signals are not constant: they follow the
operating point. A pump's strainer drop grows with the square of the flow, a motor runs
hotter at full load than at 45 % load, vibration grows a little with load. A per-signal
baseline (:mod:`analytics.detectors.zscore`) has to take all of that as spread, so a shift
change inside the warm-up makes it deaf, and it cannot score process variables at all (they
move with every change of demand). This detector instead learns, during the warm-up, a
regression of every *monitored* signal on the machine's *operating-point* signals, and
scores how far a sample is from what its operating point predicts.

Operating point (regressors, :data:`OPERATING_POINT`)
    ``load``, ``speed``, ``spindle_speed``, ``belt_speed`` and ``flow``: what production
    demands of the machine, set from outside. Each enters with its square as well (losses
    grow with the square of the current, a pressure drop with the square of the flow).
    The ambient temperature enters with a fixed coefficient of one: temperatures are
    modelled as rises over the (smoothed) ambient, since a machine's temperature is the
    ambient plus a rise driven by its losses, and a few hours of warm-up see too little
    ambient change to learn that coefficient.

Monitored signals (targets)
    Condition signals (:data:`RISING_ONLY`: vibration, bearing, motor, oil and discharge
    temperatures), which count only when above their prediction (running cooler or smoother
    is no maintenance case), and process signals (:data:`TWO_SIDED`: differential and suction
    pressure), which count both ways: a clogging strainer raises the pressure
    drop and lowers the suction pressure at the same flow. A regressor is never a target of
    itself (flow is an operating point, not a target).

Thermal lag
    A temperature follows its load through a first-order lag (tens of minutes), so for the
    temperatures the regressors (and the ambient) are exponentially smoothed. The time
    constant is chosen per signal from the warm-up itself: the candidate (a fraction of the
    warm-up length, :data:`LAG_FRACTIONS`) whose fit leaves the smallest residual spread.

The model of one target
-----------------------
``y = a + b . z(op)``, with ``z`` the regressors standardised by their warm-up mean and
spread. Fitted by ridge regression (a penalty :data:`RIDGE` times the sample count on the
squared coefficients, so collinear regressors such as speed and load share the weight
instead of blowing up), made robust by :data:`HUBER_ROUNDS` rounds of Huber reweighting
(samples further than :data:`HUBER_K` spreads from the fit weigh less), so a few odd
warm-up samples do not bend it.

The spread of the residual is its MAD (times 1.4826, a standard deviation for normal noise),
never below the sensor's resolution (the smallest step between distinct readings seen in
the warm-up). On top, a prediction far from the warm-up's operating points is less certain:
the spread is multiplied by ``sqrt(1 + 1/n + h)``, ``h`` the leverage of the sample's
operating point under the fitted design (the textbook prediction interval), so a weekend
base load never seen in the warm-up widens the band rather than raising an alarm. No
constant in any unit appears: every spread is learned from the machine's own data.

The score of a sample is its largest standardised residual (residual over that spread),
rising-only for condition signals, absolute for process signals: a number of learned
spreads, comparable to the worker's threshold (``analytics.threshold``, 6). The explanation
is the signal with the largest standardised residual.

A signal that took fewer than :data:`MIN_DISTINCT` distinct values during the warm-up, or was
present in less than :data:`MIN_PRESENT` of its samples, has no learnable spread and is left
out. Start-ups and stops never reach the detector (only running samples are scored, see
:func:`operating_point_features`); after a start the temperatures are cold, below their
prediction, which a rising-only signal ignores.

>>> d = OperatingPointDetector(warmup=200)
>>> rng = np.random.default_rng(1)
>>> for i in range(200):
...     q = 100.0 + 20.0 * (i // 50 % 2) + rng.normal(0, 1)
...     d.learn_one({"flow": q, "differential_pressure": 5e-6 * q * q + rng.normal(0, 0.003)})
>>> d.ready, d.score_one({"flow": 110.0, "differential_pressure": 0.0605}) < 6
(True, True)
>>> d.score_one({"flow": 110.0, "differential_pressure": 0.2}) > 6
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from analytics.detectors.base import Features

Arr = npt.NDArray[np.float64]

#: Operating-point signals (regressors): set by production demand, not by the machine's health.
OPERATING_POINT = ("load", "speed", "spindle_speed", "belt_speed", "flow")
#: Condition signals: only a rise above the prediction counts.
RISING_ONLY = ("vibration_rms", "accel_rms", "accel2_rms", "bearing_temp", "motor_temp", "oil_temp", "discharge_temp")
#: Process signals: a deviation either way counts.
#: (Not the discharge pressure: a compressor's receiver pressure is a controlled sawtooth
#: between its load and unload set-points, and it alarmed falsely on every compressor.)
TWO_SIDED = ("differential_pressure", "suction_pressure")
#: Targets modelled as temperature rises over the smoothed ambient, with smoothed regressors.
THERMAL = frozenset(s for s in RISING_ONLY if s.endswith("_temp"))
AMBIENT = "ambient_temp"
#: Every signal the feature extraction keeps.
KEPT = frozenset((*OPERATING_POINT, *RISING_ONLY, *TWO_SIDED, AMBIENT))

#: Ridge penalty per sample on the standardised coefficients (1e-3: a well-measured
#: coefficient loses about 0.1 %, a direction the warm-up barely explored is held near zero).
RIDGE = 1e-3
#: Huber reweighting: residuals beyond HUBER_K spreads weigh HUBER_K/|z|; this many rounds.
HUBER_K = 2.5
HUBER_ROUNDS = 3
#: MAD to standard deviation for normal noise.
MAD_TO_STD = 1.4826
#: Candidate thermal time constants, as fractions of the warm-up length in samples (0: no
#: lag, a sensor that follows its load at once).
LAG_FRACTIONS = (0.0, 1 / 32, 1 / 16, 1 / 8, 1 / 4)
#: A signal is modelled only if present in this share of the warm-up samples ...
MIN_PRESENT = 0.9
#: ... with at least this many distinct values (else no spread can be learned).
MIN_DISTINCT = 3


def operating_point_features(values: Mapping[str, Any]) -> dict[str, float] | None:
    """The operating-point, condition and process signals of a sample taken while running,
    or None if it is not scored.

    Samples in any state but ``running`` are left out (idle and stopped machines are not
    compared with running ones). Temperatures stay raw: the detector makes them rises over
    the smoothed ambient temperature, which it needs as a signal of its own. Non-numeric,
    NaN and infinite values are dropped.
    """
    state = values.get("state")
    if state is not None and state != "running":
        return None
    out: dict[str, float] = {}
    for name, value in values.items():
        if name not in KEPT or value is None or isinstance(value, str | bool):
            continue
        try:
            v = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            out[name] = v
    return out or None


def _clean(x: Features) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in x.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out[k] = f
    return out


def _resolution(v: Arr) -> float:
    """The smallest step between distinct values (the sensor's quantisation, or finer)."""
    u = np.unique(v)
    d = np.diff(u)
    d = d[d > 0]
    return float(d.min()) if d.size else 0.0


class _Model:
    """One target's fitted regression (see the module doc)."""

    def __init__(
        self, lag: float | None, cols: list[int], mu: Arr, sd: Arr, intercept: float, beta: Arr, ainv: Arr,
        spread: float, n: int,
    ) -> None:  # fmt: skip
        self.lag, self.cols, self.mu, self.sd = lag, cols, mu, sd
        self.intercept, self.beta, self.ainv, self.spread, self.n = intercept, beta, ainv, spread, n

    def as_dict(self) -> dict[str, object]:
        return {
            "lag": self.lag, "cols": self.cols, "mu": self.mu.tolist(), "sd": self.sd.tolist(),
            "intercept": self.intercept, "beta": self.beta.tolist(), "ainv": self.ainv.tolist(),
            "spread": self.spread, "n": self.n,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> _Model:
        cols = [int(c) for c in d["cols"]]
        k = len(cols)
        lag = None if d["lag"] is None else float(d["lag"])
        mu = np.asarray(d["mu"], dtype=float).reshape(k)
        sd = np.asarray(d["sd"], dtype=float).reshape(k)
        beta = np.asarray(d["beta"], dtype=float).reshape(k)
        ainv = np.asarray(d["ainv"], dtype=float).reshape(k, k)
        m = cls(lag, cols, mu, sd, float(d["intercept"]), beta, ainv, float(d["spread"]), int(d["n"]))
        arrays = (mu, sd, beta, ainv, np.array([m.intercept, m.spread]))
        if not all(np.isfinite(a).all() for a in arrays) or not (sd > 0).all() or not m.spread > 0 or m.n < 1:
            raise ValueError("values out of range")
        if lag is not None and not lag >= 1:
            raise ValueError("lag out of range")
        return m


def _design(ops: Arr) -> Arr:
    """Regressor columns from operating-point values (n x k): each value and its square."""
    return np.concatenate([ops, ops * ops], axis=1)


def _fit(z_raw: Arr, y: Arr, resolution: float) -> tuple[_Model, float] | None:
    """Robust ridge fit of ``y`` on the columns of ``z_raw``; the model and its spread."""
    n = len(y)
    mu_all = z_raw.mean(axis=0) if z_raw.shape[1] else np.zeros(0)
    sd_all = z_raw.std(axis=0) if z_raw.shape[1] else np.zeros(0)
    # Columns that did not move in the warm-up carry no information.
    scale = np.maximum(np.abs(mu_all), 1.0)
    cols = [j for j in range(z_raw.shape[1]) if sd_all[j] > 1e-9 * scale[j]]
    mu, sd = mu_all[cols], sd_all[cols]
    z = (z_raw[:, cols] - mu) / sd if cols else np.zeros((n, 0))
    w = np.ones(n)
    spread = 0.0
    intercept = float(np.median(y))
    beta = np.zeros(len(cols))
    ainv = np.zeros((len(cols), len(cols)))
    for _ in range(HUBER_ROUNDS + 1):
        sw = w.sum()
        zm = (w @ z) / sw if cols else np.zeros(0)
        ym = float(w @ y / sw)
        zc = z - zm
        a = (zc * w[:, None]).T @ zc + RIDGE * n * np.eye(len(cols))
        try:
            ainv = np.linalg.inv(a)
        except np.linalg.LinAlgError:
            return None
        beta = ainv @ (zc * w[:, None]).T @ (y - ym)
        intercept = ym - float(zm @ beta)
        r = y - intercept - z @ beta
        spread = max(MAD_TO_STD * float(np.median(np.abs(r - np.median(r)))), resolution)
        if not spread > 0:
            return None
        w = np.minimum(1.0, HUBER_K / np.maximum(np.abs(r) / spread, 1e-12))
    # The leverage uses the unweighted design, as a new sample has weight one.
    zc = z - z.mean(axis=0) if cols else z
    ainv = np.linalg.inv(zc.T @ zc + RIDGE * n * np.eye(len(cols)))
    return _Model(None, cols, mu, sd, intercept, beta, ainv, spread, n), spread


class OperatingPointDetector:
    """Robust ridge regression of each monitored signal on the operating point (module doc)."""

    name = "operating_point"

    def __init__(self, *, warmup: int = 60) -> None:
        self.warmup = warmup
        self._buffer: list[dict[str, float]] = []
        self._seen = 0
        self.regressors: list[str] = []
        self._models: dict[str, _Model] = {}
        #: Smoothed operating point (and ambient) per thermal time constant, in samples.
        self._lags = sorted({max(1.0, round(warmup * f, 1)) for f in LAG_FRACTIONS})
        self._ewma: dict[float, Arr] = {}
        self._ewma_amb: dict[float, float] = {}
        self._last_op: Arr = np.zeros(0)
        self._last_amb: float | None = None
        self._cache: tuple[int, Arr, list[str], dict[str, float]] | None = None

    #: The worker extracts this detector's features with it (see analytics.worker._score).
    features = staticmethod(operating_point_features)

    @property
    def ready(self) -> bool:
        return self._seen >= self.warmup and bool(self._models)

    # --- learning ---------------------------------------------------------------------

    def learn_one(self, x: Features) -> None:
        if self._seen >= self.warmup:
            return  # the model is frozen after the warm-up
        sample = _clean(x)
        if not sample:
            return  # nothing usable: not counted as a warm-up sample
        self._buffer.append(sample)
        self._seen += 1
        if self._seen >= self.warmup:
            self._train()
            if not self._models:  # nothing could be modelled: learn again from the next samples
                self._seen = 0

    def _train(self) -> None:
        rows = self._buffer
        n = len(rows)
        if n == 0:
            return

        def present(name: str) -> bool:
            return sum(name in r for r in rows) >= MIN_PRESENT * n

        self.regressors = [s for s in OPERATING_POINT if present(s)]
        k = len(self.regressors)
        ops = np.array([[r.get(s, np.nan) for s in self.regressors] for r in rows], dtype=float).reshape(n, k)
        ops = _fill(ops)
        amb_raw = np.array([r.get(AMBIENT, np.nan) for r in rows], dtype=float)
        has_amb = present(AMBIENT)
        amb = _fill(amb_raw[:, None])[:, 0] if has_amb else np.zeros(n)
        smoothed = {lag: _ewma_rows(ops, lag) for lag in self._lags}
        smoothed_amb = {lag: _ewma_rows(amb[:, None], lag)[:, 0] for lag in self._lags}
        models: dict[str, _Model] = {}
        for target in (*RISING_ONLY, *TWO_SIDED):
            if target in self.regressors or not present(target):
                continue
            y_raw = np.array([r.get(target, np.nan) for r in rows], dtype=float)
            ok = np.isfinite(y_raw)
            if len(np.unique(y_raw[ok])) < MIN_DISTINCT:
                continue
            res = _resolution(y_raw[ok])
            best: _Model | None = None
            if target in THERMAL:
                for lag in self._lags:
                    y = y_raw - smoothed_amb[lag] if has_amb else y_raw
                    fit = _fit(_design(smoothed[lag])[ok], y[ok], res)
                    if fit is not None and (best is None or fit[1] < best.spread):
                        best = fit[0]
                        best.lag = lag
            else:
                fit = _fit(_design(ops)[ok], y_raw[ok], res)
                best = fit[0] if fit is not None else None
            if best is not None:
                models[target] = best
        self._models = models
        self._has_amb = has_amb
        # Carry the smoothed operating point on from the end of the warm-up.
        self._ewma = {lag: smoothed[lag][-1].copy() for lag in self._lags} if n else {}
        self._ewma_amb = {lag: float(smoothed_amb[lag][-1]) for lag in self._lags}
        self._last_op = ops[-1].copy() if n else np.zeros(k)
        self._last_amb = float(amb[-1]) if has_amb else None
        self._buffer = []

    # --- scoring ----------------------------------------------------------------------

    def _step(self, x: Mapping[str, float]) -> tuple[Arr, float | None]:
        """Advance the smoothed operating point by one sample; the current one and ambient."""
        op = self._last_op.copy()
        for j, s in enumerate(self.regressors):
            v = x.get(s)
            if v is not None:
                op[j] = v  # a missing regressor holds its last value
        self._last_op = op
        amb = x.get(AMBIENT, self._last_amb)
        self._last_amb = amb
        for lag in self._lags:
            a = 1.0 / lag
            if lag in self._ewma:
                self._ewma[lag] = self._ewma[lag] + a * (op - self._ewma[lag])
            if amb is not None and lag in self._ewma_amb:
                self._ewma_amb[lag] += a * (amb - self._ewma_amb[lag])
        return op, amb

    def _z(self, x: Features, *, advance: bool) -> tuple[Arr, list[str], dict[str, float]]:
        if not self.ready:
            return np.zeros(0), [], {}
        if self._cache is not None and self._cache[0] == id(x) and not advance:
            return self._cache[1], self._cache[2], self._cache[3]
        clean = _clean(x)
        if advance:
            op, amb = self._step(clean)
        else:
            op, amb = self._last_op, self._last_amb
        zs: list[float] = []
        names: list[str] = []
        preds: dict[str, float] = {}
        for target, m in self._models.items():
            y = clean.get(target)
            if y is None:
                continue
            if m.lag is not None:
                reg = self._ewma.get(m.lag, op)
                if self._has_amb:
                    base = self._ewma_amb.get(m.lag, amb)
                    if base is None:
                        continue
                    y -= base
                    offset = base - (amb if amb is not None else base)
                else:
                    offset = 0.0
            else:
                reg, offset = op, 0.0
            zcol = (_design(reg[None, :])[0][m.cols] - m.mu) / m.sd
            pred = m.intercept + float(zcol @ m.beta)
            zc = zcol - 0.0  # centred on the warm-up mean (the standardisation did that)
            h = float(zc @ m.ainv @ zc)
            width = m.spread * math.sqrt(1.0 + 1.0 / m.n + max(h, 0.0))
            z = (y - pred) / width
            if not math.isfinite(z):
                continue
            zs.append(z if target in RISING_ONLY else abs(z))
            names.append(target)
            # The normal level, as a rise over the current ambient for temperatures (the
            # worker adds the ambient back).
            preds[target] = pred + offset
        out = np.array(zs, dtype=float)
        self._cache = (id(x), out, names, preds)
        return out, names, preds

    def score_one(self, x: Features) -> float:
        z, _, _ = self._z(x, advance=True)
        return float(max(z.max(), 0.0)) if z.size else 0.0

    def explain_one(self, x: Features) -> str:
        z, names, _ = self._z(x, advance=False)
        return names[int(z.argmax())] if z.size else ""

    def normal(self, name: str) -> float | None:
        """The predicted level of ``name`` at the last scored sample's operating point
        (temperatures as rises over the ambient, as the worker expects), None if unknown."""
        if self._cache is None:
            return None
        return self._cache[3].get(name)

    # --- persistence ------------------------------------------------------------------

    def state(self) -> dict[str, object]:
        """What it learned (or the warm-up so far), as JSON-ready values (see :meth:`load_state`)."""
        return {
            "v": 1,
            "detector": self.name,
            "warmup": self.warmup,
            "seen": self._seen,
            "buffer": [dict(r) for r in self._buffer],
            "regressors": list(self.regressors),
            "has_amb": bool(getattr(self, "_has_amb", False)),
            "models": {k: m.as_dict() for k, m in self._models.items()},
            "lags": list(self._lags),
            "ewma": {str(lag): v.tolist() for lag, v in self._ewma.items()},
            "ewma_amb": {str(lag): v for lag, v in self._ewma_amb.items()},
            "last_op": self._last_op.tolist(),
            "last_amb": self._last_amb,
        }

    def load_state(self, state: dict[str, object]) -> None:
        """Go on from a :meth:`state`; raises ValueError if it does not fit."""
        try:
            if state.get("v") != 1 or state.get("detector") != self.name:
                raise ValueError("not an operating_point state, version 1")
            s: Mapping[str, Any] = state
            regressors = [str(r) for r in s["regressors"]]
            k = len(regressors)
            models = {str(t): _Model.from_dict(d) for t, d in s["models"].items()}
            lags = [float(v) for v in s["lags"]]
            ewma = {float(lag): np.asarray(v, dtype=float).reshape(k) for lag, v in s["ewma"].items()}
            ewma_amb = {float(lag): float(v) for lag, v in s["ewma_amb"].items()}
            last_op = np.asarray(s["last_op"], dtype=float).reshape(k)
            last_amb = None if s["last_amb"] is None else float(s["last_amb"])
            buffer = [{str(a): float(b) for a, b in r.items()} for r in s["buffer"]]
            seen = int(s["seen"])
            has_amb = bool(s["has_amb"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"bad operating_point state: {exc}") from None
        for m in models.values():
            if any(c >= 2 * k or c < 0 for c in m.cols):
                raise ValueError("bad operating_point state: regressor columns out of range")
        if not all(np.isfinite(v).all() for v in (*ewma.values(), last_op)) or seen < 0:
            raise ValueError("bad operating_point state: values out of range")
        self.regressors, self._models, self._lags = regressors, models, lags
        self._ewma, self._ewma_amb, self._last_op, self._last_amb = ewma, ewma_amb, last_op, last_amb
        self._buffer, self._seen, self._has_amb = buffer, seen, has_amb
        self._cache = None


def _fill(a: Arr) -> Arr:
    """Missing values (NaN) of each column replaced by the last value before (or the first after)."""
    out = a.copy()
    for j in range(out.shape[1]):
        col = out[:, j]
        ok = np.isfinite(col)
        if not ok.any():
            col[:] = 0.0
            continue
        idx = np.where(ok, np.arange(len(col)), 0)
        np.maximum.accumulate(idx, out=idx)
        first = int(np.argmax(ok))
        col[:first] = col[first]
        col[first:] = col[idx[first:]]
    return out


def _ewma_rows(a: Arr, lag: float) -> Arr:
    """Exponentially smoothed rows of ``a`` (time constant ``lag`` samples), started at the first row."""
    out = np.empty_like(a)
    alpha = 1.0 / lag
    s = a[0].copy() if len(a) else np.zeros(a.shape[1])
    for i in range(len(a)):
        s = s + alpha * (a[i] - s)
        out[i] = s
    return out
