"""The refit policy: a machine's model follows its healthy normal, never a developing fault.

A model learned once, in a warm-up of hours, knows only the operating points and the weather
of those hours. With ``analytics.refit_every_h`` set, each machine also learns a
*candidate* model over every period of that many hours of device time, and the candidate
replaces the model in use at the period's end when the period was healthy:

* the candidate learns only from **normal** samples: settled, running, and not anomalous
  for the model in use (score at most the threshold), spread evenly over the period (every
  ``stride``-th such sample, so that the detector's warm-up count covers the whole period:
  a weekend and the shifts);
* the period as a whole must sit close to the machine's **first model** (the commissioning
  model, kept for good): the mean score of the candidate's samples under it, in units of
  the threshold, at most ``analytics.refit_max_drift`` (0.33: a third of the way to an
  alarm). A fault that develops over weeks pushes that mean up period after period, and
  each refit is measured against the same first model, so the baseline cannot be walked up
  step by step: past the bound the refit is refused, logged and counted, and the model in
  use stays.

What it changes: spreads learned over a week of shifts and weekends instead of a few hours,
so a warm-up that happened to span a shift change (too wide) or a quiet night (too narrow)
is corrected after the first period. What it does not do: accept a higher normal after a
repair or a change of duty that the first model would call drifted; that needs the model
relearned on purpose (a fresh worker state for that machine).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from analytics.detectors import Detector
from analytics.detectors.base import Features

log = logging.getLogger("analytics")


@dataclass
class Verdict:
    """The end of a refit period: the new model (None: kept the old), and why."""

    model: Detector | None
    reason: str


class Refit:
    """One machine's refit policy (see the module docstring)."""

    def __init__(
        self,
        factory: Callable[[int], Detector],
        *,
        warmup: int,
        every_h: float,
        max_drift: float,
        threshold: float,
    ) -> None:
        self.factory = factory
        self.warmup = warmup
        self.every_ms = int(every_h * 3_600_000)
        self.max_drift = max_drift
        self.threshold = threshold
        self.reference: Detector | None = None
        self.candidate: Detector | None = None
        self.since_ms = 0
        self.stride = 1
        self.normal_seen = 0
        self.drift_sum = 0.0
        self.drift_n = 0
        self._last_ts: int | None = None
        self.interval_ms: float | None = None

    def observe(self, current: Detector, ts_ms: int, x: Features, score: float) -> Verdict | None:
        """A settled, running, scored sample; a verdict at the end of each period."""
        if self.reference is None:
            self.reference = current  # the first model: the yardstick of every refit
        if self._last_ts is not None and ts_ms > self._last_ts:
            dt = ts_ms - self._last_ts
            self.interval_ms = dt if self.interval_ms is None else self.interval_ms + 0.01 * (dt - self.interval_ms)
        self._last_ts = max(ts_ms, self._last_ts or ts_ms)
        if self.candidate is None:
            self.candidate = self.factory(self.warmup)
            self.since_ms = ts_ms
            per_period = self.every_ms / self.interval_ms if self.interval_ms else self.warmup
            self.stride = max(1, int(per_period / max(self.warmup, 1) / 2))  # running about half the time
            self.normal_seen = self.drift_n = 0
            self.drift_sum = 0.0
        if score <= self.threshold:
            self.normal_seen += 1
            if self.normal_seen % self.stride == 0 and not self.candidate.ready:
                self.candidate.learn_one(x)
                reference = score if self.reference is current else self.reference.score_one(x)
                self.drift_sum += reference / self.threshold
                self.drift_n += 1
        if ts_ms - self.since_ms < self.every_ms:
            return None
        candidate, self.candidate = self.candidate, None
        if not candidate.ready:
            return Verdict(None, f"too few normal samples in the period ({self.drift_n} of {self.warmup})")
        drift = self.drift_sum / max(self.drift_n, 1)
        if drift > self.max_drift:
            return Verdict(
                None,
                f"the period sits {drift:.2f} thresholds from the first model (limit {self.max_drift:.2f}): "
                "a developing fault is not learned as normal",
            )
        return Verdict(candidate, f"refitted on {self.drift_n} normal samples (drift {drift:.2f})")

    def state(self) -> dict[str, Any]:
        def of(d: Detector | None) -> Any:
            get = getattr(d, "state", None)
            return get() if callable(get) else None

        return {
            "reference": of(self.reference),
            "candidate": of(self.candidate),
            "since": self.since_ms,
            "stride": self.stride,
            "normal_seen": self.normal_seen,
            "drift_sum": self.drift_sum,
            "drift_n": self.drift_n,
            "interval": self.interval_ms,
        }

    def load_state(self, state: Any) -> None:
        """Go on from :meth:`state`; anything unusable starts the policy afresh."""
        if not isinstance(state, dict):
            return
        try:
            reference = self._detector(state.get("reference"))
            candidate = self._detector(state.get("candidate"))
            since, stride, seen, n = (int(state[k]) for k in ("since", "stride", "normal_seen", "drift_n"))
            drift_sum = float(state["drift_sum"])
            interval = state.get("interval")
            interval_ms = None if interval is None else float(interval)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("the saved refit state cannot be used (%s); starting the refit policy afresh", exc)
            return
        self.reference, self.candidate = reference, candidate
        self.since_ms, self.stride, self.normal_seen, self.drift_n = since, max(stride, 1), seen, n
        self.drift_sum, self.interval_ms = drift_sum, interval_ms

    def _detector(self, saved: Any) -> Detector | None:
        if saved is None:
            return None
        d = self.factory(self.warmup)
        load = getattr(d, "load_state", None)
        if load is None:
            raise ValueError("the detector cannot be restored")
        load(saved)
        return d
