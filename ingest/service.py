"""The ingest service: MQTT telemetry in, validated, batched, written to InfluxDB.

Nothing acknowledged is lost: a QoS 1 message is acknowledged to the broker only after every
reading in it is in InfluxDB or kept as a dead letter (fsynced). Until then the broker holds
it for the ingest's persistent session and sends it again after a crash or a lost connection.

The flow, in one asyncio thread (see :mod:`ingest.mqtt` for why paho-mqtt):

1. :meth:`IngestService.handle` decodes each delivery (:func:`birlik.payload.decode_telemetry`,
   which never raises anything but :class:`~birlik.payload.PayloadError`) and appends its
   line-protocol points to the open :class:`Batch`, with the delivery to acknowledge later.
   Rejected messages and readings go to the dead letters; the delivery joins the batch all the
   same, so acknowledgements keep the order the broker sent the messages in.
2. A batch is sealed at ``batch_size`` points, at half the window of messages, or after
   ``flush_interval_s``; the writer writes sealed batches in order, then acknowledges their
   deliveries. While InfluxDB is away or refuses (401, 404, 429 ...), the writer retries with
   back-off and acknowledges nothing: the window fills, the broker stops sending, and the rest
   waits there. Only points InfluxDB refuses as malformed (HTTP 400) are isolated by splitting
   and kept as dead letters.
3. On stop, the writer gets ``stop_timeout_s`` to finish; what is not written by then stays
   unacknowledged in the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from birlik import schema
from birlik.config import Config
from birlik.health import decode_health
from birlik.influx import AsyncInfluxClient, InfluxRefused, InfluxRejected, InfluxUnavailable
from birlik.lineprotocol import encode_point, telemetry_lines
from birlik.payload import PayloadError, Reason, decode_telemetry
from birlik.stats import StatsFile
from birlik.topics import GATEWAY_LEVEL, HEALTH_FILTER, ROOT, MachinePath, subscription
from ingest.deadletters import DeadLetters
from ingest.metrics import Metrics
from ingest.mqtt import Delivery, MqttConsumer
from ingest.sequence import SequenceTracker

log = logging.getLogger("ingest")

#: Gateways' own topics (health reports) start so; a machine's never do.
_GATEWAY_PREFIX = f"{ROOT}/{GATEWAY_LEVEL}/"

#: Dead-letter reason for a message the ingest itself failed on (a bug, never the sender's fault).
INTERNAL_ERROR = "internal_error"


@dataclass
class IngestStats:
    messages_received: int = 0
    messages_acked: int = 0
    messages_rejected: int = 0
    #: Messages received again (same gateway, boot and sequence number): written again, not counted again.
    messages_redelivered: int = 0
    #: Messages a gateway sent again from its log (marked ``replay``).
    messages_replayed: int = 0
    readings_accepted: int = 0
    #: Gateways' health reports received (written to the ``gateway`` measurement).
    gateway_health_reports: int = 0
    readings_written: int = 0
    readings_rejected: int = 0
    points_written: int = 0
    batches_written: int = 0
    write_retries: int = 0
    write_seconds_last: float = 0.0
    #: Sequence numbers missing in what this process received (per gateway boot).
    seq_gaps: int = 0
    #: Messages received but not yet acknowledged (bounded by ingest.window).
    window_in_use: int = 0
    buffered_points: int = 0
    #: Messages left unacknowledged in the broker at stop (it sends them again later).
    left_in_broker: int = 0
    subscribed: bool = False
    influx_state: str = "unknown"
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "rejected_by_reason": dict(self.rejected_by_reason)}

    def count_rejected(self, reason: str, n: int = 1) -> None:
        self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + n


@dataclass
class Batch:
    """Points to write and the deliveries to acknowledge once they are stored."""

    lines: list[str] = field(default_factory=list)
    #: Readings per line, to count and to dead-letter exactly.
    counts: list[int] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    #: Readings that count as new (not redelivered).
    new_readings: int = 0
    #: Dead letters were written for these deliveries: fsync before acknowledging.
    dead_lettered: bool = False
    #: Sequence numbers of the messages in the batch, per (gateway, boot), for the ``sequence`` record.
    seqs: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    opened: float = field(default_factory=time.monotonic)


class IngestService:
    def __init__(self, config: Config, *, machines: Mapping[MachinePath, str] | None = None) -> None:
        self.config = config
        self.machines = machines
        self.stats = IngestStats()
        cfg = config.ingest
        self.dead_letters = DeadLetters(
            cfg.dead_letters, max_bytes=cfg.dead_letters_max_mb * 1024 * 1024, keep=cfg.dead_letters_keep
        )
        self.sequences = SequenceTracker()
        self.metrics = Metrics(client_id=cfg.client_id)
        self._stats_file = StatsFile(cfg.stats_file or None)
        self._open = Batch()
        self._sealed: deque[Batch] = deque()
        self._wake = asyncio.Event()
        self._accepting = True
        self._stopping = False
        self._consumer: MqttConsumer | None = None
        #: Deliveries received and not yet acknowledged (or given up on): the window in use.
        self._in_hand = 0
        #: Timestamp of the last ``sequence`` record per (gateway, boot): each a point of its own.
        self._last_record_ms: dict[tuple[str, str], int] = {}
        #: Set once subscribed: messages published from then on will be received.
        self.ready = asyncio.Event()

    # --- receiving (synchronous: the hot path) -----------------------------------------

    def on_delivery(self, delivery: Delivery) -> None:
        if not self._accepting:
            return  # stopping: not acknowledged, so the broker keeps it for the next start
        try:
            self.handle(delivery)
        except Exception:  # a bug must not stop the service or lose the messages around it
            log.exception("unexpected error handling a message on %r; kept as a dead letter", delivery.topic[:200])
            queued = bool(self._open.deliveries) and self._open.deliveries[-1] is delivery
            self._reject_message(
                delivery, INTERNAL_ERROR, "the ingest failed on this message (see its log)", queued=queued
            )

    def handle(self, delivery: Delivery) -> None:
        """Validate one message and add its readings and its acknowledgement to the open batch."""
        s = self.stats
        s.messages_received += 1
        self._in_hand += 1
        batch = self._open
        if delivery.topic.startswith(_GATEWAY_PREFIX):  # never a machine: tenants start with a letter or digit
            self._gateway_health(delivery)
            return
        try:
            telemetry = decode_telemetry(
                delivery.topic, delivery.payload, machines=self.machines, max_bytes=self.config.ingest.max_payload_bytes
            )
        except PayloadError as exc:
            self._reject_message(delivery, exc.reason, exc.detail)
            return
        new = self.sequences.observe(telemetry.gateway, telemetry.boot, telemetry.seq)
        if telemetry.boot is not None:
            batch.seqs.setdefault((telemetry.gateway, telemetry.boot), []).append(telemetry.seq)
        if telemetry.replay:
            s.messages_replayed += 1
        lines = telemetry_lines(telemetry)
        batch.lines.extend(lines)
        batch.counts.extend(len(sample.values) for sample in telemetry.samples)
        batch.deliveries.append(delivery)
        if new:
            readings = telemetry.reading_count
            batch.new_readings += readings
            s.readings_accepted += readings
            if telemetry.rejections:
                s.readings_rejected += len(telemetry.rejections)
                for r in telemetry.rejections:
                    s.count_rejected(r.reason)
        else:
            s.messages_redelivered += 1
        if telemetry.rejections and new:
            self.dead_letters.readings_of(delivery.topic, telemetry)
            batch.dead_lettered = True
        self._maybe_seal()

    def _gateway_health(self, delivery: Delivery) -> None:
        """A gateway's health report: one ``gateway`` point, acknowledged after the write like telemetry."""
        try:
            health = decode_health(delivery.topic, delivery.payload)
        except PayloadError as exc:
            self._reject_message(delivery, exc.reason, exc.detail)
            return
        self.stats.gateway_health_reports += 1
        batch = self._open
        batch.lines.append(
            encode_point(schema.GATEWAY, {"gateway": health.gateway, "boot": health.boot}, health.fields, health.ts_ms)
        )
        batch.counts.append(0)
        batch.deliveries.append(delivery)
        self._maybe_seal()

    def _reject_message(self, delivery: Delivery, reason: str, detail: str, *, queued: bool = False) -> None:
        s = self.stats
        s.messages_rejected += 1
        s.count_rejected(reason)
        self.dead_letters.message(delivery.topic, delivery.payload, reason, detail)
        batch = self._open
        if not queued:  # each delivery is acknowledged exactly once
            batch.deliveries.append(delivery)
        batch.dead_lettered = True
        self._maybe_seal()

    def _maybe_seal(self) -> None:
        consumer = self._consumer
        if self._in_hand >= self.config.ingest.window and consumer is not None and not consumer.paused:
            consumer.pause()  # the window is full: let the broker keep the rest
            self._seal()
        batch = self._open
        if len(batch.lines) >= self.config.ingest.batch_size or len(batch.deliveries) >= self._half_window:
            self._seal()

    @property
    def _half_window(self) -> int:
        return max(1, self.config.ingest.window // 2)

    def _seal(self) -> None:
        if self._open.deliveries or self._open.lines:
            self._add_sequence_records(self._open)
            self._sealed.append(self._open)
            self._open = Batch()
            self._wake.set()

    def _add_sequence_records(self, batch: Batch) -> None:
        """Which sequence numbers this batch stores, as runs, written with the batch itself.

        Several ingest processes sharing the stream each see part of every gateway's sequence;
        these records are what all of them stored, in one place, for gap repair
        (``birlik repair``). One point per run: measurement ``sequence``, tags gateway, boot and
        ingest (this process), fields first and last.
        """
        if not batch.seqs:
            return
        me = self.config.ingest.client_id
        for (gateway, boot), seqs in batch.seqs.items():
            for first, last in _runs(seqs):
                key = (gateway, boot)
                ts = max(int(time.time() * 1000), self._last_record_ms.get(key, 0) + 1)
                self._last_record_ms[key] = ts
                batch.lines.append(
                    encode_point(
                        schema.SEQUENCE,
                        {"gateway": gateway, "boot": boot, "ingest": me},
                        {"first": first, "last": last},
                        ts,
                    )
                )
                batch.counts.append(0)
        if len(self._last_record_ms) > 100_000:
            self._last_record_ms.clear()

    # --- writing ------------------------------------------------------------------------

    async def _writer(self, influx: AsyncInfluxClient) -> None:
        interval = self.config.ingest.flush_interval_s
        while True:
            if not self._sealed:
                if self._open.deliveries or self._open.lines:
                    age = time.monotonic() - self._open.opened
                    if age >= interval or self._stopping:
                        self._seal()
                        continue
                    timeout = interval - age
                else:
                    if self._stopping:
                        return
                    timeout = interval
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=timeout)
                self._publish_stats()
                continue
            batch = self._sealed[0]
            await self._write_batch(influx, batch)
            self._sealed.popleft()
            self._acknowledge(batch)
            self._publish_stats()

    async def _write_batch(self, influx: AsyncInfluxClient, batch: Batch) -> None:
        if batch.lines:
            started = time.monotonic()
            await self._write(influx, batch.lines, batch.counts, batch)
            elapsed = time.monotonic() - started
            self.stats.write_seconds_last = elapsed
            self.metrics.write_seconds.observe(elapsed)
            self.stats.points_written += len(batch.lines)
            self.stats.readings_written += batch.new_readings
            self.stats.batches_written += 1
        if batch.dead_lettered:
            self.dead_letters.sync()

    def _acknowledge(self, batch: Batch) -> None:
        consumer = self._consumer
        acked = 0
        for delivery in batch.deliveries:
            if consumer is not None and consumer.ack(delivery):
                acked += 1
        self._in_hand -= len(batch.deliveries)
        self.stats.messages_acked += acked
        if consumer is not None and consumer.paused and self._in_hand < self.config.ingest.window:
            consumer.resume()
        self.metrics.acked.inc(acked)

    async def _write(self, influx: AsyncInfluxClient, lines: list[str], counts: list[int], batch: Batch) -> None:
        """Write until stored; only points refused as malformed are split off to the dead letters."""
        delay = 0.2
        problem = ""
        while True:
            try:
                await influx.write(lines)
            except InfluxRejected as exc:
                await self._isolate(influx, lines, counts, exc, batch)
                return
            except InfluxRefused as exc:
                if exc.status == 413 and len(lines) > 1:
                    mid = len(lines) // 2
                    await self._write(influx, lines[:mid], counts[:mid], batch)
                    await self._write(influx, lines[mid:], counts[mid:], batch)
                    return
                if exc.status == 404:
                    with contextlib.suppress(InfluxRefused, InfluxRejected, InfluxUnavailable):
                        await influx.create_database()
                problem = self._influx_problem(f"{exc.hint} ({exc}); {self._waiting()}", "refused", problem)
                wait = exc.retry_after_s if exc.retry_after_s is not None else delay
            except InfluxUnavailable as exc:
                text = f"InfluxDB unavailable ({exc}); {self._waiting()}"
                problem = self._influx_problem(text, "unavailable", problem)
                wait = delay
            else:
                if problem:
                    log.info("InfluxDB writes again; %s", self._waiting())
                self.stats.influx_state = "ok"
                return
            self.stats.write_retries += 1
            self.metrics.write_retries.inc()
            self._publish_stats()
            await asyncio.sleep(min(wait, 30.0))
            delay = min(delay * 2, 5.0)

    def _waiting(self) -> str:
        return f"{self.stats.window_in_use} messages held unacknowledged (the broker keeps the rest; nothing is lost)"

    def _influx_problem(self, text: str, state: str, previous: str) -> str:
        """Log once per change of problem, not once per attempt."""
        key = text.split(";")[0]
        if key != previous:
            log.error("%s", text) if state == "refused" else log.warning("%s", text)
        self.stats.influx_state = state
        return key

    async def _isolate(
        self, influx: AsyncInfluxClient, lines: list[str], counts: list[int], error: InfluxRejected, batch: Batch
    ) -> None:
        """The database refused part of a batch as malformed: split it until each refused point is found."""
        if len(lines) == 1:
            log.warning("InfluxDB refused a point: %s", error.message[:300])
            self.dead_letters.lines(lines, Reason.DB_REJECTED, error.message, counts[0])
            batch.dead_lettered = True
            self.stats.readings_rejected += counts[0]
            self.stats.count_rejected(Reason.DB_REJECTED, counts[0])
            batch.new_readings -= min(counts[0], batch.new_readings)
            return
        mid = len(lines) // 2
        for part, part_counts in ((lines[:mid], counts[:mid]), (lines[mid:], counts[mid:])):
            await self._write(influx, part, part_counts, batch)

    # --- observability ------------------------------------------------------------------

    def _publish_stats(self, *, force: bool = False) -> None:
        s = self.stats
        s.seq_gaps = self.sequences.missing
        s.buffered_points = len(self._open.lines) + sum(len(b.lines) for b in self._sealed)
        s.window_in_use = self._in_hand
        self.dead_letters.flush()
        self.metrics.update(s)
        self._stats_file.update({**s.as_dict(), "running": not self._stopping}, force=force)

    async def _health(self) -> None:
        """Write the ingest's own counters to InfluxDB now and then (platform-health dashboard)."""
        interval = self.config.ingest.health_interval_s
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            self._health_point()

    def _health_point(self) -> None:
        """One ``ingest`` point with the counters, in the open batch (written like any other)."""
        self._publish_stats()
        s = self.stats
        fields: dict[str, float | int | str] = {
            k: v for k, v in s.as_dict().items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        for reason, n in s.rejected_by_reason.items():
            fields[f"rejected_{reason}"] = n
        line = encode_point(schema.INGEST, {"client_id": self.config.ingest.client_id}, fields, int(time.time() * 1000))
        self._open.lines.append(line)
        self._open.counts.append(0)

    # --- the service --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> IngestStats:
        cfg = self.config
        topic_filter = subscription("telemetry", share=cfg.ingest.share_group or None)
        self._warn_about_limits()
        if cfg.ingest.metrics_listen:
            self.metrics.serve(cfg.ingest.metrics_listen)
        consumer = MqttConsumer(
            cfg.mqtt,
            client_id=cfg.ingest.client_id,
            topic_filter=topic_filter,
            also=[f"$share/{cfg.ingest.share_group}/{HEALTH_FILTER}" if cfg.ingest.share_group else HEALTH_FILTER],
            on_message=self.on_delivery,
            receive_maximum=cfg.ingest.window,
            session_expiry_s=cfg.ingest.session_expiry_s,
        )
        self._consumer = consumer
        async with AsyncInfluxClient(cfg.influx.settings()) as influx:
            await self._wait_for_influx(influx, stop)
            writer = asyncio.create_task(self._writer(influx))
            health = asyncio.create_task(self._health())
            receiver = asyncio.create_task(consumer.run(stop))
            announcer = asyncio.create_task(self._announce(consumer, topic_filter))
            try:
                await stop.wait()
            finally:
                health.cancel()
                await self._stop(writer, consumer)
                for task in (health, receiver, announcer):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await consumer.disconnect()
        # Whatever was not acknowledged (not written in time, or its connection gone) the broker sends again.
        self.stats.left_in_broker = self.stats.messages_received - self.stats.messages_acked
        self._in_hand = 0
        self._publish_stats(force=True)
        self.dead_letters.close()
        self._log_summary()
        return self.stats

    async def _stop(self, writer: asyncio.Task[None], consumer: MqttConsumer) -> None:
        """Finish writing what was received, within ``stop_timeout_s``; leave the rest in the broker."""
        self._accepting = False
        if self.config.ingest.health_interval_s > 0:
            self._health_point()  # the last counters, written with the rest
        self._stopping = True
        self._wake.set()
        deadline = self.config.ingest.stop_timeout_s
        try:
            await asyncio.wait_for(asyncio.shield(writer), timeout=deadline)
        except TimeoutError:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            left = self._in_hand
            log.warning(
                "stop: could not write everything within %.0f s (InfluxDB %s); %d messages stay unacknowledged "
                "in the broker, which sends them again at the next start",
                deadline,
                self.stats.influx_state,
                left,
            )
        except Exception:
            log.exception("writer failed while stopping; what it did not write stays in the broker")

    async def _announce(self, consumer: MqttConsumer, topic_filter: str) -> None:
        cfg = self.config
        while True:
            await consumer.subscribed.wait()
            if not self.ready.is_set():
                log.info(
                    "ingest %s subscribed to %s at %s (MQTT v5, QoS 1, persistent session%s; window %d messages, "
                    "acknowledged after the write); batches of %d points or every %.2g s; registry: %s; "
                    "dead letters: %s",
                    cfg.ingest.client_id,
                    topic_filter,
                    cfg.mqtt.url,
                    ", resumed" if consumer.session_present else ", new",
                    cfg.ingest.window,
                    cfg.ingest.batch_size,
                    cfg.ingest.flush_interval_s,
                    f"{len(self.machines)} machines" if self.machines is not None else "off (any machine accepted)",
                    cfg.ingest.dead_letters,
                )
            self.ready.set()
            self.stats.subscribed = True
            self._publish_stats(force=True)
            while consumer.subscribed.is_set():
                await asyncio.sleep(0.2)
            self.stats.subscribed = False

    def _warn_about_limits(self) -> None:
        cfg = self.config.ingest
        queued = cfg.broker_max_queued_messages
        if queued and queued < 100_000:
            log.warning(
                "the broker queues at most %d messages for the ingest (broker_max_queued_messages): an ingest or "
                "InfluxDB outage longer than that many messages drops telemetry at the broker",
                queued,
            )

    async def _wait_for_influx(self, influx: AsyncInfluxClient, stop: asyncio.Event) -> None:
        delay = 0.5
        problem = ""
        while not stop.is_set():
            try:
                version = await influx.ping()
                try:
                    await influx.create_database()
                except (InfluxRejected, InfluxRefused) as exc:  # e.g. a token without the right to create databases
                    log.warning(
                        "could not create database %s (%s); assuming it exists", self.config.influx.database, exc
                    )
                log.info("InfluxDB %s at %s, database %s", version, self.config.influx.url, self.config.influx.database)
                self.stats.influx_state = "ok"
                return
            except (InfluxUnavailable, InfluxRefused) as exc:
                text = f"waiting for InfluxDB at {self.config.influx.url}: {exc}"
                if text != problem:
                    log.warning("%s", text)
                    problem = text
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(delay * 2, 10)

    def _log_summary(self) -> None:
        s = self.stats
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.rejected_by_reason.items())) or "none"
        log.info(
            "ingest stopped: received %d messages (%d redelivered), acknowledged %d; wrote %d readings (%d points, "
            "%d batches); rejected %d messages and %d readings (%s), kept in %s; sequence gaps %d; "
            "left unacknowledged in the broker %d",
            s.messages_received,
            s.messages_redelivered,
            s.messages_acked,
            s.readings_written,
            s.points_written,
            s.batches_written,
            s.messages_rejected,
            s.readings_rejected,
            reasons,
            self.config.ingest.dead_letters,
            s.seq_gaps,
            s.left_in_broker,
        )


def _runs(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted, merged runs of consecutive numbers: [5, 3, 4, 9] -> [(3, 5), (9, 9)]."""
    runs: list[tuple[int, int]] = []
    for n in sorted(set(seqs)):
        if runs and runs[-1][1] == n - 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs
