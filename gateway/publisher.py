"""Publishing telemetry to the broker with paho-mqtt, QoS 1."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from birlik.config import MqttConfig

log = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """The broker could not be reached or refused the connection."""


@dataclass
class PublishStats:
    messages: int = 0
    readings: int = 0
    bytes: int = 0
    acked: int = 0
    reconnects: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class MqttPublisher:
    """QoS 1 publisher with a bounded window of unacknowledged messages.

    paho keeps messages the broker has not acknowledged and resends them after a reconnect
    (in memory; durable store-and-forward on disk is the next step for gateways). When more
    than ``max_pending`` messages are unacknowledged, :meth:`publish` waits, so a slow or
    absent broker slows the gateway down instead of growing memory without bound.
    """

    def __init__(self, config: MqttConfig, *, client_id: str, max_pending: int = 10_000) -> None:
        self.config = config
        self.client_id = client_id
        self.max_pending = max_pending
        self.stats = PublishStats()
        self._acked = threading.Condition()
        self._connected = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=True
        )
        if config.username:
            self._client.username_pw_set(config.username, config.password or None)
        self._client.max_inflight_messages_set(1000)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(1, 10)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: Any, props: object) -> None:
        if reason.is_failure:
            log.error("broker %s refused the connection: %s", self.config.url, reason)
            return
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: Any, props: object) -> None:
        self._connected.clear()
        if reason.is_failure or reason.value != 0:
            self.stats.reconnects += 1
            log.warning("lost the broker (%s); reconnecting, unacknowledged messages will be resent", reason)

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: Any, props: object) -> None:
        with self._acked:
            self.stats.acked += 1
            self._acked.notify_all()

    def connect(self, timeout_s: float = 15.0) -> None:
        try:
            self._client.connect(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        except OSError as exc:
            raise PublishError(f"cannot reach the broker at {self.config.url}: {exc}") from None
        self._client.loop_start()
        if not self._connected.wait(timeout_s):
            self._client.loop_stop()
            raise PublishError(
                f"the broker at {self.config.url} did not accept the connection within {timeout_s:.0f} s"
            )

    @property
    def pending(self) -> int:
        return self.stats.messages - self.stats.acked

    def publish(self, topic: str, payload: bytes, readings: int) -> None:
        with self._acked:
            while self.pending >= self.max_pending:
                self._acked.wait(1.0)
        self._client.publish(topic, payload, qos=1)
        self.stats.messages += 1
        self.stats.readings += readings
        self.stats.bytes += len(payload)

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until the broker has acknowledged every message; False on time-out."""
        deadline = time.monotonic() + timeout_s
        with self._acked:
            while self.pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._acked.wait(min(left, 0.5))
        return True

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
