"""Anomaly detectors, one module each, all behind :class:`Detector`."""

from collections.abc import Callable

from analytics.detectors.base import Detector, Features
from analytics.detectors.multivariate import MovingAverageFeatures
from analytics.detectors.operating_point import OperatingPointDetector
from analytics.detectors.zscore import ZScoreDetector

#: Detector name -> factory taking the warm-up length.
DETECTORS: dict[str, Callable[[int], Detector]] = {
    "zscore": lambda warmup: ZScoreDetector(warmup=warmup),
    "moving_average": lambda warmup: MovingAverageFeatures(warmup=warmup),
    "operating_point": lambda warmup: OperatingPointDetector(warmup=warmup),
}

__all__ = ["DETECTORS", "Detector", "Features", "MovingAverageFeatures", "OperatingPointDetector", "ZScoreDetector"]
