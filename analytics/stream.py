"""Live scoring from the broker: telemetry in the order it arrives, not by device time.

``birlik analytics`` without ``--since`` consumes the telemetry stream itself (MQTT v5, QoS 1,
a persistent session with a fixed client id, optionally shared with ``$share/<group>/``),
decodes every message with the contract's decoder (:func:`birlik.payload.decode_telemetry`),
and scores each sample as it arrives. A sample stamped far in the future does not hold the
machine back, and a late one is scored when it comes. Messages are acknowledged to the broker
only after their scores, health points and sensor issues are written to InfluxDB (and their
alarm transitions stored), so a worker killed at any moment scores on the next start what it
had not finished. A message the decoder rejects is acknowledged and counted (the ingest keeps
it as a dead letter with its reason).

paho-mqtt with manual acknowledgement carries the messages; a window of at most
``receive_maximum`` unacknowledged messages (MQTT v5 Receive Maximum) bounds the memory.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from analytics.mqttclient import paho_client
from birlik.config import MqttConfig
from birlik.payload import Alert, PayloadError, decode_telemetry
from birlik.topics import subscription

log = logging.getLogger("analytics")


@dataclass
class _Message:
    topic: str
    payload: bytes
    mid: int
    qos: int
    arrived: float


class TelemetryStream:
    """The broker side: messages into a queue, acknowledgements back."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        client_id: str,
        share_group: str = "",
        receive_maximum: int = 5000,
        session_expiry_s: int = 24 * 3600,
    ) -> None:
        self.config = config
        self.topic_filter = subscription("telemetry", share=share_group or None)
        self.messages: queue.Queue[_Message] = queue.Queue()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self._refused: str | None = None
        self._client = paho_client(config, client_id, manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = lambda c, u, mid, codes, p: self.subscribed.set()
        self._client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = session_expiry_s
        props.ReceiveMaximum = receive_maximum
        self._client.connect_async(
            config.host, config.port, keepalive=config.keepalive_s, clean_start=False, properties=props
        )
        self._client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        if getattr(reason, "is_failure", False):
            text = str(reason)
            if text != self._refused:
                log.error("broker %s refused the connection: %s", self.config.url, text)
                self._refused = text
            return
        self._refused = None
        self.connected.set()
        client.subscribe(self.topic_filter, qos=1)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: object, p: object) -> None:
        self.connected.clear()
        self.subscribed.clear()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        self.messages.put(_Message(message.topic, bytes(message.payload), message.mid, message.qos, time.monotonic()))

    def ack(self, message: _Message) -> None:
        if message.qos > 0:
            self._client.ack(message.mid, message.qos)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@dataclass
class StreamStats:
    messages: int = 0
    rejected: int = 0
    samples: int = 0
    #: Seconds from a message's arrival to its acknowledgement (after its scores are written).
    latency_last_s: float = 0.0


def run_stream(
    stream: TelemetryStream,
    *,
    score: Callable[[list[object], list[str], list[Alert]], int],
    write: Callable[[list[str]], None],
    after_batch: Callable[[list[Alert]], None],
    should_stop: Callable[[], bool],
    batch_max: int = 2000,
    batch_wait_s: float = 0.2,
    stats: StreamStats | None = None,
) -> StreamStats:
    """Take messages as they arrive, score them in batches (``score`` gets a batch's decoded
    messages in arrival order), write, then acknowledge."""
    stats = stats or StreamStats()
    while not should_stop():
        batch: list[_Message] = []
        try:
            batch.append(stream.messages.get(timeout=batch_wait_s))
        except queue.Empty:
            after_batch([])  # the clock: commands, stale machines, shelves, escalations
            continue
        deadline = time.monotonic() + batch_wait_s
        while len(batch) < batch_max and time.monotonic() < deadline:
            try:
                batch.append(stream.messages.get_nowait())
            except queue.Empty:
                time.sleep(0.005)
        lines: list[str] = []
        alerts: list[Alert] = []
        decoded: list[object] = []
        for m in batch:
            try:
                decoded.append(decode_telemetry(m.topic, m.payload))
            except PayloadError:
                stats.rejected += 1
        try:
            stats.samples += score(decoded, lines, alerts)
        except Exception:  # a bug must not stop the worker or hold the stream back
            stats.rejected += len(decoded)
            log.exception("unexpected error scoring a batch of %d messages; skipped", len(decoded))
        while True:
            try:
                if lines:
                    write(lines)
                break
            except Exception as exc:  # InfluxDB away: keep the batch, acknowledge nothing yet
                log.warning("cannot write the scores (%s); retrying, the broker keeps the messages", exc)
                if should_stop():
                    return stats
                time.sleep(2.0)
        after_batch(alerts)
        now = time.monotonic()
        for m in batch:
            stream.ack(m)
        stats.messages += len(batch)
        stats.latency_last_s = now - batch[0].arrived
    return stats
