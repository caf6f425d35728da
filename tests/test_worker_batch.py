"""The worker's batch path (``score_batch``: a stream batch's messages, each machine's
samples judged together) writes exactly what scoring message by message writes."""

from __future__ import annotations

import dataclasses

from analytics.detectors import DETECTORS
from analytics.worker import AnalyticsWorker
from birlik.config import load_config
from birlik.payload import Telemetry, Value, decode_telemetry, encode_telemetry
from birlik.plant import Machine, parse_plant
from simulators.fleet import Fleet

START_MS = 1_763_856_000_000


def messages(hours: float, per_message: int) -> list[Telemetry]:
    plant = parse_plant(
        {
            "sample_interval": "5s",
            "sites": [
                {
                    "id": "s",
                    "ambient": {"mean_c": 14, "annual_swing_c": 28, "daily_swing_c": 15},
                    "lines": [
                        {
                            "id": "l",
                            "tenant": "t",
                            "machines": [
                                {
                                    "id": "p-1",
                                    "kind": "centrifugal_pump",
                                    "faults": [
                                        {"type": "stuck", "signal": "bearing_temp", "start": "7h", "duration": "1h"}
                                    ],
                                },
                                {
                                    "id": "p-2",
                                    "kind": "centrifugal_pump",
                                    "faults": [
                                        {"type": "bearing_wear", "start": "6h", "failure": "10h", "trips": False}
                                    ],
                                },
                                {"id": "c-1", "kind": "air_compressor"},
                            ],
                        }
                    ],
                }
            ],
        }
    )
    out: list[Telemetry] = []
    pending: dict[Machine, list[tuple[int, dict[str, Value]]]] = {}
    for machine, ts, values in Fleet(plant, seed=2, start_ms=START_MS).advance(START_MS + int(hours * 3_600_000)):
        rows = pending.setdefault(machine, [])
        rows.append((ts, values))
        if len(rows) == per_message:
            body = encode_telemetry(gateway="gw", seq=len(out) + 1, samples=rows, kind=machine.kind)
            out.append(decode_telemetry(machine.path.topic(), body))
            pending[machine] = []
    return out


def worker() -> AnalyticsWorker:
    config = load_config(None, env={})
    analytics = dataclasses.replace(config.analytics, warmup_samples=120)
    return AnalyticsWorker(None, analytics, detector_factory=DETECTORS["zscore"], since_ms=0)  # type: ignore[arg-type]


def test_batches_write_what_messages_write() -> None:
    msgs = messages(9.5, per_message=5)
    one, many = worker(), worker()
    lines_one: list[str] = []
    for m in msgs:
        one.score_telemetry(m, lines_one, [])
    lines_many: list[str] = []
    for i in range(0, len(msgs), 150):  # 50 messages a machine: judged in columns
        many.score_batch(msgs[i : i + 150], lines_many, [])
    assert sorted(lines_one) == sorted(lines_many)
    assert any(line.startswith("sensor_issue") for line in lines_one)  # the stuck sensor is in both
    assert any("anomalous=true" in line for line in lines_one)  # so is the bearing wear
    batched = sum(m.quality.batched_samples for m in many._machines.values() if m.quality is not None)
    # (The first 6 running hours of each machine are the checks' learning: sample by sample.)
    assert batched > 0.2 * sum(len(m.samples) for m in msgs)
    assert one.stats.samples_read == many.stats.samples_read == sum(len(m.samples) for m in msgs)
