"""``birlik bench latency``: its scoring of arrived alarms, its fault plan, and a tiny run."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ops import bench_latency as bl

ROOT = Path(__file__).resolve().parent.parent


def _r(arrived: float, machine: str, ts: int, kind: str = "condition", transition: str = "raised") -> bl.Received:
    return bl.Received(arrived, machine, f"{machine}.{kind}.{ts}#{transition}", kind, transition, ts)


def test_latency_is_from_the_decisive_sample_and_misses_and_false_alarms_are_counted() -> None:
    machines = ["a", "b", "c", "d"]
    # a and b faulted from 10_000 (one sample a second), c faulted but only 3 samples published.
    faulted = {
        "a": [10_000 + 1000 * k for k in range(8)],
        "b": [10_000 + 1000 * k for k in range(8)],
        "c": [17_000, 18_000, 19_000],
    }
    sent = {(m, ts): ts / 1000 for m in machines for ts in range(0, 20_000, 1000)}
    received = [
        _r(14.3, "a", 14_000),  # the 5th faulted sample: 0.3 s
        _r(14.4, "a", 14_000),  # a QoS 1 duplicate
        _r(15.0, "a", 14_000, transition="severity"),
        _r(16.9, "b", 15_000),  # the 6th: off the hysteresis, still timed (1.9 s)
        _r(5.0, "b", 4_000),  # before b's onset: false
        _r(9.0, "d", 8_000, kind="sensor"),  # a healthy machine: false, whatever the kind
        _r(12.0, "a", 11_000, kind="sensor"),  # another alarm of a faulted machine: not scored
    ]
    out = bl.evaluate(machines, faulted, sent, received, raise_after=5)
    assert out.latencies == pytest.approx({"a": 0.3, "b": 1.9})
    assert out.from_onset == pytest.approx({"a": 4.3, "b": 6.9})
    assert out.off_hysteresis == ["b"]
    assert out.missed == []  # c had too few faulted samples to be decidable
    assert sorted((r.machine, r.ts_ms) for r in out.false) == [("b", 4_000), ("d", 8_000)]
    assert [(r.machine, r.kind) for r in out.other] == [("a", "sensor")]
    assert bl.evaluate(machines, faulted, sent, received[4:], raise_after=5).missed == ["a", "b"]


def test_fault_plan_and_percentiles() -> None:
    plan = bl.plan_faults(500, 0.2, 35.0, 150.0)
    assert len(plan) == 100 and all(0 <= i < 500 for i in plan)
    assert all(35.0 <= t <= 150.0 for t in plan.values()) and max(plan.values()) - min(plan.values()) > 100
    assert plan == bl.plan_faults(500, 0.2, 35.0, 150.0)  # seeded
    values = [float(v) for v in range(1, 101)]
    assert (bl.percentile(values, 50), bl.percentile(values, 95), bl.percentile(values, 100)) == (50.0, 95.0, 100.0)
    assert bl.percentile([3.0], 95) == 3.0 and math.isnan(bl.percentile([], 95))


KEYS = ["machines", "readings_per_s", "alarms", "missed", "false", "p50_s", "p95_s", "max_s", "worker_cpu"]
DECIMAL = {"p50_s", "p95_s", "max_s", "worker_cpu"}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_bench_latency_tiny_run_every_faulted_machine_alarms_in_finite_time(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            *[sys.executable, "-m", "ops.cli", "bench", "latency"],
            *["--machines", "20", "--latency-seconds", "15", "--warmup-samples", "10"],
            *["--state-dir", str(tmp_path / "state"), "--timeout", "100"],
        ],
        capture_output=True,
        text=True,
        timeout=115,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    pattern = "RESULT latency " + " ".join(f"{k}=" + (r"\d+\.\d+" if k in DECIMAL else r"\d+") for k in KEYS)
    assert re.fullmatch(pattern, last), last
    result = {k: float(v) for k, v in (item.split("=") for item in last.split()[2:])}
    assert result["machines"] == 20 and result["readings_per_s"] == pytest.approx(140, rel=0.05)
    assert result["alarms"] == 4 and result["missed"] == 0 and result["false"] == 0  # 20 % of 20 faulted
    assert 0 < result["p50_s"] <= result["p95_s"] <= result["max_s"] < 5
    assert 0 < result["worker_cpu"] < 2
    assert "not on the 5-th faulted sample" not in done.stderr
