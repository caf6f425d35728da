"""An MQTT v5 consumer on asyncio that acknowledges a message only when told to.

Why paho-mqtt directly: the ingest must send a QoS 1 message's PUBACK only after its readings
are stored, and paho-mqtt 2.x is the maintained Python client with manual acknowledgement
(``Client(manual_ack=True)`` and ``Client.ack``). aiomqtt 2.x acknowledges on receipt and has no
way to defer it (its manual-ack support is in the unreleased 3.x). paho's documented
external-event-loop interface (``on_socket_open``/``close``/``register_write``/
``unregister_write``, ``loop_read``, ``loop_write``, ``loop_misc``) runs the client on the ingest's
asyncio loop without a thread of its own, so decoding and writing share one thread and no lock.

The session is persistent (fixed client id, ``clean_start=False``, a session expiry), and the
CONNECT carries a Receive Maximum: the broker sends at most that many unacknowledged QoS 1
messages, so the process holds a bounded window and everything beyond it waits in the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from birlik.config import MqttConfig

log = logging.getLogger("ingest.mqtt")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One received message and what is needed to acknowledge it."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    #: The connection it arrived on; an acknowledgement is only valid on that connection.
    epoch: int
    dup: bool
    retain: bool


OnMessage = Callable[[Delivery], None]

#: Reason codes of a DISCONNECT from the broker that mean an operator must act.
_TAKEN_OVER = 142


class MqttConsumer:
    """Subscribes to one topic filter and hands every message to ``on_message``.

    Call :meth:`ack` for each delivery once it is stored; unacknowledged deliveries of a lost
    connection are sent again by the broker on the next one (persistent session), so they
    must not be acknowledged on it (:meth:`ack` ignores them).
    """

    def __init__(
        self,
        config: MqttConfig,
        *,
        client_id: str,
        topic_filter: str,
        on_message: OnMessage,
        receive_maximum: int,
        session_expiry_s: int,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.config = config
        self.client_id = client_id
        self.topic_filter = topic_filter
        self.receive_maximum = receive_maximum
        self.session_expiry_s = session_expiry_s
        self._on_message_cb = on_message
        self.epoch = 0
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()
        self.session_present = False
        self.reconnects = 0
        self._lost = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: Any = None
        self._last_problem = ""
        self._client = self._make_client(connect_timeout_s)

    # --- paho set-up --------------------------------------------------------------------

    def _make_client(self, connect_timeout_s: float) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        client.connect_timeout = connect_timeout_s
        if self.config.username:
            client.username_pw_set(self.config.username, self.config.password or None)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.session_expiry_s
        props.ReceiveMaximum = self.receive_maximum
        return props

    # --- socket callbacks (paho's external event loop interface) -----------------------

    def _threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn(*args)
        else:  # connect() runs in a worker thread
            loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._threadsafe(self._add_reader, sock)

    def _add_reader(self, sock: Any) -> None:
        assert self._loop is not None
        self._sock = sock
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self._loop.add_reader(sock, self._readable)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._threadsafe(self._remove_socket, sock)

    def _remove_socket(self, sock: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(sock)
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_writer(sock)
        if sock is self._sock:
            self._sock = None
        self._mark_lost()

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._threadsafe(self._add_writer, sock)

    def _add_writer(self, sock: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(ValueError, OSError):
            self._loop.add_writer(sock, self._writable)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._threadsafe(self._remove_writer, sock)

    def _remove_writer(self, sock: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_writer(sock)

    def _readable(self) -> None:
        # loop_read handles one packet per call while nothing is outstanding; read on while
        # packets keep coming, so a burst costs one event-loop wake-up, not one per message.
        client = self._client
        for _ in range(2000):
            before = self._packets
            rc = client.loop_read()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._mark_lost()
                return
            if self._packets == before:
                return

    def _writable(self) -> None:
        if self._client.loop_write() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._mark_lost()

    _packets = 0

    def _mark_lost(self) -> None:
        self.connected.clear()
        self.subscribed.clear()
        self._lost.set()

    # --- protocol callbacks -------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        self._packets += 1
        if rc.is_failure:
            self._problem(f"broker {self.config.url} refused the connection: {rc}")
            return
        self.session_present = bool(getattr(flags, "session_present", False))
        self.epoch += 1
        self.connected.set()
        # retainHandling=1: retained messages only when the subscription is new, not at every reconnect.
        client.subscribe(self.topic_filter, options=SubscribeOptions(qos=1, retainHandling=1))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: list[ReasonCode], props: Any) -> None:
        self._packets += 1
        bad = [rc for rc in rcs if rc.is_failure]
        if bad:
            self._problem(f"broker {self.config.url} refused the subscription to {self.topic_filter}: {bad[0]}")
            return
        self.subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        self._packets += 1
        if getattr(rc, "value", None) == _TAKEN_OVER:
            self._problem(
                f"another client connected with the same client id {self.client_id!r} and took the session over; "
                "give every ingest process its own ingest.client_id"
            )
        self._mark_lost()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._packets += 1
        try:
            topic = message.topic
        except UnicodeDecodeError:  # the broker should refuse these; never trust it
            topic = "<topic not UTF-8>"
        self._on_message_cb(
            Delivery(topic, bytes(message.payload), message.mid, message.qos, self.epoch, message.dup, message.retain)
        )

    def _problem(self, text: str) -> None:
        if text != self._last_problem:
            log.error("%s", text)
            self._last_problem = text

    # --- public -------------------------------------------------------------------------

    def ack(self, delivery: Delivery) -> bool:
        """Acknowledge a stored delivery; False when its connection is gone (the broker resends it)."""
        if delivery.qos == 0:
            return True
        if delivery.epoch != self.epoch or not self.connected.is_set():
            return False
        return self._client.ack(delivery.mid, delivery.qos) == MQTTErrorCode.MQTT_ERR_SUCCESS

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected and subscribed until ``stop``; back off and retry forever otherwise."""
        self._loop = asyncio.get_running_loop()
        delay = 0.5
        misc = asyncio.create_task(self._misc())
        try:
            while not stop.is_set():
                self._lost.clear()
                try:
                    await self._loop.run_in_executor(None, self._connect)
                except (OSError, ValueError) as exc:
                    self._problem(f"broker {self.config.url} unreachable ({exc}); retrying with back-off")
                    await _sleep_or_stop(stop, delay)
                    delay = min(delay * 2, 10.0)
                    continue
                lost = asyncio.create_task(self._lost.wait())
                stopper = asyncio.create_task(stop.wait())
                subscribed = asyncio.create_task(self.subscribed.wait())
                await asyncio.wait({lost, stopper, subscribed}, return_when=asyncio.FIRST_COMPLETED)
                if self.subscribed.is_set():
                    if self._last_problem or self.reconnects:
                        log.info("broker %s: connected and subscribed again", self.config.url)
                    self._last_problem = ""
                    delay = 0.5
                    await asyncio.wait({lost, stopper}, return_when=asyncio.FIRST_COMPLETED)
                for t in (lost, stopper, subscribed):
                    t.cancel()
                if stop.is_set():
                    break
                self.reconnects += 1
                self._problem(f"broker {self.config.url}: connection lost; reconnecting with back-off")
                self._client.loop_misc()  # lets paho tidy the dead socket
                await _sleep_or_stop(stop, delay)
                delay = min(delay * 2, 10.0)
        finally:
            misc.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await misc

    def _connect(self) -> None:
        rc = self._client.connect(
            self.config.host,
            self.config.port,
            keepalive=self.config.keepalive_s,
            clean_start=False,
            properties=self._connect_properties(),
        )
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise OSError(mqtt.error_string(rc))

    async def _misc(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self._sock is not None:
                self._client.loop_misc()

    async def disconnect(self) -> None:
        """Close the connection normally; the session (and what was not acknowledged) stays in the broker."""
        if self._sock is None:
            return
        self._client.disconnect()
        # Give the DISCONNECT a moment to leave; the session outlives us either way.
        for _ in range(20):
            if self._sock is None:
                break
            if self._client.want_write():
                self._client.loop_write()
            await asyncio.sleep(0.01)
            if self._sock is not None:
                self._client.loop_read()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
