"""The ingest's MQTT v5 packet parser (ingest/mqtt.py): any bytes from the network, in any
chunks, give the messages they hold or a protocol error that closes the connection; never
another exception, never a message that was not sent."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from birlik.config import MqttConfig
from ingest.mqtt import (
    PUBACK,
    Delivery,
    MqttConsumer,
    ProtocolError,
    _varint,
    connect_packet,
    puback_packet,
    subscribe_packet,
)

FUZZ = settings(
    max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)


class _Conn:
    """What the parser needs of a connection."""

    def __init__(self) -> None:
        self.closed: list[str] = []
        self.sent: list[bytes] = []

    def close(self, why: str) -> None:
        self.closed.append(why)

    def write(self, data: bytes) -> None:
        self.sent.append(data)


def _consumer(got: list[Delivery]) -> MqttConsumer:
    return MqttConsumer(
        MqttConfig(),
        client_id="t",
        topic_filter="birlik/#",
        on_message=got.append,
        receive_maximum=100,
        session_expiry_s=60,
    )


def feed(chunks: list[bytes]) -> tuple[list[Delivery], _Conn, bool]:
    """Chunks through the parser as ``data_received`` gives them; (deliveries, conn, protocol error)."""
    got: list[Delivery] = []
    consumer = _consumer(got)
    conn = _Conn()
    buf = bytearray()
    for chunk in chunks:
        buf += chunk
        try:
            used = consumer._parse(conn, buf)  # type: ignore[arg-type]
        except (ProtocolError, IndexError, struct.error, UnicodeDecodeError):
            return got, conn, True
        del buf[:used]
    return got, conn, False


def publish_packet(topic: bytes, payload: bytes, *, qos: int, mid: int, props: bytes, dup: bool, retain: bool) -> bytes:
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", mid)
    body += _varint(len(props)) + props + payload
    first = 0x30 | (qos << 1) | (8 if dup else 0) | (1 if retain else 0)
    return bytes([first]) + _varint(len(body)) + body


_publish = st.builds(
    lambda topic, payload, qos, mid, props, dup, retain: (
        (topic, payload, qos, mid if qos else 0, dup, retain),
        publish_packet(topic.encode(), payload, qos=qos, mid=mid, props=props, dup=dup, retain=retain),
    ),
    st.text(min_size=1, max_size=40),
    st.binary(max_size=300),
    st.sampled_from([0, 1]),
    st.integers(1, 65535),
    st.sampled_from([b"", b"\x01\x01", b"\x23\x00\x05"]),  # none, payload format, topic alias
    st.booleans(),
    st.booleans(),
)


@FUZZ
@given(st.lists(_publish, max_size=12), st.data())
def test_publish_packets_in_any_chunks_give_exactly_the_messages_sent(
    packets: list[tuple[tuple[str, bytes, int, int, bool, bool], bytes]], data: st.DataObject
) -> None:
    stream = b"".join(p for _, p in packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    got, conn, error = feed(chunks)
    assert not error and not conn.closed
    assert [(d.topic, d.payload, d.qos, d.mid, d.dup, d.retain) for d in got] == [m for m, _ in packets]


@FUZZ
@given(st.lists(st.binary(max_size=80), max_size=6))
@example([b"\x30\xff\xff\xff\xff\x7f"])  # a remaining length of 5 bytes
@example([b"\x30\x05\x00\x09abc"])  # a topic longer than the packet
@example([b"\x32\x04\x00\x00\x00"])  # QoS 1 without room for the packet id
@example([b"\x34\x05\x00\x01t\x00\x01"])  # QoS 2
@example([b"\x30\x04\x00\x01\xfft"])  # a topic that is not UTF-8 is kept, never trusted
@example([b"\xe0\x01\x8e"])  # DISCONNECT: session taken over
def test_any_bytes_give_messages_or_a_protocol_error_and_nothing_else(chunks: list[bytes]) -> None:
    got, _conn, _error = feed(chunks)
    for d in got:
        assert isinstance(d.topic, str) and isinstance(d.payload, bytes)


def test_a_broker_disconnect_closes_the_connection_with_its_reason() -> None:
    _, conn, error = feed([b"\xe0\x01\x8e"])
    assert not error and conn.closed == ["session taken over by another client with the same client id"]


def test_connect_asks_for_a_persistent_session_with_a_receive_maximum() -> None:
    packet = connect_packet(
        "ingest-1", keepalive_s=30, session_expiry_s=604800, receive_maximum=20000, username="u", password="p"
    )
    assert packet[0] == 0x10
    assert b"\x00\x04MQTT\x05" in packet
    flags = packet[packet.index(b"MQTT") + 5]
    assert flags & 0x02 == 0  # Clean Start 0
    assert flags & 0xC0 == 0xC0  # user name and password
    assert b"\x11" + struct.pack("!I", 604800) in packet and b"\x21" + struct.pack("!H", 20000) in packet


def test_small_packets() -> None:
    assert puback_packet(513) == bytes([PUBACK << 4, 2, 2, 1])
    sub = subscribe_packet(1, "birlik/+/+/+/+/telemetry")
    assert sub[0] == 0x82 and sub[-1] == 0x11  # QoS 1, Retain Handling 1
    assert [_varint(n) for n in (0, 127, 128, 16383, 16384)] == [
        b"\x00",
        b"\x7f",
        b"\x80\x01",
        b"\xff\x7f",
        b"\x80\x80\x01",
    ]
