"""The gateway loop: poll the driver on the device clock, log and publish each machine's samples."""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

from birlik import __version__
from birlik.health import encode_health
from birlik.payload import Value, encode_telemetry
from birlik.plant import Machine
from birlik.stats import StatsFile
from gateway.buffer import DiskLog, Entry, replay_payload
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


class RateLimit:
    """A token bucket: ``rate`` messages per second, at most one second's worth saved up."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._tokens = 0.0
        self._t = time.monotonic()

    def take(self, want: int) -> int:
        now = time.monotonic()
        self._tokens = min(self.rate, self._tokens + (now - self._t) * self.rate)
        self._t = now
        n = min(want, int(self._tokens))
        self._tokens -= n
        return n

    def give_back(self, n: int) -> None:
        self._tokens += n


@dataclass
class _Repair:
    boot: str
    first: int
    last: int


class Forwarder:
    """Store and forward: live messages go to the disk log, then to the broker when it is there;
    the backlog (never acknowledged) drains at ``drain_rate`` messages/s, and repair requests
    are served from the log at the same rate, both marked ``replay``."""

    def __init__(
        self, gateway_id: str, publisher: MqttPublisher, buffer: DiskLog, *, drain_rate: float = 1000.0
    ) -> None:
        self.gateway_id = gateway_id
        self.publisher = publisher
        self.buffer = buffer
        self.limit = RateLimit(drain_rate)
        self._cursor = 0  # the backlog drain's position (log id)
        self._repairs: deque[_Repair] = deque()
        self._connected: bool | None = None
        self.repaired = 0
        self.repair_missing = 0
        self._rate_t = time.monotonic()
        self._rate_n = 0
        self.publish_rate = 0.0

    def live(self, items: list[tuple[int, str, bytes, int]]) -> None:
        """Log a poll batch (one commit), then hand what the broker can take to it."""
        entries = self.buffer.append_encoded(items)
        for e in entries:
            # Connected and the window full: wait for the broker, as a QoS 1 client should; if
            # the broker is away (or goes away meanwhile), the rest stays in the log (backlog).
            while self.publisher.connected and not self.publisher.publish(e.topic, e.payload, e.readings, e.id):
                if self.publisher.pending < self.publisher.max_pending:
                    break  # refused for another reason: it stays in the backlog
                self.publisher.wait_window(1.0)
            if not self.publisher.connected:
                break
        self.pump()

    def pump(self) -> None:
        """Acknowledgements into the log, state changes, the backlog's drain and repairs."""
        self.buffer.mark_acked(self.publisher.take_acks())
        connected = self.publisher.connected
        if connected != self._connected:
            if connected:
                backlog = self.buffer.depth - self.publisher.pending
                if self._connected is None:
                    log.info("connected to the broker %s; %d messages to drain", self.publisher.config.url, backlog)
                else:
                    log.warning("connected again, draining %d messages", backlog)
            else:
                log.warning("broker unreachable, buffering to disk")
            self._connected = connected
        for raw in self.publisher.take_requests():
            self._request(raw)
        if connected:
            self._drain()
        self.buffer.prune()
        now = time.monotonic()
        if now - self._rate_t >= 1.0:
            self.publish_rate = (self.publisher.stats.messages - self._rate_n) / (now - self._rate_t)
            self._rate_t, self._rate_n = now, self.publisher.stats.messages

    def _send_again(self, entries: list[Entry]) -> tuple[int, int]:
        """Publish ``entries`` again (those not in flight); how many were sent, and how many of
        ``entries`` were dealt with (sent or skipped)."""
        sent = 0
        for k, e in enumerate(entries):
            if self.publisher.in_flight(e.id):
                continue
            if not self.publisher.publish(e.topic, replay_payload(e.payload), e.readings, e.id, replay=True):
                return sent, k
            sent += 1
        return sent, len(entries)

    def _drain(self) -> None:
        budget = self.limit.take(10_000)
        if budget and self.buffer.depth > self.publisher.pending:
            # Live messages in flight are skipped (not counted against the budget).
            entries = self.buffer.backlog(self._cursor, budget + 1000)
            if not entries:
                self._cursor = 0  # from the start again: what was in flight at a disconnect
            for e in entries:
                if budget <= 0:
                    break
                if not self.publisher.in_flight(e.id):
                    if not self.publisher.publish(e.topic, replay_payload(e.payload), e.readings, e.id, replay=True):
                        break
                    budget -= 1
                self._cursor = e.id
        while budget > 0 and self._repairs:
            r = self._repairs[0]
            entries = self.buffer.range(r.boot, r.first, r.last, budget)
            if not entries:
                self._repairs.popleft()
                continue
            sent, done = self._send_again(entries)
            self.repaired += sent
            budget -= sent
            if done < len(entries):  # the window is full: go on next time
                r.first = entries[done].seq
                break
            r.first = entries[-1].seq + 1
            if r.first > r.last:
                self._repairs.popleft()
        self.limit.give_back(max(budget, 0))

    @property
    def drained(self) -> bool:
        return self.buffer.depth == 0 and not self._repairs

    def _request(self, raw: bytes) -> None:
        """A repair request: ``{"v": 1, "boot": "...", "ranges": [[first, last], ...]}``."""
        try:
            req = json.loads(raw)
            if not isinstance(req, dict) or req.get("v") != 1 or not isinstance(req.get("boot"), str):
                raise ValueError("expected {'v': 1, 'boot': ..., 'ranges': [[first, last], ...]}")
            ranges = req.get("ranges")
            if not isinstance(ranges, list) or len(ranges) > 10_000:
                raise ValueError("ranges must be a list of at most 10,000 [first, last] pairs")
            parsed = []
            for item in ranges:
                ok = isinstance(item, list) and len(item) == 2 and all(type(x) is int for x in item)
                if not ok or not 1 <= item[0] <= item[1]:
                    raise ValueError(f"bad range {str(item)[:40]}")
                parsed.append((item[0], item[1]))
        except ValueError as exc:
            log.warning("repair request ignored: %s", str(exc)[:200])
            return
        boot = req["boot"]
        asked = sum(b - a + 1 for a, b in parsed)
        have = sum(self.buffer.count_range(boot, a, b) for a, b in parsed)
        self.repair_missing += asked - have
        log.info(
            "repair request: boot %s, %d message(s) in %d range(s); re-publishing %d, %d no longer in the log "
            "(ignored)",
            boot,
            asked,
            len(parsed),
            have,
            asked - have,
        )
        for a, b in parsed:
            self._repairs.append(_Repair(boot, a, b))

    def stats(self) -> dict[str, object]:
        return {
            **self.buffer.stats(),
            "buffer_backlog": max(0, self.buffer.depth - self.publisher.pending),
            "connected": self.publisher.connected,
            "publish_rate": round(self.publish_rate, 1),
            "repaired": self.repaired,
            "repair_missing": self.repair_missing,
        }


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
    buffer: DiskLog | None = None,
    drain_rate: float = 1000.0,
    stop_timeout_s: float = 30.0,
    health_interval_s: float = 10.0,
) -> int:
    """Publish until the device clock passes ``end_ms`` or ``wall_seconds`` have elapsed
    (or Ctrl-C / SIGTERM), through the disk log ``buffer`` (a temporary one if not given).
    Starts the publisher if it is not connected yet, and never waits for the broker while
    polling. Every ``health_interval_s`` (0: never) it publishes its health report
    (:mod:`birlik.health`) while connected. At the end, drains the backlog for up to
    ``stop_timeout_s``. Returns the number
    of messages the broker did not acknowledge (left in the log)."""
    import tempfile

    stats = stats or StatsFile(None)
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if buffer is None:
        tmp = tempfile.TemporaryDirectory(prefix="birlik-gateway-")
        buffer = DiskLog(Path(tmp.name) / f"{gateway_id}.sqlite")
    boot = buffer.boot
    started = time.monotonic()
    last_ts = 0
    machines = driver.machines()
    fwd = Forwarder(gateway_id, publisher, buffer, drain_rate=drain_rate)
    if not publisher.connected:
        publisher.set_status(boot, [m.path.topic() for m in machines], __version__)
        publisher.start()
        publisher.wait_connected(3.0)
    log.info(
        "gateway %s (boot %s): %d machines from the %s driver -> %s (MQTT %s, QoS 1), clock speed %s, "
        "%d sample(s) per message; disk log %s (%d unacknowledged, %.1f MB of %.0f MB, synchronous=%s), "
        "drain %g messages/s",
        gateway_id,
        boot,
        len(machines),
        driver.name,
        publisher.config.url,
        {"auto": "5, or 3.1.1 if the broker refuses 5"}.get(publisher.protocol, publisher.protocol),
        "max" if clock.speed == 0 else f"{clock.speed:g}x",
        batch,
        buffer.path if tmp is None else "temporary (no --state-dir: not kept across restarts)",
        buffer.depth,
        buffer.bytes / 1e6,
        buffer.max_bytes / 1e6,
        buffer.sync,
        drain_rate,
    )

    driver_stats = getattr(driver, "stats", None)  # the drivers' own counters, where they keep any

    def snapshot() -> dict[str, object]:
        return {
            **publisher.stats.as_dict(),
            **fwd.stats(),
            "gateway": gateway_id,
            "boot": boot,
            "seq": buffer.seq,
            "last_ts_ms": last_ts,
            "mqtt_protocol": publisher.protocol_in_use,
            "driver": {"name": driver.name, **(driver_stats() if callable(driver_stats) else {})},
            "running": True,
        }

    next_health = time.monotonic() + min(health_interval_s, 1.0)

    def report_health() -> None:
        nonlocal next_health
        if health_interval_s <= 0 or time.monotonic() < next_health or not publisher.connected:
            return
        next_health = time.monotonic() + health_interval_s
        f = fwd.stats()
        values = {
            **publisher.stats.as_dict(),
            **f,
            "oldest_unsent_s": f["buffer_oldest_unsent_age_s"],
            "dropped": f["buffer_dropped"],
        }
        publisher.publish_health(gateway_id, encode_health(gateway_id, boot, int(time.time() * 1000), values))

    try:
        done = False
        while not done:
            until = clock.now_ms()
            if end_ms is not None and until >= end_ms:
                until, done = end_ms, True
            if wall_seconds is not None and time.monotonic() - started >= wall_seconds:
                done = True
            pending: dict[Machine, list[tuple[int, dict[str, Value]]]] = defaultdict(list)
            items: list[tuple[int, str, bytes, int]] = []
            for machine, ts, values in driver.poll(until):
                samples = pending[machine]
                samples.append((ts, values))
                last_ts = ts
                if len(samples) >= batch:
                    items.append(_encode(gateway_id, boot, buffer.next_seq(), machine, samples))
                    samples.clear()
            for machine, samples in pending.items():
                if samples:
                    items.append(_encode(gateway_id, boot, buffer.next_seq(), machine, samples))
            fwd.live(items)
            report_health()
            stats.update(snapshot())
            if not done and clock.speed != 0:
                time.sleep(tick_s)
    except KeyboardInterrupt:
        log.info("gateway %s: stopping", gateway_id)
    # The backlog and repairs still to send, while the broker is there (also after SIGTERM).
    deadline = time.monotonic() + stop_timeout_s
    try:
        while not fwd.drained and time.monotonic() < deadline and publisher.connected:
            fwd.pump()
            report_health()
            stats.update(snapshot())
            time.sleep(0.02)
    except KeyboardInterrupt:
        log.warning("gateway %s: stopping at once; what is not sent stays in the disk log", gateway_id)
    publisher.flush(max(1.0, min(stop_timeout_s, 30.0)) if publisher.connected else 0.0)
    fwd.pump()
    unacked = buffer.depth
    if unacked:
        log.error(
            "gateway %s: %d messages were not acknowledged by the broker; %s",
            gateway_id,
            unacked,
            "they are lost (temporary disk log)" if tmp else f"kept in the disk log {buffer.path} for the next start",
        )
    s = publisher.stats
    stats.update({**snapshot(), "running": False, "unacked": unacked}, force=True)
    log.info(
        "gateway %s stopped: published %d messages (%d readings, %.1f MB; %d sent again from the log), "
        "acknowledged %d, unacknowledged %d, dropped %d, reconnects %d, in %.1f s",
        gateway_id,
        s.messages,
        s.readings,
        s.bytes / 1e6,
        s.replayed,
        s.acked,
        unacked,
        buffer.dropped,
        s.reconnects,
        time.monotonic() - started,
    )
    buffer.close()
    if tmp is not None:
        tmp.cleanup()
    return unacked


def _encode(
    gateway_id: str, boot: str, seq: int, machine: Machine, samples: list[tuple[int, dict[str, Value]]]
) -> tuple[int, str, bytes, int]:
    payload = encode_telemetry(gateway=gateway_id, boot=boot, seq=seq, samples=samples, kind=machine.kind)
    return seq, machine.path.topic(), payload, sum(len(v) for _, v in samples)
