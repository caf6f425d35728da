"""Multivariate pump anomaly detector: short moving averages against the machine's own spread.

What it does, in plain words
----------------------------
A pump fault (a throttled valve, a rotor imbalance, cavitation, a leak) moves the *level* of
some signals and keeps it there: the flow drops by a litre a minute, the vibration RMS rises
by a few per cent. Single readings are far too noisy to see that (flow meters are quantised
to whole units, the current and voltage channels swing over most of their range from one
second to the next), but the average of the last ``window`` readings is steady on a healthy
pump. So the detector:

1. learns, from the first readings of the machine (the training part, assumed healthy), for
   every signal the typical value of its ``window``-row moving average (the median) and how
   much that average wanders (its standard deviation, measured on the training data
   itself, so sensor noise, quantisation and the short-term autocorrelation of each signal
   are all accounted for without assumptions);
2. for every new reading, averages each signal over the last ``window`` rows (rows up to
   and including the current one only, so it can run live) and expresses the distance of
   that average from the learned typical value in units of the learned spread, a z-score
   that means the same on every machine and every signal;
3. scores the reading with the largest of these z-scores and raises an alarm when it
   exceeds ``k`` (a "k-sigma" control limit on the moving average, as in a Shewhart chart
   of subgroup means). The signal with the largest z-score is the explanation.

Why these choices
-----------------
* *Moving average, not single readings:* averaging ``w`` rows divides white noise by
  about ``sqrt(w)`` while a sustained shift is kept whole; 20 rows (20 s at 1 Hz) is short
  against the minutes a fault lasts, so the alarm comes and goes within seconds of the
  fault, and long enough to see a one-unit drop of a quantised flow meter.
* *Spread of the average measured, not assumed:* the standard deviation of the training
  moving averages includes whatever slow wander and autocorrelation the signal has; no
  Gaussian or white-noise assumption is needed. A floor of ``step / sqrt(12 w)``, the
  quantisation noise of the sensor's own resolution ``step`` (the smallest difference
  between two distinct training values), stops a signal that sat on one quantisation level
  during training from turning one step into an infinite score.
* *Maximum over signals:* a fault usually shows in one or two signals; the maximum keeps
  the signal that explains the alarm and a single threshold for any number of signals.
  Combining the z-scores (Hotelling T-squared with Ledoit-Wolf shrinkage, root mean
  square) was tried on SKAB and gave the same trade-off between missed and false alarms.
* *Slow thermal signals are not compared by level* (``ignore``): liquid and motor
  temperatures follow the heat balance of the tank and the room over tens of minutes, so a
  training window of a few minutes cannot tell their normal range; in SKAB they drift by
  3 to 7 training standard deviations in healthy operation, and monitoring their level
  doubles the false-alarm rate. :func:`skab_factory` therefore leaves out
  ``Temperature`` and ``Thermocouple``.
* *Constant training signals* (no spread at all) are left out: nothing can be said about
  their normal range.

Hyperparameters: ``window`` (20 rows) and ``k`` (6 spreads). Both are in units that carry
over between machines: seconds of averaging at the machine's sampling rate, and multiples
of the machine's own spread. Because the moving average of real signals is not Gaussian
(slow wander beyond the training window), ``k`` is higher than a Gaussian tail would
suggest. On SKAB (34 files, 400 training rows each, causal check), the defaults give
F1 0.82, false-alarm rate 12.6 %, missed-alarm rate 23.6 %; over windows of 10 to 40 rows
and ``k`` of 5 to 8, F1 stays between 0.79 and 0.83 while the false-alarm rate moves
between 6 and 18 %.

How much healthy data to learn from
-----------------------------------
Vibration RMS and flow of a healthy pump wander slowly over hours (bearing and water
temperature). Four hundred seconds of training do not show that wander, so on SKAB's 2.6-h
anomaly-free recording the detector, trained on 400 rows, false-alarms on 22 % of the next
800 rows on average; trained on 2000 rows, 2.7 %; on 3600 rows (one hour), none. On the
platform, learn from at least an hour of healthy running: the streaming form's default
``n_train`` is 3600 rows (one hour at 1 Hz).

Interfaces
----------
* :class:`MovingAverageDetector`: ``fit(X)`` then ``score(X)`` (batch, causal; each call
  starts right after the training rows) with ``threshold``; or row by row with
  ``learn(x)`` (training rows, fits itself after ``n_train`` rows) and ``update_one(x)``,
  which give the same scores as ``score`` (see :func:`self_check`).
* :func:`skab_factory`: the detector configured for the SKAB water-pump test rig.
* :class:`UnivariateDetector` / :func:`univariate_factory`: the same idea for a machine
  with one signal, ``score_one(timestamp, value)`` in [0, 1], 0.5 at the alarm limit.

>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(600, 3))
>>> X[500:, 1] += 3.0                      # a sustained shift of 3 raw sigma in signal 1
>>> det = MovingAverageDetector(window=20, k=6.0)
>>> det.fit(X[:400])
>>> s = det.score(X[400:])
>>> bool((s[:100] > det.threshold).any()), bool((s[130:] > det.threshold).all())
(False, True)
>>> self_check(det, X[400:])
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from analytics.features import CONDITION_SIGNALS

FloatArray = npt.NDArray[np.float64]

#: SKAB column order, as the harness passes them.
SKAB_FEATURES = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
)
#: Slow thermal signals of the SKAB rig, left out of the level test (see module docstring).
SKAB_THERMAL = (4, 5)

DEFAULT_WINDOW = 20
DEFAULT_K = 6.0
DEFAULT_N_TRAIN = 3600  # one hour at 1 Hz, see module docstring


def _resolution(x: FloatArray) -> float:
    """Smallest difference between distinct values: the sensor's apparent resolution."""
    u = np.unique(x)
    return float(np.diff(u).min()) if u.size > 1 else 0.0


def _moving_average(X: FloatArray, w: int) -> FloatArray:
    """Mean of each row and the ``w - 1`` rows before it; only rows with a full window."""
    c = np.cumsum(X, axis=0, dtype=np.float64)
    out = c[w - 1 :].copy()
    out[1:] -= c[:-w]
    result: FloatArray = out / w
    return result


class MovingAverageDetector:
    """Largest z-score over signals of the ``window``-row moving average (see module doc).

    Parameters
    ----------
    window:
        Rows averaged (including the current one). 20 = 20 s at 1 Hz.
    k:
        Alarm limit in learned spreads of the moving average (``threshold``).
    ignore:
        Column indices not compared by level (slow thermal signals).
    n_train:
        Rows the streaming form learns from before it fits itself (``learn``/``update_one``).
    """

    name = "moving_average"

    def __init__(
        self,
        *,
        window: int = DEFAULT_WINDOW,
        k: float = DEFAULT_K,
        ignore: Sequence[int] = (),
        n_train: int = DEFAULT_N_TRAIN,
    ) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        if n_train < 2 * window:
            raise ValueError("n_train must be at least 2 * window")
        self.window = int(window)
        self.k = float(k)
        self.threshold = float(k)
        self.ignore = tuple(int(i) for i in ignore)
        self.n_train = int(n_train)
        self.columns_: npt.NDArray[np.intp] = np.zeros(0, dtype=np.intp)
        self.center_: FloatArray = np.zeros(0)
        self.spread_: FloatArray = np.zeros(0)
        self._history: FloatArray = np.zeros((0, 0))
        self._train: list[FloatArray] = []
        self._fitted = False
        # streaming state (pure Python floats: much faster than numpy for one row)
        self._cols: list[int] = []
        self._inv: list[float] = []
        self._offset: list[float] = []
        self._ring: list[list[float]] = []
        self._sums: list[float] = []
        self._pos = 0
        self._since_resum = 0
        self.last_explain = -1

    # ------------------------------------------------------------------ batch
    @property
    def ready(self) -> bool:
        return self._fitted

    def fit(self, X: npt.ArrayLike) -> None:
        """Learn typical value and spread of each signal's moving average from healthy rows."""
        A = np.asarray(X, dtype=np.float64)
        if A.ndim != 2 or A.shape[0] < 2 * self.window:
            raise ValueError(f"fit needs a 2-D array with at least {2 * self.window} rows")
        d = A.shape[1]
        keep = [j for j in range(d) if j not in self.ignore and _resolution(A[:, j]) > 0.0]
        cols = np.asarray(keep, dtype=np.intp)
        M = _moving_average(A[:, cols], self.window)
        center = np.median(M, axis=0)
        floor = np.array([_resolution(A[:, j]) for j in keep]) / math.sqrt(12.0 * self.window)
        spread = np.maximum(M.std(axis=0), floor)
        self.columns_, self.center_, self.spread_ = cols, center, spread
        self._history = A[A.shape[0] - (self.window - 1) :].copy()
        self._fitted = True
        self._reset_stream()

    def _z(self, X: FloatArray) -> FloatArray:
        if not self._fitted:
            raise RuntimeError("fit the detector first")
        full = np.vstack([self._history, X]) if self.window > 1 else X
        M = _moving_average(full[:, self.columns_], self.window)
        z: FloatArray = np.abs(M - self.center_) / self.spread_
        return z

    def score(self, X: npt.ArrayLike) -> FloatArray:
        """Score rows that follow the training rows; row i uses only rows <= i (causal)."""
        A = np.asarray(X, dtype=np.float64)
        if A.shape[0] == 0:
            return np.zeros(0)
        z = self._z(A)
        if z.shape[1] == 0:
            return np.zeros(A.shape[0])
        s: FloatArray = z.max(axis=1)
        return s

    def explain(self, X: npt.ArrayLike) -> npt.NDArray[np.intp]:
        """Column index of the signal behind each row's score (-1 if none monitored)."""
        A = np.asarray(X, dtype=np.float64)
        z = self._z(A)
        if z.shape[1] == 0:
            return np.full(A.shape[0], -1, dtype=np.intp)
        idx: npt.NDArray[np.intp] = self.columns_[z.argmax(axis=1)]
        return idx

    # -------------------------------------------------------------- streaming
    def _reset_stream(self) -> None:
        w = self.window
        self._cols = [int(c) for c in self.columns_]
        self._inv = [1.0 / (w * float(s)) for s in self.spread_]
        self._offset = [float(c) / float(s) for c, s in zip(self.center_, self.spread_, strict=True)]
        hist = self._history[:, self.columns_] if self.columns_.size else np.zeros((w - 1, 0))
        # ring of the last w rows per monitored column; slot for the next row left at 0
        self._ring = [[*hist[:, i].tolist(), 0.0] for i in range(len(self._cols))]
        self._sums = [math.fsum(r) for r in self._ring]
        self._pos = w - 1
        self._since_resum = 0

    def learn(self, x: npt.ArrayLike) -> None:
        """Add one healthy training row; after ``n_train`` rows the detector fits itself."""
        if self._fitted:
            return
        self._train.append(np.asarray(x, dtype=np.float64).reshape(-1))
        if len(self._train) >= self.n_train:
            self.fit(np.vstack(self._train))
            self._train = []

    def update_one(self, x: Sequence[float] | FloatArray) -> float:
        """Score one row (same value as :meth:`score` gives for it); learns until fitted (returns 0).

        A row with a missing (NaN) or infinite value in a monitored signal is not scored and
        leaves the moving averages as they were (returns 0): the data-quality monitor, not
        this detector, reports such readings.
        """
        if not self._fitted:
            row = np.asarray(x, dtype=np.float64).reshape(-1)
            if np.isfinite(row).all():
                self.learn(row)
            return 0.0
        if not all(math.isfinite(x[c]) for c in self._cols):
            return 0.0
        pos = self._pos
        best = 0.0
        arg = -1
        ring, sums, offset, inv = self._ring, self._sums, self._offset, self._inv
        for i, c in enumerate(self._cols):
            v = float(x[c])
            r = ring[i]
            s = sums[i] + v - r[pos]
            r[pos] = v
            sums[i] = s
            z = abs(s * inv[i] - offset[i])
            if z > best:
                best = z
                arg = c
        self._pos = pos + 1 if pos + 1 < self.window else 0
        self._since_resum += 1
        if self._since_resum >= 4096:  # bound round-off of the running sums
            self._sums = [math.fsum(r) for r in ring]
            self._since_resum = 0
        self.last_explain = arg
        return best

    # ------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        """Everything needed to go on scoring after a restart, as JSON-ready values: the
        learned typical values and spreads and the last ``window - 1`` rows of the monitored
        signals (the training rows while still learning)."""
        base: dict[str, Any] = {
            "v": 1,
            "detector": self.name,
            "window": self.window,
            "k": self.k,
            "ignore": list(self.ignore),
            "n_train": self.n_train,
            "fitted": self._fitted,
        }
        if not self._fitted:
            return base | {"train": [row.tolist() for row in self._train]}
        w = self.window
        recent = [[r[(self._pos + 1 + i) % w] for i in range(w - 1)] for r in self._ring]  # oldest first
        return base | {
            "columns": self.columns_.tolist(),
            "center": self.center_.tolist(),
            "spread": self.spread_.tolist(),
            "recent": recent,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MovingAverageDetector:
        """The detector :meth:`state` describes; raises ValueError for anything else."""
        try:
            if state.get("v") != 1 or state.get("detector") != cls.name:
                raise ValueError("not a moving_average detector state, version 1")
            det = cls(
                window=int(state["window"]), k=float(state["k"]), ignore=state["ignore"], n_train=int(state["n_train"])
            )
            if not state["fitted"]:
                det._train = [np.asarray(row, dtype=np.float64) for row in state["train"]]
                return det
            det.columns_ = np.asarray(state["columns"], dtype=np.intp)
            det.center_ = np.asarray(state["center"], dtype=np.float64)
            det.spread_ = np.asarray(state["spread"], dtype=np.float64)
            recent = np.asarray(state["recent"], dtype=np.float64).reshape(len(det.columns_), det.window - 1)
            n = det.columns_.size
            ok = det.center_.shape == (n,) and det.spread_.shape == (n,) and bool((det.spread_ > 0).all())
            if not ok or not np.isfinite(recent).all() or not np.isfinite(det.center_).all():
                raise ValueError("inconsistent detector state")
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"bad detector state: {exc}") from None
        width = int(det.columns_.max()) + 1 if n else 0
        det._history = np.zeros((det.window - 1, width))
        if n:
            det._history[:, det.columns_] = recent.T
        det._fitted = True
        det._reset_stream()
        return det


def self_check(det: MovingAverageDetector, X: npt.ArrayLike, rtol: float = 1e-9) -> bool:
    """True if streaming ``update_one`` reproduces batch ``score`` on ``X`` (fitted ``det``)."""
    A = np.asarray(X, dtype=np.float64)
    batch = det.score(A)
    det._reset_stream()
    stream = np.array([det.update_one(row) for row in A])
    det._reset_stream()
    return bool(np.allclose(stream, batch, rtol=rtol, atol=1e-9))


def skab_factory(**kwargs: Any) -> MovingAverageDetector:
    """Detector for the SKAB rig: thermal columns left out, 20-row window, limit 6 spreads."""
    kwargs.setdefault("ignore", SKAB_THERMAL)
    return MovingAverageDetector(**kwargs)


# ---------------------------------------------------------------------- univariate
def _log10_two_sided_tail(z: float) -> float:
    """log10 of P(|N(0,1)| > z), accurate far into the tail."""
    if z < 30.0:
        p = math.erfc(z / math.sqrt(2.0))
        if p > 0.0:
            return math.log10(p)
    # Mills ratio asymptote: P(|N| > z) ~ 2 phi(z) / z
    return (-0.5 * z * z - math.log(z) + 0.5 * math.log(2.0 / math.pi)) / math.log(10.0)


class UnivariateDetector:
    """One signal, one reading at a time: moving average against the learned spread.

    The first ``n_train`` readings are taken as healthy: from them the detector learns the
    typical value and the spread of the ``window``-reading moving average (as
    :class:`MovingAverageDetector` does per signal). Afterwards each reading's score is the
    two-sided Gaussian tail probability ``p`` of the moving average's z-score, mapped to
    [0, 1] as ``L / (L + L_k)`` with ``L = -log10 p`` and ``L_k`` the same at ``z = k``, so 0.5
    is the alarm limit on every machine, 0 is "exactly typical" and scores near 1 are far
    beyond the limit. The moving average is the persistence component: a single spike
    moves it by ``1 / window`` of its height, a sustained shift in full.
    ``timestamp`` is accepted for the worker's interface; readings are assumed evenly spaced.
    """

    name = "moving_average_1d"

    def __init__(self, *, window: int = DEFAULT_WINDOW, k: float = DEFAULT_K, n_train: int = DEFAULT_N_TRAIN) -> None:
        if window < 1 or n_train < 2 * window:
            raise ValueError("need window >= 1 and n_train >= 2 * window")
        self.window = int(window)
        self.k = float(k)
        self.n_train = int(n_train)
        self.threshold = 0.5
        self._lk = -_log10_two_sided_tail(self.k)
        self._train: list[float] = []
        self._fitted = False
        self._ring: list[float] = []
        self._sum = 0.0
        self._pos = 0
        self._center = 0.0
        self._inv = 1.0
        self._count = 0
        self.last_z = 0.0

    @property
    def ready(self) -> bool:
        return self._fitted

    def _fit(self) -> None:
        x = np.asarray(self._train, dtype=np.float64)
        M = _moving_average(x[:, None], self.window)[:, 0]
        step = _resolution(x)
        spread = max(float(M.std()), step / math.sqrt(12.0 * self.window))
        self._center = float(np.median(M))
        self._inv = 1.0 / spread if spread > 0.0 else 0.0  # constant signal: never alarms
        self._ring = [*x[x.size - (self.window - 1) :].tolist(), 0.0]
        self._sum = math.fsum(self._ring)
        self._pos = self.window - 1
        self._fitted = True
        self._train = []

    def score_one(self, timestamp: float, value: float) -> float:
        """Score in [0, 1]; 0.5 = alarm limit. 0 while learning, and for a missing (NaN) or
        infinite value, which is left out."""
        v = float(value)
        if not math.isfinite(v):
            return 0.0
        if not self._fitted:
            self._train.append(v)
            if len(self._train) >= self.n_train:
                self._fit()
            return 0.0
        pos = self._pos
        self._sum += v - self._ring[pos]
        self._ring[pos] = v
        self._pos = pos + 1 if pos + 1 < self.window else 0
        self._count += 1
        if self._count >= 4096:
            self._sum = math.fsum(self._ring)
            self._count = 0
        z = abs(self._sum / self.window - self._center) * self._inv
        self.last_z = z
        if z <= 0.0:
            return 0.0
        ll = -_log10_two_sided_tail(z)
        return ll / (ll + self._lk)


def univariate_factory(**kwargs: Any) -> UnivariateDetector:
    """Streaming single-signal detector (see :class:`UnivariateDetector`)."""
    return UnivariateDetector(**kwargs)


class UnivariateBank:
    """SKAB wrapper: one :class:`UnivariateDetector` per column, alarm if any exceeds 0.5.

    Used to evaluate the single-signal detector on the multivariate benchmark; ``ignore``
    leaves out columns as in :func:`skab_factory`.
    """

    def __init__(self, *, ignore: Sequence[int] = SKAB_THERMAL, **kwargs: Any) -> None:
        self.ignore = tuple(int(i) for i in ignore)
        self.kwargs = kwargs
        self.threshold = 0.5
        self._train: FloatArray = np.zeros((0, 0))

    def fit(self, X: npt.ArrayLike) -> None:
        self._train = np.asarray(X, dtype=np.float64)

    def score(self, X: npt.ArrayLike) -> FloatArray:
        A = np.asarray(X, dtype=np.float64)
        cols = [j for j in range(A.shape[1]) if j not in self.ignore]
        out = np.zeros(A.shape[0])
        for j in cols:
            det = UnivariateDetector(n_train=self._train.shape[0], **self.kwargs)
            for t, v in enumerate(self._train[:, j].tolist()):
                det.score_one(float(t), v)
            s = np.array([det.score_one(float(t), v) for t, v in enumerate(A[:, j].tolist())])
            out = np.maximum(out, s)
        return out


def univariate_bank_factory(**kwargs: Any) -> UnivariateBank:
    """Harness entry point for :class:`UnivariateBank`."""
    return UnivariateBank(**kwargs)


# ------------------------------------------------------------------ the worker's protocol
class MovingAverageFeatures:
    """:class:`MovingAverageDetector` behind the worker's :class:`~analytics.detectors.base.Detector`
    protocol (samples as feature mappings): the features of the first sample learned fix the
    columns; a later sample missing one of them is not scored."""

    name = "moving_average"

    def __init__(self, *, warmup: int = DEFAULT_N_TRAIN, window: int = DEFAULT_WINDOW, k: float = DEFAULT_K) -> None:
        self.detector = MovingAverageDetector(window=window, k=k, n_train=max(warmup, 2 * window))
        self.names: list[str] = []

    @property
    def ready(self) -> bool:
        return self.detector.ready

    def _row(self, x: Mapping[str, float]) -> list[float]:
        return [float(x.get(n, math.nan)) for n in self.names]

    def learn_one(self, x: Mapping[str, float]) -> None:
        if not self.names:
            # The condition signals: the inputs of the zscore's laws (flows, pressure drops,
            # smoothed currents) follow production and are no levels to hold.
            self.names = sorted(k for k in x if k in CONDITION_SIGNALS) or sorted(x)
        self.detector.update_one(self._row(x))

    def score_one(self, x: Mapping[str, float]) -> float:
        return self.detector.update_one(self._row(x))

    def state(self) -> dict[str, object]:
        return {"names": list(self.names), "detector_state": self.detector.state()}

    def load_state(self, state: dict[str, object]) -> None:
        inner = state.get("detector_state")
        names = state.get("names")
        if not isinstance(inner, dict) or not isinstance(names, list):
            raise ValueError("bad moving_average state")
        self.detector = MovingAverageDetector.from_state(inner)
        self.names = [str(n) for n in names]

    def normal(self, name: str) -> float | None:
        """The learned typical level of feature ``name`` (None if it is not monitored)."""
        d = self.detector
        if not d.ready or name not in self.names:
            return None
        hits = np.flatnonzero(d.columns_ == self.names.index(name))
        return float(d.center_[hits[0]]) if hits.size else None

    def explain_one(self, x: Mapping[str, float]) -> str:
        i = self.detector.last_explain
        return self.names[i] if 0 <= i < len(self.names) else ""
