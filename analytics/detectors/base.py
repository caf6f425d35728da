"""The detector protocol: learn what normal looks like, score how far a sample is from it.

A detector sees one machine's samples one at a time, in time order, as a mapping of feature
name to value (see :mod:`analytics.features`), and never looks ahead: what it says about a
sample depends only on the samples before it. That is how the worker runs it on live data,
and how the evaluation harness scores it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

Features = Mapping[str, float]


class Detector(Protocol):
    #: Short name, written as the ``detector`` tag of anomaly points.
    name: str

    @property
    def ready(self) -> bool:
        """True once the detector has learned enough to score."""
        ...

    def learn_one(self, x: Features) -> None:
        """Learn from a sample assumed normal."""
        ...

    def score_one(self, x: Features) -> float:
        """How anomalous ``x`` is; comparable to the detector's threshold."""
        ...

    def explain_one(self, x: Features) -> str:
        """The feature that contributes most to the score of ``x``."""
        ...
