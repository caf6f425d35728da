"""The gateway loop: poll the driver on the device clock, publish each machine's samples."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass

from birlik.payload import Value, encode_telemetry
from birlik.plant import Machine
from birlik.stats import StatsFile
from gateway.drivers import Driver
from gateway.publisher import MqttPublisher

log = logging.getLogger("gateway")


@dataclass
class Clock:
    """Device time: real time (``speed`` 1), accelerated (``speed`` > 1), or as fast as
    possible (``speed`` 0). Starts at ``start_ms``."""

    start_ms: int
    speed: float = 1.0

    #: At full speed, how far device time advances per reading of the clock: one minute, so
    #: a gateway loop at full speed still checks its stop conditions often.
    FULL_SPEED_STEP_MS = 60_000

    def __post_init__(self) -> None:
        self._t0 = time.monotonic()
        self._full_speed_ms = self.start_ms

    def now_ms(self) -> int:
        if self.speed == 0:
            self._full_speed_ms += self.FULL_SPEED_STEP_MS
            return self._full_speed_ms
        return self.start_ms + int((time.monotonic() - self._t0) * self.speed * 1000)


def run_gateway(
    gateway_id: str,
    driver: Driver,
    publisher: MqttPublisher,
    clock: Clock,
    *,
    end_ms: int | None = None,
    wall_seconds: float | None = None,
    batch: int = 1,
    tick_s: float = 0.05,
    stats: StatsFile | None = None,
) -> int:
    """Publish until the device clock passes ``end_ms`` or ``wall_seconds`` have elapsed
    (or Ctrl-C / SIGTERM). Returns the number of messages the broker did not acknowledge."""
    stats = stats or StatsFile(None)
    seq = 0
    # Names this run of the gateway, so its sequence (restarting at 1) is not taken downstream
    # for a repeat of the last run's. (Persisting the sequence itself is the disk buffer's job.)
    boot = f"b{time.time_ns() // 1_000_000:x}"
    started = time.monotonic()
    last_ts = 0
    machines = driver.machines()
    log.info(
        "gateway %s: %d machines from the %s driver -> %s (QoS 1), clock speed %s, %d sample(s) per message",
        gateway_id,
        len(machines),
        driver.name,
        publisher.config.url,
        "max" if clock.speed == 0 else f"{clock.speed:g}x",
        batch,
    )

    def snapshot() -> dict[str, object]:
        return {
            **publisher.stats.as_dict(),
            "gateway": gateway_id,
            "boot": boot,
            "seq": seq,
            "last_ts_ms": last_ts,
            "running": True,
        }

    try:
        done = False
        while not done:
            until = clock.now_ms()
            if end_ms is not None and until >= end_ms:
                until, done = end_ms, True
            if wall_seconds is not None and time.monotonic() - started >= wall_seconds:
                done = True
            pending: dict[Machine, list[tuple[int, dict[str, Value]]]] = defaultdict(list)
            for machine, ts, values in driver.poll(until):
                samples = pending[machine]
                samples.append((ts, values))
                last_ts = ts
                if len(samples) >= batch:
                    seq += 1
                    _publish(publisher, gateway_id, boot, seq, machine, samples)
                    samples.clear()
            for machine, samples in pending.items():
                if samples:
                    seq += 1
                    _publish(publisher, gateway_id, boot, seq, machine, samples)
            stats.update(snapshot())
            if not done and clock.speed != 0:
                time.sleep(tick_s)
    except KeyboardInterrupt:
        log.info("gateway %s: stopping", gateway_id)
    flushed = publisher.flush()
    unacked = publisher.pending
    if not flushed:
        log.error("gateway %s: %d messages were not acknowledged by the broker", gateway_id, unacked)
    s = publisher.stats
    stats.update({**snapshot(), "running": False, "unacked": unacked}, force=True)
    log.info(
        "gateway %s stopped: published %d messages (%d readings, %.1f MB), acknowledged %d, lost %d, "
        "reconnects %d, in %.1f s",
        gateway_id,
        s.messages,
        s.readings,
        s.bytes / 1e6,
        s.acked,
        unacked,
        s.reconnects,
        time.monotonic() - started,
    )
    return unacked


def _publish(
    publisher: MqttPublisher,
    gateway_id: str,
    boot: str,
    seq: int,
    machine: Machine,
    samples: list[tuple[int, dict[str, Value]]],
) -> None:
    payload = encode_telemetry(gateway=gateway_id, boot=boot, seq=seq, samples=samples, kind=machine.kind)
    publisher.publish(machine.path.topic(), payload, sum(len(v) for _, v in samples))
