"""Publishing telemetry to the broker with paho-mqtt: MQTT v5, QoS 1, reconnecting forever.

The publisher never makes the gateway loop wait for a broker that is away: :meth:`publish`
returns ``False`` while disconnected, and the gateway keeps the message in its disk log
(:mod:`gateway.buffer`) to send later. paho reconnects in its own thread (back-off 1 to
5 s), forever, from the very first connection on, and resends what it had in flight.

MQTT v5 with the gateway id as the fixed client id and Clean Start: the broker keeps no
session for a gateway (the disk log is what makes its messages durable, not the broker).
With ``protocol="auto"`` (the default) a broker that refuses MQTT 5 ("unsupported protocol
version", as brokers of the 3.1.1 era answer) is spoken to in MQTT 3.1.1 from then on, with a
clean session; ``"3.1.1"`` uses it from the start. The gateway needs nothing of MQTT 5 that
3.1.1 lacks: QoS 1, retained messages, a last will and one subscription.
On every connection the publisher publishes the gateway's retained **birth** message on
``gateway_topic(id, "status")``, and subscribes (QoS 1) to ``gateway_topic(id, "repair")``;
the **last will**, retained too, marks the gateway offline.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from birlik.config import MqttConfig
from birlik.topics import gateway_topic

log = logging.getLogger(__name__)

#: MQTT 5 CONNACK reason "Unsupported Protocol Version" (paho maps a 3.1.1 broker's code 1 to it).
_UNSUPPORTED_PROTOCOL = 0x84


class PublishError(RuntimeError):
    """The broker could not be reached in time (only :meth:`MqttPublisher.connect` raises it)."""


@dataclass
class PublishStats:
    messages: int = 0
    readings: int = 0
    bytes: int = 0
    acked: int = 0
    reconnects: int = 0
    replayed: int = 0
    repair_requests: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class MqttPublisher:
    """QoS 1 publisher with a bounded window of unacknowledged messages.

    Each message is published with a key (the disk log's id of the message); the keys the
    broker acknowledged are collected for :meth:`take_acks`. At most ``max_pending`` messages
    are in flight; :meth:`wait_window` waits for room while connected.
    """

    def __init__(
        self, config: MqttConfig, *, client_id: str, max_pending: int = 10_000, protocol: str = "auto"
    ) -> None:
        if protocol not in ("auto", "5", "3.1.1"):
            raise ValueError(f"MQTT protocol {protocol!r}: expected auto, 5 or 3.1.1")
        self.config = config
        self.protocol = protocol
        self.client_id = client_id
        self.max_pending = max_pending
        self.stats = PublishStats()
        self._lock = threading.Condition()
        self._connected = threading.Event()
        self._ever_connected = False
        self._inflight: dict[int, int] = {}  # mid -> key
        self._inflight_keys: set[int] = set()
        self._acks: set[int] = set()  # acknowledged, not taken yet: still counts as in flight
        self._early: set[int] = set()  # PUBACKs that came before publish() recorded the mid
        self._status_mids: set[int] = set()
        self._requests: deque[bytes] = deque(maxlen=1000)
        self._birth: bytes | None = None
        self._refused: str | None = None
        if protocol == "3.1.1":
            self._client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=client_id,
                protocol=mqtt.MQTTv311,
                clean_session=True,
                reconnect_on_failure=True,
            )
        else:
            self._client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, reconnect_on_failure=True
            )
        if config.username:
            self._client.username_pw_set(config.username, config.password or None)
        context = config.ssl_context()  # mqtts://: the broker verified against mqtt.ca_file
        if context is not None:
            self._client.tls_set_context(context)
        self._client.max_inflight_messages_set(1000)
        self._client.max_queued_messages_set(0)
        self._client.reconnect_delay_set(1, 5)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message

    # --- status: birth and last will ----------------------------------------------------

    @property
    def status_topic(self) -> str:
        return gateway_topic(self.client_id, "status")

    @property
    def repair_topic(self) -> str:
        return gateway_topic(self.client_id, "repair")

    def set_status(self, boot: str, machines: list[str], version: str) -> None:
        """Birth and last-will messages (retained, QoS 1); call before :meth:`start`."""
        base = {"v": 1, "gateway": self.client_id, "boot": boot, "version": version}
        self._birth = json.dumps({**base, "state": "online", "machines": machines}).encode()
        will = json.dumps({**base, "state": "offline"}).encode()
        self._client.will_set(self.status_topic, will, qos=1, retain=True)

    # --- paho callbacks (paho's thread) -------------------------------------------------

    @property
    def protocol_in_use(self) -> str:
        """The MQTT version spoken: ``5`` or ``3.1.1``."""
        return "5" if self._client.protocol == mqtt.MQTTv5 else "3.1.1"

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: Any, props: object) -> None:
        downgrade = reason.is_failure and reason.value == _UNSUPPORTED_PROTOCOL
        if downgrade and self.protocol == "auto" and client.protocol == mqtt.MQTTv5:
            log.warning("broker %s does not speak MQTT 5; using MQTT 3.1.1", self.config.url)
            # paho has no public way to change a client's protocol; this is what its own
            # downgrade from 3.1.1 to 3.1 does (Client._handle_connack). The next connection
            # attempt (paho reconnects by itself) speaks 3.1.1, with a clean session.
            client._protocol = mqtt.MQTTv311
            client._clean_session = True
            return
        if reason.is_failure:
            text = str(reason)
            if text != self._refused:
                log.error("broker %s refused the connection: %s", self.config.url, text)
                self._refused = text
            return
        self._refused = None
        if self._ever_connected:
            self.stats.reconnects += 1
        self._ever_connected = True
        if self._birth is not None:
            info = client.publish(self.status_topic, self._birth, qos=1, retain=True)
            with self._lock:  # its PUBACK cannot come before this callback returns (same thread)
                self._status_mids.add(info.mid)
        client.subscribe(self.repair_topic, qos=1)
        self._connected.set()
        with self._lock:
            self._lock.notify_all()

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        """paho does not say why a connection failed: find out, and say it once per reason."""
        text = self._diagnose()
        if text != self._refused:
            log.error("broker %s: %s; retrying with back-off", self.config.url, text)
            self._refused = text

    def _diagnose(self) -> str:
        host, port = self.config.host, self.config.port
        try:
            sock = socket.create_connection((host, port), timeout=5)
        except OSError as exc:
            return f"unreachable ({exc})"
        with contextlib.closing(sock):
            context = self.config.ssl_context()
            if context is None:
                return "the connection failed"
            try:
                context.wrap_socket(sock, server_hostname=host).close()
            except ssl.SSLCertVerificationError as exc:
                return (
                    f"its TLS certificate is not trusted ({exc.verify_message}); "
                    "check mqtt.ca_file and that the certificate names this host"
                )
            except (ssl.SSLError, OSError) as exc:
                return f"the TLS handshake failed ({exc})"
            return "the connection failed"

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: Any, props: object) -> None:
        self._connected.clear()
        with self._lock:
            self._lock.notify_all()

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: Any, props: object) -> None:
        with self._lock:
            key = self._inflight.pop(mid, None)
            if key is not None:
                self._acked_key(key)
            elif mid in self._status_mids:
                self._status_mids.discard(mid)
            else:
                self._early.add(mid)

    def _acked_key(self, key: int) -> None:  # holding the lock
        self._inflight_keys.discard(key)
        self._acks.add(key)
        self.stats.acked += 1
        self._lock.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.repair_topic:
            self.stats.repair_requests += 1
            self._requests.append(bytes(message.payload))

    # --- the gateway loop's side --------------------------------------------------------

    def start(self) -> None:
        """Connect in the background and keep reconnecting, forever; returns at once."""
        if self._client.protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 0
            self._client.connect_async(
                self.config.host,
                self.config.port,
                keepalive=self.config.keepalive_s,
                clean_start=True,
                properties=props,
            )
        else:
            self._client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        self._client.loop_start()

    def connect(self, timeout_s: float = 15.0) -> None:
        """:meth:`start` and wait for the first connection (raises :class:`PublishError`)."""
        self.start()
        if not self._connected.wait(timeout_s):
            raise PublishError(
                f"the broker at {self.config.url} did not accept the connection within {timeout_s:.0f} s"
            )

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def pending(self) -> int:
        """Messages handed to the broker and not acknowledged yet."""
        with self._lock:
            return len(self._inflight_keys)

    def in_flight(self, key: int) -> bool:
        with self._lock:
            return key in self._inflight_keys or key in self._acks

    def wait_window(self, timeout_s: float = 1.0) -> bool:
        """Wait (while connected) until fewer than ``max_pending`` messages are in flight."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while len(self._inflight_keys) >= self.max_pending:
                left = deadline - time.monotonic()
                if left <= 0 or not self._connected.is_set():
                    return False
                self._lock.wait(min(left, 0.5))
        return self._connected.is_set()

    def publish(self, topic: str, payload: bytes, readings: int, key: int, *, replay: bool = False) -> bool:
        """Hand a message to the broker; ``False`` (and nothing sent) while disconnected or the
        window is full."""
        if not self._connected.is_set():
            return False
        with self._lock:
            if len(self._inflight_keys) >= self.max_pending or key in self._inflight_keys or key in self._acks:
                return False
            self._inflight_keys.add(key)
        # Never call paho holding our lock: paho calls on_publish holding its own.
        info = self._client.publish(topic, payload, qos=1)
        with self._lock:
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                self._inflight_keys.discard(key)
                return False
            # With MQTT_ERR_NO_CONN paho keeps the message and sends it after the reconnect.
            if info.mid in self._early:  # acknowledged before we got here
                self._early.discard(info.mid)
                self._acked_key(key)
            else:
                self._inflight[info.mid] = key
        self.stats.messages += 1
        self.stats.readings += readings
        self.stats.bytes += len(payload)
        if replay:
            self.stats.replayed += 1
        return True

    def publish_health(self, gateway_id: str, payload: bytes) -> bool:
        """Publish ``gateway_id``'s health report (QoS 1, not retained, not logged); False while
        disconnected."""
        if not self._connected.is_set():
            return False
        info = self._client.publish(gateway_topic(gateway_id, "health"), payload, qos=1)
        with self._lock:
            if info.mid in self._early:  # acknowledged before we got here
                self._early.discard(info.mid)
            else:
                self._status_mids.add(info.mid)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def take_acks(self) -> list[int]:
        """Keys of the messages acknowledged since the last call."""
        with self._lock:
            acks, self._acks = self._acks, set()
        return list(acks)

    def take_requests(self) -> list[bytes]:
        """Repair requests received since the last call."""
        out = []
        while self._requests:
            out.append(self._requests.popleft())
        return out

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until the broker has acknowledged every message; False on time-out."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._inflight_keys:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.5))
        return True

    def close(self) -> None:
        """Mark the gateway offline (retained; a clean disconnect sends no will), disconnect."""
        if self._connected.is_set() and self._birth is not None:
            status = json.loads(self._birth)
            status.pop("machines", None)
            info = self._client.publish(
                self.status_topic, json.dumps({**status, "state": "offline"}).encode(), qos=1, retain=True
            )
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(2)
        self._client.disconnect()
        self._client.loop_stop()
