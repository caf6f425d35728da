"""The ingest service: MQTT telemetry in, validated, batched, written to InfluxDB.

One asyncio task receives messages and turns the valid readings into line protocol; another
writes them in batches (``batch_size`` points or ``flush_interval_s``, whichever first).
Rejected messages and readings go to the dead-letter file with their reason; a batch the
database refuses is split until the refused points are isolated, so one bad point never
costs the good ones beside it. While InfluxDB is unavailable, writes are retried with
back-off and the receiver pauses once ``max_buffered`` points wait, leaving the rest queued
in the broker (persistent session, QoS 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from birlik.config import Config
from birlik.influx import AsyncInfluxClient, InfluxRejected, InfluxUnavailable
from birlik.lineprotocol import telemetry_lines
from birlik.payload import PayloadError, Reason, decode_telemetry
from birlik.stats import StatsFile
from birlik.topics import MachinePath, subscription
from ingest.deadletters import DeadLetters

log = logging.getLogger("ingest")


@dataclass
class IngestStats:
    messages_received: int = 0
    messages_rejected: int = 0
    readings_accepted: int = 0
    readings_written: int = 0
    readings_rejected: int = 0
    points_written: int = 0
    batches_written: int = 0
    write_retries: int = 0
    seq_gaps: int = 0
    seq_repeats: int = 0
    buffered_points: int = 0
    unwritten_points: int = 0
    subscribed: bool = False
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def count_rejected(self, reason: str, n: int = 1) -> None:
        self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + n


#: How long the broker keeps an MQTT v5 session (and its queued messages) while the ingest is away.
SESSION_EXPIRY_S = 7 * 24 * 3600


def _persistent_session(*, shared: bool) -> dict[str, Any]:
    """Client options for a session the broker keeps while the ingest is down.

    Shared subscriptions ($share/...) need MQTT v5, where that is ``clean_start=False`` with
    a session expiry; MQTT 3.1.1 has ``clean_session=False``.
    """
    if not shared:
        return {"protocol": aiomqtt.ProtocolVersion.V311, "clean_session": False}
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = SESSION_EXPIRY_S
    return {"protocol": aiomqtt.ProtocolVersion.V5, "clean_start": False, "properties": properties}


class IngestService:
    def __init__(
        self,
        config: Config,
        *,
        machines: Mapping[MachinePath, str] | None = None,
        max_buffered: int = 200_000,
    ) -> None:
        self.config = config
        self.machines = machines
        self.max_buffered = max_buffered
        self.stats = IngestStats()
        self.dead_letters = DeadLetters(config.ingest.dead_letters)
        self._stats_file = StatsFile(config.ingest.stats_file or None)
        self._lines: list[str] = []
        self._counts: list[int] = []
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._stopping = False
        self._last_seq: dict[str, int] = {}
        #: Set once subscribed: messages published from then on will be received.
        self.ready = asyncio.Event()

    # --- receiving ----------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> None:
        """Validate one message and buffer its readings (synchronous: the hot path)."""
        s = self.stats
        s.messages_received += 1
        try:
            telemetry = decode_telemetry(
                topic, payload, machines=self.machines, max_bytes=self.config.ingest.max_payload_bytes
            )
        except PayloadError as exc:
            s.messages_rejected += 1
            s.count_rejected(exc.reason)
            self.dead_letters.message(topic, payload, exc.reason, exc.detail)
            log.debug("rejected message on %s: %s", topic, exc)
            return
        last = self._last_seq.get(telemetry.gateway)
        if last is not None:
            if telemetry.seq > last + 1:
                s.seq_gaps += telemetry.seq - last - 1
            elif telemetry.seq <= last:
                s.seq_repeats += 1
        self._last_seq[telemetry.gateway] = telemetry.seq
        if telemetry.rejections:
            s.readings_rejected += len(telemetry.rejections)
            for r in telemetry.rejections:
                s.count_rejected(r.reason)
            self.dead_letters.readings_of(topic, telemetry)
        for sample, line in zip(telemetry.samples, telemetry_lines(telemetry), strict=True):
            self._lines.append(line)
            self._counts.append(len(sample.values))
        s.readings_accepted += telemetry.reading_count
        if len(self._lines) >= self.config.ingest.batch_size:
            self._wake.set()

    async def _receive(self, client: aiomqtt.Client) -> None:
        queue = client._queue  # aiomqtt's own queue: see below
        async for message in client.messages:
            await self._handle_message(message)
            # aiomqtt's iterator starts a task per message; under load that costs more than
            # validating the message. Take what is already queued directly.
            while not queue.empty():
                await self._handle_message(queue.get_nowait())

    async def _handle_message(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            payload = str(payload).encode() if payload is not None else b""
        self.handle(message.topic.value, bytes(payload))
        if len(self._lines) >= self.max_buffered:
            # Back-pressure: stop taking messages until the writer catches up; the broker
            # keeps the rest for this persistent session.
            self._drained.clear()
            self._wake.set()
            await self._drained.wait()

    # --- writing ------------------------------------------------------------------------

    async def _writer(self, influx: AsyncInfluxClient) -> None:
        interval = self.config.ingest.flush_interval_s
        size = self.config.ingest.batch_size
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            self._wake.clear()
            while self._lines:
                lines, counts = self._lines[:size], self._counts[:size]
                del self._lines[:size], self._counts[:size]
                await self._write(influx, lines, counts)
                self._publish_stats()  # rate-limited; keeps the counters fresh under a backlog
            self._drained.set()
            self._publish_stats()
            if self._stopping:
                return

    async def _write(self, influx: AsyncInfluxClient, lines: list[str], counts: list[int]) -> None:
        delay = 0.2
        failing_since: float | None = None
        while True:
            try:
                await influx.write(lines)
            except InfluxRejected as exc:
                await self._isolate(influx, lines, counts, exc)
                return
            except InfluxUnavailable as exc:
                now = time.monotonic()
                failing_since = failing_since or now
                self.stats.write_retries += 1
                if self.stats.write_retries % 10 == 1:
                    log.warning(
                        "InfluxDB unavailable (%s); %d points waiting, retrying", exc, len(lines) + len(self._lines)
                    )
                if self._stopping and now - failing_since > self.config.ingest.write_retry_s:
                    self._save_unwritten(lines, str(exc))
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.stats.points_written += len(lines)
            self.stats.readings_written += sum(counts)
            self.stats.batches_written += 1
            return

    async def _isolate(
        self, influx: AsyncInfluxClient, lines: list[str], counts: list[int], error: InfluxRejected
    ) -> None:
        """The database refused part of a batch: split it until each refused point is found."""
        if len(lines) == 1:
            log.warning("InfluxDB refused a point: %s", error.message)
            self.dead_letters.lines(lines, Reason.DB_REJECTED, error.message, counts[0])
            self.stats.readings_rejected += counts[0]
            self.stats.count_rejected(Reason.DB_REJECTED, counts[0])
            return
        mid = len(lines) // 2
        for part, part_counts in ((lines[:mid], counts[:mid]), (lines[mid:], counts[mid:])):
            await self._write(influx, part, part_counts)

    def _save_unwritten(self, lines: list[str], why: str) -> None:
        path = Path(self.config.ingest.dead_letters).with_suffix(f".unwritten-{int(time.time())}.lp")
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        self.stats.unwritten_points += len(lines)
        log.error("InfluxDB still unavailable (%s): %d points saved to %s for replay", why, len(lines), path)

    def _publish_stats(self, *, force: bool = False) -> None:
        self.stats.buffered_points = len(self._lines)
        self.dead_letters.flush()
        self._stats_file.update({**self.stats.as_dict(), "running": not self._stopping}, force=force)

    # --- the service --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> IngestStats:
        cfg = self.config
        topic_filter = subscription("telemetry", share=cfg.ingest.share_group or None)
        async with AsyncInfluxClient(cfg.influx.settings()) as influx:
            await self._wait_for_influx(influx, stop)
            writer = asyncio.create_task(self._writer(influx))
            try:
                await self._receive_until(stop, topic_filter)
            finally:
                self._stopping = True
                self._wake.set()
                await writer
        self._publish_stats(force=True)
        self.dead_letters.close()
        s = self.stats
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.rejected_by_reason.items())) or "none"
        log.info(
            "ingest stopped: received %d messages, wrote %d readings (%d points, %d batches); rejected %d messages "
            "and %d readings (%s), kept in %s; sequence gaps %d; unwritten %d",
            s.messages_received,
            s.readings_written,
            s.points_written,
            s.batches_written,
            s.messages_rejected,
            s.readings_rejected,
            reasons,
            cfg.ingest.dead_letters,
            s.seq_gaps,
            s.unwritten_points,
        )
        return s

    async def _wait_for_influx(self, influx: AsyncInfluxClient, stop: asyncio.Event) -> None:
        delay = 0.5
        while not stop.is_set():
            try:
                version = await influx.ping()
                try:
                    await influx.create_database()
                except InfluxRejected as exc:  # e.g. a token without the right to create databases
                    log.warning(
                        "could not create database %s (%s); assuming it exists", self.config.influx.database, exc
                    )
                log.info("InfluxDB %s at %s, database %s", version, self.config.influx.url, self.config.influx.database)
                return
            except InfluxUnavailable as exc:
                log.warning("waiting for InfluxDB at %s: %s", self.config.influx.url, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def _receive_until(self, stop: asyncio.Event, topic_filter: str) -> None:
        cfg = self.config
        delay = 0.5
        while not stop.is_set():
            client = aiomqtt.Client(
                cfg.mqtt.host,
                cfg.mqtt.port,
                identifier=cfg.ingest.client_id,
                username=cfg.mqtt.username or None,
                password=cfg.mqtt.password or None,
                keepalive=cfg.mqtt.keepalive_s,
                **_persistent_session(shared=bool(cfg.ingest.share_group)),
            )
            try:
                async with client:
                    await client.subscribe(topic_filter, qos=1)
                    log.info(
                        "ingest %s subscribed to %s at %s (QoS 1, persistent session); batches of %d or every %.2g s; "
                        "registry: %s; dead letters: %s",
                        cfg.ingest.client_id,
                        topic_filter,
                        cfg.mqtt.url,
                        cfg.ingest.batch_size,
                        cfg.ingest.flush_interval_s,
                        f"{len(self.machines)} machines" if self.machines is not None else "off (any machine accepted)",
                        cfg.ingest.dead_letters,
                    )
                    self.ready.set()
                    self.stats.subscribed = True
                    self._publish_stats(force=True)
                    delay = 0.5
                    receiver = asyncio.create_task(self._receive(client))
                    stopper = asyncio.create_task(stop.wait())
                    await asyncio.wait({receiver, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    stopper.cancel()
                    if receiver.done():
                        receiver.result()  # raises the receiver's error, e.g. a lost connection
                    receiver.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await receiver
            except aiomqtt.MqttError as exc:
                if not stop.is_set():
                    log.warning("broker %s: %s; reconnecting in %.1f s", cfg.mqtt.url, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10)
            finally:
                # Messages already received were acknowledged to the broker: handle them, or
                # they would be lost. (Acknowledging only after the write is the next step.)
                while not client._queue.empty():
                    await self._handle_message(client._queue.get_nowait())
