"""The moving-average detector: causal, the same row by row as in batch, restartable from its
persisted state, robust to junk, and (where the data is beside the repository) on SKAB."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analytics.detectors.multivariate import (
    MovingAverageDetector,
    UnivariateDetector,
    self_check,
    skab_factory,
)
from tests.test_payload_fuzz import JUNK, fuzz

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _data(seed: int = 0, n: int = 900, shift_at: int = 600) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)) * [1.0, 0.1, 50.0, 2.0] + [0.0, 3.0, 1000.0, 60.0]
    X[shift_at:, 1] += 0.3  # three raw spreads of signal 1, sustained
    return X


def test_a_sustained_shift_is_found_and_healthy_rows_are_quiet() -> None:
    X = _data()
    det = MovingAverageDetector(window=20, k=6.0, n_train=400)
    det.fit(X[:400])
    s = det.score(X[400:])
    assert not (s[:200] > det.threshold).any()
    assert (s[240:] > det.threshold).all()
    assert set(det.explain(X[400:])[240:].tolist()) == {1}


def test_scale_free_the_same_labels_in_any_unit() -> None:
    X = _data(seed=1)
    a, b = MovingAverageDetector(n_train=400), MovingAverageDetector(n_train=400)
    a.fit(X[:400])
    b.fit(X[:400] * 1000 + 7)
    assert np.array_equal(a.score(X[400:]) > 6, b.score(X[400:] * 1000 + 7) > 6)


def test_causal_a_row_scores_the_same_without_the_rows_after_it() -> None:
    X = _data(seed=2)
    det = skab_factory(n_train=400)
    det.fit(X[:400])
    whole = det.score(X[400:])
    for cut in (1, 57, 200, 499):
        assert np.allclose(det.score(X[400 : 400 + cut]), whole[:cut])


def test_row_by_row_scores_equal_the_batch_scores() -> None:
    X = _data(seed=3)
    det = MovingAverageDetector(n_train=400)
    for row in X[:400]:
        assert det.update_one(row) == 0.0  # learning
    assert det.ready
    streamed = [det.update_one(row) for row in X[400:]]
    batch = MovingAverageDetector(n_train=400)
    batch.fit(X[:400])
    assert np.allclose(streamed, batch.score(X[400:]))
    assert self_check(batch, X[400:])


def test_state_survives_a_restart_exactly() -> None:
    X = _data(seed=4)
    det = MovingAverageDetector(n_train=400)
    for row in X[:400]:
        det.update_one(row)
    before = [det.update_one(row) for row in X[400:650]]
    state = json.loads(json.dumps(det.state()))  # through JSON, as it is stored
    restored = MovingAverageDetector.from_state(state)
    after = [restored.update_one(row) for row in X[650:]]
    straight = MovingAverageDetector(n_train=400)
    straight.fit(X[:400])
    assert np.allclose(before + after, straight.score(X[400:]))

    learning = MovingAverageDetector(n_train=400)
    for row in X[:100]:
        learning.update_one(row)
    resumed = MovingAverageDetector.from_state(json.loads(json.dumps(learning.state())))
    for row in X[100:400]:
        resumed.update_one(row)
    assert resumed.ready and np.allclose(resumed.center_, straight.center_)


@fuzz(200)
@given(
    state=st.dictionaries(
        st.sampled_from(
            [
                "v",
                "detector",
                "window",
                "k",
                "ignore",
                "n_train",
                "fitted",
                "columns",
                "center",
                "spread",
                "recent",
                "train",
            ]
        ),
        JUNK,
    )
)
def test_a_damaged_state_is_refused_with_value_error(state: dict[str, Any]) -> None:
    state.setdefault("v", 1)
    state.setdefault("detector", "moving_average")
    try:
        det = MovingAverageDetector.from_state(state)
    except ValueError:
        return
    det.update_one([0.0] * 8)  # what is accepted can score


def test_missing_and_infinite_values_are_left_out() -> None:
    X = _data(seed=5)
    det = MovingAverageDetector(n_train=400)
    det.fit(X[:400])
    reference = det.score(X[400:500])
    det._reset_stream()
    out = []
    for i, row in enumerate(X[400:500]):
        if i % 10 == 5:
            assert det.update_one([math.nan, math.inf, -math.inf, math.nan]) == 0.0
        out.append(det.update_one(row))
    assert np.allclose(out, reference)


def test_univariate_scores_are_in_0_1_with_half_at_the_limit() -> None:
    rng = np.random.default_rng(6)
    det = UnivariateDetector(n_train=400, window=20, k=6.0)
    values = [*rng.normal(size=700).tolist(), *(rng.normal(size=300) + 3.0).tolist()]
    scores = [det.score_one(float(t), v) for t, v in enumerate(values)]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert max(scores[400:700]) < 0.5 and min(scores[760:]) > 0.5
    for junk in (math.nan, math.inf):
        assert det.score_one(0.0, junk) == 0.0
    assert 0.5 < det.score_one(1001.0, 3.0) <= 1.0


@pytest.mark.skipif(
    not (SHARED / "datasets" / "skab" / "data").is_dir() or not (SHARED / "eval" / "skab_eval.py").is_file(),
    reason="SKAB data or its harness is not beside the repository (../shared)",
)
def test_skab_causal_f1_at_least_0_80_with_far_at_most_15() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(SHARED / "eval" / "skab_eval.py"),
            "--detector",
            "analytics.detectors.multivariate:skab_factory",
            "--causal",
        ],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    line = done.stdout.strip().splitlines()[-1]
    f1, far = float(line.split("F1 ")[1].split()[0]), float(line.split("FAR ")[1].split()[0])
    assert f1 >= 0.80 and far <= 15.0, line
