"""Backfill: a simulated period written straight to InfluxDB, for dashboards and training.

The readings go through the same validation and line-protocol encoding as live telemetry
(:func:`birlik.payload.decode_telemetry`, :func:`birlik.lineprotocol.telemetry_lines`), so
backfilled data is stored exactly as ingested data would be.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable

from birlik.influx import InfluxClient
from birlik.lineprotocol import telemetry_lines
from birlik.payload import Value, decode_telemetry, encode_telemetry
from birlik.plant import Machine, Plant
from simulators.fleet import Fleet

log = logging.getLogger("simulators.backfill")


def backfill(
    plant: Plant,
    influx: InfluxClient,
    *,
    start_ms: int,
    end_ms: int,
    seed: int = 1,
    batch_points: int = 5000,
    samples_per_message: int = 60,
    progress: Callable[[int, int], None] | None = None,
    progress_every_s: float = 5.0,
) -> int:
    """Write the plant's readings from ``start_ms`` to ``end_ms``; returns the readings written.

    ``progress(readings_written, device_time_ms)`` is called every ``progress_every_s``.
    """
    fleet = Fleet(plant, seed=seed, start_ms=start_ms)
    pending: dict[Machine, list[tuple[int, dict[str, Value]]]] = defaultdict(list)
    lines: list[str] = []
    written = 0
    seq = 0
    next_report = time.monotonic() + progress_every_s

    def encode(machine: Machine, samples: list[tuple[int, dict[str, Value]]]) -> None:
        nonlocal seq, written
        seq += 1
        payload = encode_telemetry(gateway="backfill", seq=seq, samples=samples, kind=machine.kind)
        telemetry = decode_telemetry(machine.path.topic(), payload, now_ms=end_ms)
        if telemetry.rejections:  # the models stay inside the catalogue; say so if one does not
            log.warning(
                "%s: %d readings outside the catalogue: %s",
                machine.path,
                len(telemetry.rejections),
                telemetry.rejections[0].detail,
            )
        lines.extend(telemetry_lines(telemetry))
        written += telemetry.reading_count
        samples.clear()

    for machine, ts, values in fleet.advance(end_ms):
        samples = pending[machine]
        samples.append((ts, values))
        if len(samples) >= samples_per_message:
            encode(machine, samples)
        if len(lines) >= batch_points:
            influx.write(lines)
            lines.clear()
            if progress is not None and time.monotonic() >= next_report:
                progress(written, ts)
                next_report = time.monotonic() + progress_every_s
    for machine, samples in pending.items():
        if samples:
            encode(machine, samples)
    if lines:
        influx.write(lines)
    return written
