"""``birlik bench outage``: its helpers, its refusal to overfill the broker's queue, and a short run."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from ops import bench_ingest as bi
from ops import bench_outage as bo

ROOT = Path(__file__).resolve().parent.parent

KEYS = [
    "minutes",
    "rate_mps",
    "rss_before_mb",
    "rss_peak_outage_mb",
    "rss_end_outage_mb",
    "rss_slope_mb_per_10min",
    "window_peak",
    "published",
    "lost",
    "duplicated",
    "drain_s",
]
DECIMAL = {"minutes": r"\d+(\.\d+)?", "rss_slope_mb_per_10min": r"-?\d+\.\d\d", "drain_s": r"\d+\.\d"}


def test_least_squares_slope() -> None:
    xs = [0.0, 1.0, 2.0, 3.0, 4.0]
    assert bo.least_squares_slope(xs, [3 + 2 * x for x in xs]) == pytest.approx(2.0)
    assert bo.least_squares_slope(xs, [5.0] * 5) == 0.0
    # Noise around a flat line: a slope near 0, not the difference of the ends.
    assert bo.least_squares_slope(xs, [10.0, 12.0, 10.0, 12.0, 10.0]) == pytest.approx(0.0)
    assert bo.least_squares_slope([1.0, 2.0], [0.0, -3.0]) == pytest.approx(-3.0)
    assert bo.least_squares_slope([7.0], [1.0]) == 0.0
    assert bo.least_squares_slope([], []) == 0.0
    assert bo.least_squares_slope([2.0, 2.0], [1.0, 5.0]) == 0.0
    with pytest.raises(ValueError):
        bo.least_squares_slope([1.0, 2.0], [1.0])


def test_window_counts_as_filled_at_98_percent_or_at_its_largest_value() -> None:
    assert bo.filled_from([0, 500, 990, 1000, 1000], 1000) == 2
    assert bo.filled_from([0, 100, 200, 300], 1000) == 3  # never filled: from its largest value
    assert bo.filled_from([], 1000) == 0


def test_stream_timestamps_unique_per_machine_and_checks_known() -> None:
    stream = bo.Stream(rate=bo.MAX_RATE, start=1_763_800_000.0)
    seen: set[tuple[str, int]] = set()
    for k in range(3 * len(stream.machines) * 10):
        key = (stream.machine(k).id, stream.ts_ms(k))
        assert key not in seen
        seen.add(key)
    workload = stream.workload(100)
    assert workload.points == 100 and workload.checksum == sum(range(1, 101))
    assert workload.readings == 100 * len(bi.SIGNALS)
    # The packets are those the ingest decodes: topic, device time, count_good.
    from birlik.payload import decode_telemetry

    packets = bo.Packets(stream, 30)
    assert len(packets) == 30 and len(packets[5:8]) == 3
    publish = bi.parse_publish(bi.split_packets(packets[27])[0][0])
    telemetry = decode_telemetry(publish.topic, publish.payload)
    assert not telemetry.rejections
    assert publish.topic == stream.machine(27).topic and publish.packet_id == bi.packet_id(27)
    assert telemetry.samples[0].ts_ms == stream.ts_ms(27)
    assert telemetry.samples[0].values[bi.CHECK_FIELD] == 28
    schedule = bo.Schedule(stream, 30)
    assert schedule[26] - schedule[0] == pytest.approx(26 / bo.MAX_RATE, abs=1e-6)
    with pytest.raises(IndexError):
        packets[30]


def test_stopping_the_stream_waits_for_the_acknowledgements_then_ends_the_publisher() -> None:
    stream = bo.Stream(rate=100, start=1_763_800_000.0)
    packets = bo.Packets(stream, 10)
    assert len(packets[0:3]) == 3
    publisher = SimpleNamespace(acked=3, sent=3, error=None)
    packets.stop(cast(bi.RawPublisher, publisher))
    with pytest.raises(bo.PublishingStopped):
        packets[3:5]


def test_proc_readers() -> None:
    assert bo.process_state(os.getpid()) in {"R", "S"}
    assert bo.rss_mb(os.getpid()) > 1
    assert bo.written_bytes(os.getpid()) >= 0
    assert bo.process_state(2**22 + 1) == "" and bo.rss_mb(2**22 + 1) == 0.0


def test_an_outage_the_broker_cannot_queue_is_refused() -> None:
    assert bo.broker_queue_problem(500, 30 * 60, 600) is None
    problem = bo.broker_queue_problem(1000, 30 * 60, 600)
    assert problem is not None and "max_queued_messages 1,000,000" in problem
    done = subprocess.run(
        [sys.executable, "-m", "ops.cli", "bench", "outage", "--rate", "1000", "--state-dir", "/nonexistent/x"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 2
    assert "would drop messages" in done.stderr and "RESULT" not in done.stdout


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_bench_outage_short_run_loses_nothing_and_holds_the_window(tmp_path: Path) -> None:
    window = 1000  # fills within 5 s of the outage at 200 msg/s, so the broker queues the rest
    state = tmp_path / "state"
    done = subprocess.run(
        [
            *[sys.executable, "-m", "ops.cli", "bench", "outage"],
            *["--outage-minutes", "0.25", "--rate", "200", "--window", str(window), "--steady-seconds", "8"],
            *["--state-dir", str(state), "--timeout", "60"],
        ],
        capture_output=True,
        text=True,
        timeout=140,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    pattern = "RESULT outage " + " ".join(f"{k}=" + DECIMAL.get(k, r"\d+") for k in KEYS)
    assert re.fullmatch(pattern, last), last
    result = dict(item.split("=") for item in last.split()[2:])
    assert result["minutes"] == "0.25" and result["rate_mps"] == "200"
    assert result["lost"] == "0" and result["duplicated"] == "0"
    assert int(result["published"]) == 200 * (8 + 15 + 8) * len(bi.SIGNALS)
    assert int(result["rss_before_mb"]) > 0 and int(result["rss_end_outage_mb"]) > 0
    # During the outage the ingest holds a full window and not one message more.
    with open(state / "samples.csv", newline="") as f:
        samples = list(csv.DictReader(f))
    outage = [int(s["window_in_use"]) for s in samples if s["phase"] == "outage"]
    assert outage and window * 0.9 <= max(outage) <= window
    if int(result["window_peak"]) > window:
        # Mosquitto 2.0.11 ignores the Receive Maximum when it moves a queue into flight, so while
        # the backlog drains the ingest is sent more than its window (the bench logs a warning).
        pytest.xfail(f"the broker sent {result['window_peak']} messages to a window of {window} while draining")
