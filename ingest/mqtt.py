"""An MQTT v5 consumer on asyncio that acknowledges a message only when told to.

The ingest must send a QoS 1 message's PUBACK only after its readings are stored, hold a
bounded window of unacknowledged messages, and keep up with the broker. This module is the
subscriber side of MQTT 5.0 that the ingest needs, and nothing more: CONNECT (persistent
session, Receive Maximum, credentials), SUBSCRIBE, PUBLISH in at QoS 0 and 1, PUBACK out,
PINGREQ, DISCONNECT.

Why not a library: paho-mqtt 2.x has manual acknowledgement (``Client(manual_ack=True)``),
and the ingest ran on it first, through paho's external-event-loop interface. Measured on
the development machine, paho spends about 90 us of CPU per received message before the
ingest sees it (a ``Properties`` object, an ``MQTTMessage`` with its own locks, four
``recv`` calls, and one event-loop wake-up per acknowledgement), three times what the whole
Node-RED pipeline spends per message. aiomqtt 2.x sits on paho and acknowledges on receipt
(its manual acknowledgement is in the unreleased 3.x). The parser here reads whole buffers
from an ``asyncio.Protocol`` and writes every acknowledgement of a batch in one ``write``:
a few microseconds per message (``./scripts/bench ingest`` measures the result). The
gateways and the analytics worker publish with paho-mqtt, where its speed is plenty.

The session is persistent (fixed client id, Clean Start 0, a Session Expiry Interval), and
the CONNECT carries a Receive Maximum: the broker sends at most that many unacknowledged QoS 1
messages, so the process holds a bounded window and everything beyond it waits in the
broker. Subscriptions use Retain Handling 1: retained messages only when the subscription is
new, not at every reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from birlik.config import MqttConfig

log = logging.getLogger("ingest.mqtt")

# Packet types (the high nibble of the first byte).
CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 8, 9, 12, 13, 14
PUBREL = 6
#: MQTT's limit on a packet's remaining length (268,435,455 bytes).
MAX_REMAINING = 268_435_455

#: CONNACK and DISCONNECT reason codes worth their own words.
REASONS = {
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8B: "server shutting down",
    0x8D: "keep alive timeout",
    0x8E: "session taken over by another client with the same client id",
    0x8F: "topic filter invalid",
    0x93: "receive maximum exceeded",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9F: "connection rate exceeded",
}


class ProtocolError(Exception):
    """The broker sent something that is not MQTT 5.0 as this client speaks it."""


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


# --- encoding ---------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def connect_packet(
    client_id: str,
    *,
    keepalive_s: int,
    session_expiry_s: int,
    receive_maximum: int,
    username: str = "",
    password: str = "",
) -> bytes:
    flags = 0  # Clean Start 0: resume the session the broker keeps for this client id
    payload = _string(client_id)
    if username:
        flags |= 0x80
        payload += _string(username)
        if password:
            flags |= 0x40
            data = password.encode()
            payload += struct.pack("!H", len(data)) + data
    props = b"\x11" + struct.pack("!I", session_expiry_s) + b"\x21" + struct.pack("!H", receive_maximum)
    body = _string("MQTT") + bytes([5, flags]) + struct.pack("!H", keepalive_s) + _varint(len(props)) + props
    return _packet(CONNECT << 4, body + payload)


def subscribe_packet(mid: int, *topic_filters: str) -> bytes:
    options = bytes([0x01 | (1 << 4)])  # QoS 1, Retain Handling 1 (retained only for a new subscription)
    body = b"".join(_string(f) + options for f in topic_filters)
    return _packet(0x82, struct.pack("!H", mid) + b"\x00" + body)


def puback_packet(mid: int) -> bytes:
    return struct.pack("!BBH", PUBACK << 4, 2, mid)  # Reason Code 0 and no properties: omitted


PINGREQ_PACKET = bytes([PINGREQ << 4, 0])
DISCONNECT_PACKET = bytes([DISCONNECT << 4, 0])  # normal disconnection: the session stays


# --- decoding ---------------------------------------------------------------------------


def _read_varint(buf: bytes | bytearray, i: int, end: int) -> tuple[int, int] | None:
    """(value, next index); None when the buffer ends first."""
    value = 0
    shift = 0
    while True:
        if i >= end:
            return None
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7
        if shift > 21:
            raise ProtocolError("variable byte integer longer than 4 bytes")


class _Connection(asyncio.Protocol):
    """One TCP connection: parses packets from the stream, hands them to the consumer."""

    def __init__(self, consumer: MqttConsumer) -> None:
        self.consumer = consumer
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.closed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.last_in = self.last_out = time.monotonic()
        #: Reading paused by the consumer (window full): silence from the broker is expected.
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(str(exc) if exc else "closed by the broker")
        self.consumer._connection_lost(self)

    def data_received(self, data: bytes) -> None:
        self.last_in = time.monotonic()
        buf = self.buf
        buf += data
        try:
            consumed = self.consumer._parse(self, buf)
        except (ProtocolError, IndexError, struct.error, UnicodeDecodeError) as exc:
            self.close(f"protocol error from the broker: {exc}")
            return
        if consumed:
            del buf[:consumed]

    def pause(self) -> None:
        if self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and self.paused:
            self.paused = False
            self.last_in = time.monotonic()  # the silence was ours
            self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.last_out = time.monotonic()

    def close(self, why: str) -> None:
        if not self.closed.done():
            self.closed.set_result(why)
        if self.transport is not None:
            self.transport.close()


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
        also: Sequence[str] = (),
        receive_maximum: int,
        session_expiry_s: int,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.config = config
        self.client_id = client_id
        self.topic_filter = topic_filter
        #: Further topic filters, subscribed in the same SUBSCRIBE (e.g. gateways' health).
        self.also = tuple(also)
        self.receive_maximum = receive_maximum
        self.session_expiry_s = session_expiry_s
        self.connect_timeout_s = connect_timeout_s
        self._on_message = on_message
        self.epoch = 0
        self.connected = asyncio.Event()
        self.subscribed = asyncio.Event()
        self.session_present = False
        self.reconnects = 0
        self._conn: _Connection | None = None
        self._acks = bytearray()
        self._flush_scheduled = False
        self._last_problem = ""
        self._refused = ""

    # --- receiving ----------------------------------------------------------------------

    def _parse(self, conn: _Connection, buf: bytearray) -> int:
        """Handle every complete packet in ``buf``; how many bytes were used."""
        pos = 0
        end = len(buf)
        deliver = self._on_message
        epoch = self.epoch
        while pos < end:
            first = buf[pos]
            header = _read_varint(buf, pos + 1, end)
            if header is None:
                break
            length, start = header
            stop = start + length
            if stop > end:
                break
            kind = first >> 4
            if kind == PUBLISH:
                qos = (first >> 1) & 3
                tlen = (buf[start] << 8) | buf[start + 1]
                i = start + 2 + tlen
                raw_topic = bytes(buf[start + 2 : i])
                mid = 0
                if qos:
                    mid = (buf[i] << 8) | buf[i + 1]
                    i += 2
                props = _read_varint(buf, i, stop)
                if props is None:
                    raise ProtocolError("PUBLISH properties overrun the packet")
                i = props[1] + props[0]
                if i > stop:
                    raise ProtocolError("PUBLISH properties overrun the packet")
                try:
                    topic = raw_topic.decode()
                except UnicodeDecodeError:  # the broker should refuse these; never trust it
                    topic = "<topic not UTF-8>"
                if qos == 2:
                    raise ProtocolError("QoS 2 PUBLISH on a QoS 1 subscription")
                deliver(Delivery(topic, bytes(buf[i:stop]), mid, qos, epoch, bool(first & 8), bool(first & 1)))
            elif kind == CONNACK:
                self._connack(conn, buf[start:stop])
                epoch = self.epoch
            elif kind == SUBACK:
                self._suback(buf[start:stop])
            elif kind == PINGRESP:
                pass
            elif kind == DISCONNECT:
                code = buf[start] if length else 0
                why = REASONS.get(code, f"reason code 0x{code:02x}")
                self._problem(f"broker {self.config.url} closed the connection: {why}")
                conn.close(why)
            elif kind == PUBREL:
                raise ProtocolError("PUBREL (QoS 2) on a QoS 1 subscription")
            else:
                raise ProtocolError(f"unexpected packet type {kind}")
            pos = stop
        return pos

    def _connack(self, conn: _Connection, body: bytes | bytearray) -> None:
        present, code = body[0] & 1, body[1]
        if code >= 0x80:
            why = REASONS.get(code, f"reason code 0x{code:02x}")
            self._refused = why
            self._problem(f"broker {self.config.url} refused the connection: {why}")
            conn.close(why)
            return
        self.session_present = bool(present)
        self.epoch += 1
        self.connected.set()
        conn.write(subscribe_packet(1, self.topic_filter, *self.also))

    def _suback(self, body: bytes | bytearray) -> None:
        props = _read_varint(body, 2, len(body))
        if props is None:
            raise ProtocolError("SUBACK too short")
        codes = body[props[1] + props[0] :]
        filters = (self.topic_filter, *self.also)
        refused = [(f, c) for f, c in zip(filters, codes, strict=False) if c >= 0x80]
        if len(codes) < len(filters) or refused:
            topic_filter, code = refused[0] if refused else (filters[len(codes)], 0x80)
            why = REASONS.get(code, f"reason code 0x{code:02x}")
            self._problem(f"broker {self.config.url} refused the subscription to {topic_filter}: {why}")
            if self._conn is not None:
                self._conn.close(why)
            return
        self.subscribed.set()

    def _connection_lost(self, conn: _Connection) -> None:
        if conn is self._conn:
            self._conn = None
            self.connected.clear()
            self.subscribed.clear()
            self._acks.clear()  # acknowledgements for a dead connection mean nothing

    def _problem(self, text: str) -> None:
        if text != self._last_problem:
            log.error("%s", text)
            self._last_problem = text

    # --- acknowledging ------------------------------------------------------------------

    def ack(self, delivery: Delivery) -> bool:
        """Acknowledge a stored delivery; False when its connection is gone (the broker resends it)."""
        if delivery.qos == 0:
            return True
        if delivery.epoch != self.epoch or self._conn is None or not self.connected.is_set():
            return False
        self._acks += puback_packet(delivery.mid)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)
        return True

    def pause(self) -> None:
        """Stop reading from the broker (the window is full). Mosquitto 2.0 can send more than the
        Receive Maximum while it drains a queue (eclipse-mosquitto/mosquitto#2301); not reading
        leaves the rest in the broker, whatever it does."""
        if self._conn is not None:
            self._conn.pause()

    def resume(self) -> None:
        if self._conn is not None:
            self._conn.resume()

    @property
    def paused(self) -> bool:
        return self._conn is not None and self._conn.paused

    def flush(self) -> None:
        """Send the acknowledgements gathered so far, in one write."""
        self._flush_scheduled = False
        if self._acks and self._conn is not None:
            self._conn.write(bytes(self._acks))
        self._acks.clear()

    # --- the connection -----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected and subscribed until ``stop``; back off and retry forever otherwise."""
        delay = 0.5
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            self._refused = ""
            context = self.config.ssl_context()
            try:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _Connection(self),
                        self.config.host,
                        self.config.port,
                        ssl=context,
                        server_hostname=self.config.host if context else None,
                    ),
                    timeout=self.connect_timeout_s,
                )
            except ssl.SSLCertVerificationError as exc:
                self._problem(
                    f"broker {self.config.url}: its TLS certificate is not trusted ({exc.verify_message}); "
                    "check mqtt.ca_file and that the certificate names this host; retrying with back-off"
                )
                await _sleep_or_stop(stop, delay)
                delay = min(delay * 2, 10.0)
                continue
            except (OSError, TimeoutError) as exc:
                self._problem(f"broker {self.config.url} unreachable ({exc or 'time-out'}); retrying with back-off")
                await _sleep_or_stop(stop, delay)
                delay = min(delay * 2, 10.0)
                continue
            self._conn = conn
            conn.write(
                connect_packet(
                    self.client_id,
                    keepalive_s=self.config.keepalive_s,
                    session_expiry_s=self.session_expiry_s,
                    receive_maximum=self.receive_maximum,
                    username=self.config.username,
                    password=self.config.password,
                )
            )
            pinger = asyncio.create_task(self._keepalive(conn))
            stopper = asyncio.create_task(stop.wait())
            subscribed = asyncio.create_task(self.subscribed.wait())
            try:
                first: set[asyncio.Future[Any]] = {conn.closed, stopper, subscribed}
                await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
                if self.subscribed.is_set():
                    if self._last_problem or self.reconnects:
                        log.info("broker %s: connected and subscribed again", self.config.url)
                    self._last_problem = ""
                    delay = 0.5
                    then: set[asyncio.Future[Any]] = {conn.closed, stopper}
                    await asyncio.wait(then, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (pinger, stopper, subscribed):
                    task.cancel()
            if stop.is_set():
                break
            why = conn.closed.result() if conn.closed.done() else "closed"
            conn.close(why)
            self._connection_lost(conn)
            self.reconnects += 1
            if not self._refused:
                self._problem(f"broker {self.config.url}: connection lost ({why}); reconnecting with back-off")
            await _sleep_or_stop(stop, delay)
            delay = min(delay * 2, 10.0)

    async def _keepalive(self, conn: _Connection) -> None:
        """PINGREQ when either side has been quiet; a broker silent for 1.5 keep-alive periods is gone."""
        keepalive = max(1, self.config.keepalive_s)
        while not conn.closed.done():
            await asyncio.sleep(keepalive / 4)
            now = time.monotonic()
            silent = 0.0 if conn.paused else now - conn.last_in
            if silent > keepalive * 1.5:
                conn.close(f"no answer from the broker for {silent:.0f} s")
                return
            if silent >= keepalive / 2 or now - conn.last_out >= keepalive / 2:
                conn.write(PINGREQ_PACKET)

    async def disconnect(self) -> None:
        """Close the connection normally; the session (and what was not acknowledged) stays in the broker."""
        conn = self._conn
        if conn is None:
            return
        self.flush()
        conn.write(DISCONNECT_PACKET)
        conn.close("disconnected")  # the transport sends what it holds, then closes
        self._connection_lost(conn)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(conn.closed), timeout=1)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
