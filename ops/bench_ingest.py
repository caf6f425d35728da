"""``birlik bench ingest``: the ingest against the ceilings around it and against Node-RED.

One run, on servers of its own, the same pre-generated messages for everyone:

a) InfluxDB's own bulk-write rate for the very line protocol the ingest writes (batches of
   5000 points straight to ``/write``): the ceiling;
b) the broker's QoS 1 delivery rate to a bare counting subscriber (a raw-socket MQTT 3.1.1
   client in a process of its own that only counts and acknowledges);
c) Node-RED with the flow users build (mqtt in -> function -> join -> influxdb batch),
   installed from npm at the versions pinned in ``ops/nodered/package.json``;
d) ``birlik ingest`` end to end, one or ``--processes N`` processes sharing the stream, then a
   paced phase at half its maximum rate for the latency from device time to visible.

(c) and (d) run for two message shapes: one sample per message (12 readings of a conveyor
drive) and ten samples per message, the same samples. The publisher sends pre-encoded MQTT
PUBLISH packets over a raw socket with up to 1000 unacknowledged, so it is not what limits
the others. Every sample carries a unique ``count_good``, so lost readings (COUNT) and
points stored with wrong values (SUM, then point by point) are found. docs/ingest.md
("Benchmark") describes the method; the last line is::

    RESULT ingest single_mps=... nodered_single_mps=... ratio_nodered_single=... batched_rps=...
        nodered_batched_rps=... ratio_nodered_batched=... db_bulk_rps=... ratio_db=...
        broker_qos1_mps=... lost=... duplicated=... peak_rss_mb=... p50_ms=... p99_ms=...
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import functools
import json
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from birlik.influx import InfluxClient
    from ops.servers import Child, Supervisor

log = logging.getLogger("bench.ingest")

SUMMARY = "birlik ingest vs Node-RED on the same messages, vs InfluxDB bulk writes and the broker's QoS 1 rate"

#: What the topic filter of the ingest and of the Node-RED flow match.
TOPIC_FILTER = "birlik/+/+/+/+/telemetry"
GATEWAY = "gw-bench"
TENANT = "bench"
MACHINES = 26
KIND = "conveyor_drive"
#: A conveyor drive's signals (simulators/machines/conveyor.py): 12 readings a sample.
SIGNALS = (
    "state",
    "speed",
    "belt_speed",
    "load",
    "motor_current",
    "power",
    "energy",
    "vibration_rms",
    "bearing_temp",
    "motor_temp",
    "count_good",
    "ambient_temp",
)
#: The field whose values are unique and known: the checksum of every stored point.
CHECK_FIELD = "count_good"
BATCH_SAMPLES = 10
BULK_BATCH_POINTS = 5000
WINDOW = 1000

NODERED_SPEC = Path(__file__).resolve().parent / "nodered"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``birlik bench ingest`` (on the shared ``bench`` parser)."""
    p.add_argument(
        "--messages",
        type=int,
        default=52_000,
        help="ingest: one-sample messages per run (26 machines x 2000 samples); the 10-sample shape carries the "
        "same samples (default: 52000)",
    )
    p.add_argument("--processes", type=int, default=1, help="ingest: birlik ingest processes sharing the stream")
    p.add_argument(
        "--paced-seconds", type=float, default=10, help="ingest: length of the paced latency phase (default: 10)"
    )
    p.add_argument("--no-nodered", action="store_true", help="ingest: skip Node-RED (its rates are reported as 0)")
    p.add_argument(
        "--nodered-dir",
        type=Path,
        default=Path(".state/bench/nodered"),
        help="ingest: where Node-RED is installed with npm and reused (default: %(default)s)",
    )


# --- MQTT 3.1.1 packets --------------------------------------------------------------------

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, DISCONNECT = 1, 2, 3, 4, 8, 9, 14


def remaining_length(n: int) -> bytes:
    """MQTT's variable-length integer (1-4 bytes, 7 bits each, least significant first)."""
    if not 0 <= n <= 268_435_455:
        raise ValueError(f"remaining length {n} is out of MQTT's range")
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    if len(data) > 65535:
        raise ValueError("an MQTT string is at most 65535 bytes")
    return len(data).to_bytes(2, "big") + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + remaining_length(len(body)) + body


def encode_connect(client_id: str, *, clean: bool = True, keepalive_s: int = 60) -> bytes:
    flags = 0x02 if clean else 0x00
    return _packet(
        CONNECT << 4, _string("MQTT") + bytes([4, flags]) + keepalive_s.to_bytes(2, "big") + _string(client_id)
    )


def encode_publish(topic: str | bytes, payload: bytes, packet_id: int, *, qos: int = 1) -> bytes:
    """A PUBLISH packet; QoS 1 and 2 carry ``packet_id`` (1..65535)."""
    if qos and not 1 <= packet_id <= 65535:
        raise ValueError(f"packet id {packet_id} is not in 1..65535")
    body = _string(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + payload
    return _packet((PUBLISH << 4) | (qos << 1), body)


def encode_subscribe(packet_id: int, topic_filter: str, *, qos: int = 1) -> bytes:
    return _packet((SUBSCRIBE << 4) | 0x02, packet_id.to_bytes(2, "big") + _string(topic_filter) + bytes([qos]))


def encode_puback(packet_id: int) -> bytes:
    return bytes([PUBACK << 4, 2]) + packet_id.to_bytes(2, "big")


DISCONNECT_PACKET = bytes([DISCONNECT << 4, 0])


def packet_id(index: int) -> int:
    """The packet id of the ``index``-th message of a connection: 1..65535, then again from 1."""
    return index % 65535 + 1


@dataclass(frozen=True, slots=True)
class Packet:
    type: int
    flags: int
    body: bytes


def split_packets(buffer: bytes | bytearray) -> tuple[list[Packet], int]:
    """The complete packets at the start of ``buffer`` and how many bytes they take."""
    packets: list[Packet] = []
    pos, end = 0, len(buffer)
    while pos < end:
        first = buffer[pos]
        length, shift, i = 0, 0, pos + 1
        while True:
            if i >= end:
                return packets, pos
            byte = buffer[i]
            length |= (byte & 0x7F) << shift
            shift += 7
            i += 1
            if not byte & 0x80:
                break
            if shift > 21:
                raise ValueError("malformed remaining length")
        if i + length > end:
            return packets, pos
        packets.append(Packet(first >> 4, first & 0x0F, bytes(buffer[i : i + length])))
        pos = i + length
    return packets, pos


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    packet_id: int
    qos: int
    payload: bytes


def parse_publish(packet: Packet) -> Publish:
    if packet.type != PUBLISH:
        raise ValueError(f"packet type {packet.type} is not PUBLISH")
    qos = (packet.flags >> 1) & 0x03
    n = int.from_bytes(packet.body[:2], "big")
    topic = packet.body[2 : 2 + n].decode()
    pos = 2 + n
    pid = 0
    if qos:
        pid = int.from_bytes(packet.body[pos : pos + 2], "big")
        pos += 2
    return Publish(topic, pid, qos, packet.body[pos:])


def _recv_packet(sock: socket.socket, buffer: bytearray) -> Packet:
    while True:
        packets, _ = split_packets(buffer)
        if packets:
            first = packets[0]
            # Only the first: put the rest back (its size is the header plus the body).
            size = 1 + len(remaining_length(len(first.body))) + len(first.body)
            del buffer[:size]
            return first
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the broker closed the connection")
        buffer += data


def mqtt_connect(host: str, port: int, client_id: str, *, clean: bool = True) -> tuple[socket.socket, bytearray]:
    """A connected MQTT 3.1.1 session (CONNACK accepted) and the bytes read past the CONNACK."""
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(encode_connect(client_id, clean=clean))
    buffer = bytearray()
    ack = _recv_packet(sock, buffer)
    if ack.type != CONNACK or len(ack.body) < 2 or ack.body[1] != 0:
        sock.close()
        raise ConnectionError(f"the broker refused the connection of {client_id}: {ack}")
    sock.settimeout(None)
    return sock, buffer


def clear_session(host: str, port: int, client_id: str) -> None:
    """Discard the broker's persistent session of ``client_id`` (a clean connect, then leave),
    so the broker stops queueing for a process that is gone."""
    with contextlib.suppress(OSError):
        sock, _ = mqtt_connect(host, port, client_id, clean=True)
        with contextlib.closing(sock):
            sock.sendall(DISCONNECT_PACKET)


# --- the publisher -------------------------------------------------------------------------


class RawPublisher:
    """Sends pre-encoded QoS 1 PUBLISH packets over one MQTT 3.1.1 connection, keeping up to
    ``window`` unacknowledged; a thread counts the PUBACKs.

    ``run`` sends everything (at the times of ``schedule``, epoch seconds, when given) and
    returns when every packet is acknowledged. Counters are readable from other threads.
    """

    def __init__(self, host: str, port: int, client_id: str, *, window: int = WINDOW, stall_s: float = 60) -> None:
        self.sock, self._early = mqtt_connect(host, port, client_id)
        self.window = window
        self.stall_s = stall_s
        self.sent = 0
        self.acked = 0
        self.first_send = 0.0  # time.monotonic()
        self.first_send_epoch = 0.0
        self.last_ack = 0.0
        self.late_s = 0.0  # paced: the most a packet went out after its time
        self.error: BaseException | None = None
        self._cond = threading.Condition()

    def run(self, packets: Sequence[bytes], schedule: Sequence[float] | None = None) -> None:
        total = len(packets)
        reader = threading.Thread(target=self._read_acks, args=(total,), name="puback-reader", daemon=True)
        reader.start()
        try:
            self._send(packets, schedule)
            with self._cond:
                deadline = time.monotonic() + self.stall_s
                while self.acked < total and self.error is None:
                    if not self._cond.wait(1.0) and time.monotonic() > deadline:
                        raise TimeoutError(f"{total - self.acked} messages not acknowledged after {self.stall_s:.0f} s")
            if self.error is not None:
                raise self.error
        finally:
            with contextlib.suppress(OSError):
                self.sock.sendall(DISCONNECT_PACKET)
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            reader.join(5)
            self.sock.close()

    def _send(self, packets: Sequence[bytes], schedule: Sequence[float] | None) -> None:
        total = len(packets)
        sent = 0
        self.first_send_epoch = time.time()
        self.first_send = time.monotonic()
        while sent < total:
            with self._cond:
                waited = time.monotonic()
                while sent - self.acked >= self.window:
                    if self.error is not None:
                        raise self.error
                    self._cond.wait(1.0)
                    if time.monotonic() - waited > self.stall_s:
                        raise TimeoutError(f"no PUBACK for {self.stall_s:.0f} s")
                room = self.window - (sent - self.acked)
            n = min(room, 200, total - sent)
            if schedule is not None:
                now = time.time()
                due = sent
                while due < sent + n and schedule[due] <= now:
                    due += 1
                if due == sent:
                    time.sleep(min(schedule[sent] - now, 0.05))
                    continue
                self.late_s = max(self.late_s, now - schedule[sent])
                n = due - sent
            self.sock.sendall(b"".join(packets[sent : sent + n]))
            sent += n
            self.sent = sent

    def _read_acks(self, total: int) -> None:
        buffer = bytearray(self._early)
        try:
            while self.acked < total:
                if len(buffer) < 4:
                    data = self.sock.recv(1 << 16)
                    if not data:
                        raise ConnectionError("the broker closed the connection")
                    buffer += data
                n = len(buffer) // 4
                # The broker answers QoS 1 with PUBACKs (4 bytes each) and nothing else.
                if buffer[0 : n * 4 : 4] != bytes([PUBACK << 4]) * n:
                    packets, used = split_packets(buffer)
                    unexpected = [p for p in packets if p.type != PUBACK]
                    if unexpected:
                        raise ConnectionError(f"unexpected packet from the broker: type {unexpected[0].type}")
                    n, size = len(packets), used
                else:
                    size = n * 4
                del buffer[:size]
                with self._cond:
                    self.acked += n
                    self.last_ack = time.monotonic()
                    self._cond.notify_all()
        except BaseException as exc:  # reported to the sender
            with self._cond:
                if self.acked < total:
                    self.error = exc
                self._cond.notify_all()

    @property
    def rate(self) -> float:
        """Messages acknowledged per second, first send to last PUBACK."""
        elapsed = self.last_ack - self.first_send
        return self.acked / elapsed if elapsed > 0 else 0.0


class Background:
    """A publisher run in a thread, so the caller can watch the database meanwhile."""

    def __init__(self, publisher: RawPublisher, packets: Sequence[bytes], schedule: Sequence[float] | None = None):
        self.publisher = publisher
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(packets, schedule), name="publisher", daemon=True)
        self._thread.start()
        while not publisher.first_send and self._thread.is_alive():
            time.sleep(0.001)

    def _run(self, packets: Sequence[bytes], schedule: Sequence[float] | None) -> None:
        try:
            self.publisher.run(packets, schedule)
        except BaseException as exc:
            self.error = exc

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


# --- the counting subscriber (a process of its own) ------------------------------------------


def count_subscriber(host: str, port: int, expect: int, status: Path, *, idle_s: float = 10) -> int:
    """Subscribe (QoS 1) to every machine's telemetry, acknowledge and count until ``expect``
    messages arrived or none for ``idle_s``; the counts go to ``status`` (JSON)."""

    def report(**fields: Any) -> None:
        tmp = status.with_name(status.name + ".tmp")
        tmp.write_text(json.dumps(fields))
        os.replace(tmp, status)

    sock, buffer = mqtt_connect(host, port, f"bench-counter-{os.getpid()}")
    sock.sendall(encode_subscribe(1, TOPIC_FILTER))
    ack = _recv_packet(sock, buffer)
    if ack.type != SUBACK or ack.body[2:3] != b"\x01":
        raise ConnectionError(f"subscription refused: {ack}")
    report(ready=True, received=0)
    cpu0 = time.process_time()
    sock.settimeout(idle_s)
    received, first, last = 0, 0.0, 0.0
    puback = PUBACK << 4
    try:
        while received < expect:
            try:
                data = sock.recv(1 << 20)
            except TimeoutError:
                break
            if not data:
                break
            buffer += data
            acks = bytearray()
            pos, end = 0, len(buffer)
            while pos < end:
                # Fixed header, remaining length, topic, packet id: enough to acknowledge.
                head = buffer[pos]
                length, shift, i = 0, 0, pos + 1
                while i < end:
                    byte = buffer[i]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    i += 1
                    if not byte & 0x80:
                        break
                else:
                    break
                if i + length > end:
                    break
                if head >> 4 == PUBLISH:
                    received += 1
                    if head & 0x06:
                        n = (buffer[i] << 8) | buffer[i + 1]
                        acks += bytes((puback, 2, buffer[i + 2 + n], buffer[i + 3 + n]))
                pos = i + length
            del buffer[:pos]
            if acks:
                sock.sendall(acks)
            last = time.monotonic()
            if not first:
                first = last
    finally:
        with contextlib.suppress(OSError):
            sock.sendall(DISCONNECT_PACKET)
        sock.close()
        report(ready=True, done=True, received=received, first=first, last=last, cpu_s=time.process_time() - cpu0)
    return 0


# --- the messages --------------------------------------------------------------------------


@dataclass
class Workload:
    """Pre-encoded messages of one shape, and what the database must hold after them."""

    name: str
    samples_per_message: int
    topics: list[str]
    payloads: list[bytes]
    packets: list[bytes]
    #: (machine, ts) -> the unique check value of every point, and their sum.
    expected: dict[tuple[str, int], int]
    checksum: int
    readings: int
    schedule: list[float] | None = None  # paced: epoch seconds each message is due

    @property
    def messages(self) -> int:
        return len(self.payloads)

    @property
    def points(self) -> int:
        return len(self.expected)

    @functools.cached_property
    def timelines(self) -> dict[str, list[int]]:
        """Each machine's timestamps, in order."""
        out: dict[str, list[int]] = {}
        for machine, ts in self.expected:
            out.setdefault(machine, []).append(ts)
        for line in out.values():
            line.sort()
        return out

    def visible(self, newest: dict[str, int]) -> int:
        """How many points are visible when each machine's stream is, up to its ``newest``."""
        return sum(bisect.bisect_right(self.timelines.get(m, []), ts) for m, ts in newest.items())


@dataclass(frozen=True)
class Machine:
    index: int
    tenant: str
    site: str
    line: str
    id: str

    @property
    def topic(self) -> str:
        return f"birlik/{self.tenant}/{self.site}/{self.line}/{self.id}/telemetry"


def bench_machines(count: int = MACHINES) -> list[Machine]:
    """``count`` conveyor drives on two sites, three lines each."""
    sites = ("kz-bench", "uz-bench")
    return [Machine(i, TENANT, sites[i % 2], f"line-{i // 2 % 3 + 1}", f"cv-{i + 1:03d}") for i in range(count)]


def sample_values(machine: int, j: int, check: int) -> dict[str, float | int | str]:
    """A conveyor drive's 12 readings, varying and in range; ``count_good`` is ``check``."""
    phase = (j * 7 + machine * 13) % 100 / 100
    load = round(55 + 30 * phase, 1)
    return {
        "state": "running",
        "speed": round(1460 - 0.3 * load + machine * 0.1, 1),
        "belt_speed": round(1.6 - 0.0003 * load, 3),
        "load": load,
        "motor_current": round(9 + 0.06 * load, 2),
        "power": round(0.075 * load, 3),
        "energy": round(10_000 + machine * 100 + j * 0.002, 3),
        "vibration_rms": round(1.1 + 0.5 * phase, 2),
        "bearing_temp": round(38 + 12 * phase, 1),
        "motor_temp": round(45 + 20 * phase, 1),
        "count_good": check,
        "ambient_temp": round(21 + machine * 0.1, 2),
    }


def _encode(
    name: str,
    samples_per_message: int,
    messages: list[tuple[Machine, list[tuple[int, dict[str, float | int | str]]]]],
) -> Workload:
    from birlik.payload import encode_telemetry

    topics, payloads, packets = [], [], []
    expected: dict[tuple[str, int], int] = {}
    readings = 0
    topic_bytes = {m.id: m.topic.encode() for m, _ in messages}
    for k, (machine, samples) in enumerate(messages):
        payload = encode_telemetry(gateway=GATEWAY, seq=k + 1, samples=samples, kind=KIND)
        topics.append(machine.topic)
        payloads.append(payload)
        packets.append(encode_publish(topic_bytes[machine.id], payload, packet_id(k)))
        for ts, values in samples:
            expected[(machine.id, ts)] = int(values[CHECK_FIELD])
            readings += len(values)
    return Workload(name, samples_per_message, topics, payloads, packets, expected, sum(expected.values()), readings)


def make_workloads(messages: int, *, now_ms: int | None = None) -> tuple[Workload, Workload]:
    """The same samples twice: one per message, and ``BATCH_SAMPLES`` per message.

    Each of the 26 machines gets a sample a second (timestamps unique per machine), messages
    go round the machines, one gateway with ``seq`` 1, 2, 3, ... per shape. ``count_good`` of
    the k-th sample published (one-sample shape) is k.
    """
    machines = bench_machines()
    per_machine = max(BATCH_SAMPLES, math.ceil(messages / len(machines) / BATCH_SAMPLES) * BATCH_SAMPLES)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    base = (now_ms // 1000 - per_machine - 60) * 1000
    n = len(machines)

    grid = [[(base + j * 1000, sample_values(m, j, j * n + m + 1)) for j in range(per_machine)] for m in range(n)]
    single = [(machines[m], [grid[m][j]]) for j in range(per_machine) for m in range(n)]
    batched = [
        (machines[m], grid[m][b : b + BATCH_SAMPLES]) for b in range(0, per_machine, BATCH_SAMPLES) for m in range(n)
    ]
    return _encode("single", 1, single), _encode("batched", BATCH_SAMPLES, batched)


def make_paced(rate: float, seconds: float, *, start: float) -> Workload:
    """One-sample messages due at ``rate`` a second from ``start`` (epoch s), each with the
    time it is due as its device time ``ts``."""
    machines = bench_machines()
    count = max(1, int(rate * seconds))
    last_ts: dict[int, int] = {}
    messages, schedule = [], []
    for k in range(count):
        due = start + k / rate
        m = k % len(machines)
        ts = max(int(due * 1000), last_ts.get(m, 0) + 1)
        last_ts[m] = ts
        messages.append((machines[m], [(ts, sample_values(m, k, k + 1))]))
        schedule.append(due)
    workload = _encode("paced", 1, messages)
    workload.schedule = schedule
    return workload


def line_protocol(workload: Workload) -> list[str]:
    """The lines the ingest writes for these messages (its own decoder and encoder), in the
    order of their check values: the order of the one-sample shape, whichever shape is given
    (decoding the ten-sample shape is quicker)."""
    from birlik.lineprotocol import telemetry_lines
    from birlik.payload import decode_telemetry

    lines: list[tuple[int, str]] = []
    for topic, payload in zip(workload.topics, workload.payloads, strict=True):
        telemetry = decode_telemetry(topic, payload)
        if telemetry.rejections or len(telemetry.samples) != workload.samples_per_message:
            raise AssertionError(f"a bench message is not valid: {telemetry.rejections[:1]}")
        for sample, line in zip(telemetry.samples, telemetry_lines(telemetry), strict=True):
            lines.append((int(sample.values[CHECK_FIELD]), line))
    lines.sort()
    return [line for _, line in lines]


# --- watching the database -----------------------------------------------------------------


def count_points(influx: InfluxClient, database: str) -> int:
    series = influx.query(f'SELECT COUNT("{CHECK_FIELD}") FROM "telemetry"', database=database)
    return int(series[0].values[0][1]) if series and series[0].values else 0


def count_readings(influx: InfluxClient, database: str) -> int:
    series = influx.query('SELECT COUNT(*) FROM "telemetry"', database=database)
    return sum(int(v) for v in series[0].values[0][1:] if v) if series and series[0].values else 0


def wrong_points(influx: InfluxClient, database: str, workload: Workload) -> int:
    """Points stored twice or with a value that was not published there (0 when all is well).

    COUNT and SUM of the check field first; only when they differ, point by point.
    """
    q = f'SELECT COUNT("{CHECK_FIELD}"), SUM("{CHECK_FIELD}") FROM "telemetry"'
    series = influx.query(q, database=database)
    count, total = series[0].values[0][1:3] if series and series[0].values else (0, 0)
    if count == workload.points and total is not None and round(total) == workload.checksum:
        return 0
    wrong, seen = 0, set()
    rows = influx.query(f'SELECT "{CHECK_FIELD}" FROM "telemetry" GROUP BY "machine"', database=database)
    for s in rows:
        machine = s.tags.get("machine", "")
        for ts, value in s.values:
            key = (machine, int(ts))
            if key in seen or value is None or workload.expected.get(key) != round(value):
                wrong += 1
            seen.add(key)
    return wrong


@dataclass
class Outcome:
    """What one run of a workload into one database came to."""

    name: str
    messages: int
    readings: int
    elapsed_s: float = 0.0  # first publish to the last reading visible (or to giving up)
    stored: int = 0
    lost: int = 0
    wrong: int = 0
    complete: bool = False
    publisher_mps: float = 0.0
    #: Paced: the most a message went out after its time (the publisher's own lag).
    publisher_late_s: float = 0.0
    #: When the first message went out (epoch s), and every poll: (epoch s, each machine's
    #: newest visible timestamp), for the latency of a paced run.
    started_at: float = 0.0
    polls: list[tuple[float, dict[str, int]]] = field(default_factory=list)

    @property
    def mps(self) -> float:
        return self.messages / self.elapsed_s if self.complete and self.elapsed_s else 0.0

    @property
    def rps(self) -> float:
        if not self.elapsed_s:
            return 0.0
        return (self.readings if self.complete else self.stored) / self.elapsed_s


def publish_and_watch(
    label: str,
    workload: Workload,
    broker: tuple[str, int],
    influx: InfluxClient,
    database: str,
    *,
    timeout_s: float,
    poll_s: float = 0.25,
    stall_s: float = 20,
    alive: Callable[[], bool] = lambda: True,
) -> Outcome:
    """Publish ``workload`` and watch the database until all its points are visible, nothing
    moved for ``stall_s`` after the last acknowledgement, or ``timeout_s`` passed.

    Each poll asks for every machine's newest point (``last()``, about 15 ms whatever the size),
    which tells how far each machine's stream is visible; when every machine's last point is
    there, a COUNT confirms that all are (and is repeated every 0.5 s while some are missing).
    """
    out = Outcome(label, workload.messages, workload.readings)
    publisher = RawPublisher(*broker, f"bench-pub-{label.replace(' ', '-')}-{os.getpid()}")
    job = Background(publisher, workload.packets, workload.schedule)
    t0 = publisher.first_send
    out.started_at = publisher.first_send_epoch
    last_log = last_change = time.monotonic()
    visible, counting, reported = 0, False, False
    tick = time.monotonic()
    while True:
        tick = max(tick + (0.5 if counting else poll_s), time.monotonic())
        time.sleep(max(0.0, tick - time.monotonic()))
        polled_at, polled_mono = time.time(), time.monotonic()
        try:
            if counting:
                now_visible = count_points(influx, database)
            else:
                newest = newest_points(influx, database)
                out.polls.append((polled_at, newest))
                now_visible = workload.visible(newest)
                if now_visible >= workload.points:
                    now_visible = count_points(influx, database)
                    counting = now_visible < workload.points
        except Exception as exc:  # InfluxDB busy: try again
            log.debug("%s: poll failed: %s", label, exc)
            continue
        if now_visible != visible:
            visible, last_change = now_visible, polled_mono
        if visible >= workload.points:
            out.complete = True
            out.elapsed_s = polled_mono - t0
            break
        now = time.monotonic()
        if now - last_log >= 2:
            last_log = now
            log.info(
                "%s: published %s/%s messages (%s acknowledged), %s/%s points visible",
                label,
                f"{publisher.sent:,}",
                f"{workload.messages:,}",
                f"{publisher.acked:,}",
                f"{visible:,}",
                f"{workload.points:,}",
            )
        if job.error is not None and not reported:
            reported = True
            log.error("%s: the publisher failed: %r", label, job.error)
        if not alive():
            log.error("%s: the consumer exited; %s/%s points visible", label, f"{visible:,}", f"{workload.points:,}")
            break
        if (job.done and now - max(last_change, publisher.last_ack) > stall_s) or now - t0 > timeout_s:
            log.error(
                "%s: gave up after %.0f s with %s/%s points visible",
                label,
                now - t0,
                f"{visible:,}",
                f"{workload.points:,}",
            )
            break
    if not out.complete:
        out.elapsed_s = max(last_change - t0, 1e-9)
    job.join(30)
    out.publisher_mps = publisher.rate
    out.publisher_late_s = publisher.late_s
    out.stored = count_readings(influx, database)
    out.lost = max(0, workload.readings - out.stored)
    out.wrong = wrong_points(influx, database, workload)
    log.info(
        "%s: %s messages (%s readings) visible after %.2f s: %s msg/s, %s readings/s; lost %d, wrong %d; "
        "publisher %s msg/s",
        label,
        f"{workload.messages:,}",
        f"{out.stored:,}",
        out.elapsed_s,
        f"{out.mps:,.0f}",
        f"{out.rps:,.0f}",
        out.lost,
        out.wrong,
        f"{out.publisher_mps:,.0f}",
    )
    return out


def newest_points(influx: InfluxClient, database: str) -> dict[str, int]:
    """Every machine's newest visible point: machine -> its timestamp (ms)."""
    q = f'SELECT last("{CHECK_FIELD}") FROM "telemetry" GROUP BY "machine"'
    return {s.tags.get("machine", ""): int(s.values[0][0]) for s in influx.query(q, database=database) if s.values}


def latencies_ms(workload: Workload, started_at: float, polls: Sequence[tuple[float, dict[str, int]]]) -> list[float]:
    """Device time to visible, per point. A point counts as visible from the first poll that
    saw its machine's newest point at or after its timestamp (each machine's points are
    written in order); it became visible between that poll and the one before (or its own
    time, when later), taken in the middle."""
    out: list[float] = []
    done = dict.fromkeys(workload.timelines, 0)
    before = started_at
    for polled_at, newest in polls:
        for machine, ts in newest.items():
            line = workload.timelines.get(machine)
            if line is None:
                continue
            k = done[machine]
            while k < len(line) and line[k] <= ts:
                due = line[k] / 1000
                out.append((max(before, due) + polled_at) / 2 * 1000 - line[k])
                k += 1
            done[machine] = k
        before = polled_at
    return out


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def proc_memory_mb(pid: int, key: str) -> float:
    """A memory figure of /proc/<pid>/status (``VmHWM``, ``VmRSS`` ...), in MB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MB; 0 when it is gone."""
    return proc_memory_mb(pid, "VmHWM")


# --- the systems under test ----------------------------------------------------------------


class IngestGroup:
    """``birlik ingest`` processes on one database, sharing the stream when more than one."""

    def __init__(
        self, supervisor: Supervisor, label: str, broker_url: str, influx_url: str, database: str, processes: int
    ) -> None:
        from ops.stack import birlik_command

        self.supervisor = supervisor
        self.children: list[Child] = []
        self.client_ids: list[str] = []
        self.stats_paths: list[Path] = []
        for i in range(processes):
            name = f"ingest-{label}-{i + 1}"
            client_id = f"bench-{name}-{os.getpid()}"
            stats = supervisor.state_dir / "stats" / f"{name}.json"
            stats.parent.mkdir(parents=True, exist_ok=True)
            stats.unlink(missing_ok=True)
            env = {
                "PYTHONUNBUFFERED": "1",
                "BIRLIK_CONFIG": "",
                "BIRLIK_MQTT_URL": broker_url,
                "BIRLIK_INFLUX_URL": influx_url,
                "BIRLIK_INFLUX_DATABASE": database,
                "BIRLIK_INGEST_CLIENT_ID": client_id,
                "BIRLIK_INGEST_DEAD_LETTERS": str(supervisor.state_dir / f"dead-letters-{name}.jsonl"),
            }
            if processes > 1:
                env["BIRLIK_INGEST_SHARE_GROUP"] = f"bench-{label}"
            argv = [*birlik_command(), "ingest", "--stats-file", str(stats)]
            child = supervisor.start(name, argv, env=env, ready=_subscribed(stats), timeout_s=60)
            self.children.append(child)
            self.client_ids.append(client_id)
            self.stats_paths.append(stats)

    def alive(self) -> bool:
        return all(c.running for c in self.children)

    def peak_rss_mb(self) -> float:
        return sum(peak_rss_mb(c.process.pid) for c in self.children)

    def stop(self, broker: tuple[str, int]) -> list[dict[str, Any]]:
        """Stop the processes, discard their broker sessions; each one's last counters."""
        from birlik.stats import read_stats

        for child in self.children:
            self.supervisor.stop(child, grace_s=30)
        for client_id in self.client_ids:
            clear_session(*broker, client_id)
        return [read_stats(path) for path in self.stats_paths]


def _subscribed(stats: Path) -> Callable[[], bool]:
    from birlik.stats import read_stats

    return lambda: bool(read_stats(stats).get("subscribed"))


def run_ingest(
    supervisor: Supervisor,
    name: str,
    workload: Workload | Callable[[], Workload],
    broker: tuple[str, int],
    broker_url: str,
    influx_url: str,
    influx: InfluxClient,
    args: argparse.Namespace,
    *,
    poll_s: float = 0.25,
) -> tuple[Outcome, float]:
    """``birlik ingest`` on ``workload`` into a fresh database: the outcome and the peak RSS.

    ``workload`` may be a function, called once the ingest is subscribed (paced messages carry
    the time they are due as device time).
    """
    database = f"bench_{name}"
    influx.drop_database(database)
    influx.create_database(database)
    label = f"birlik {name}"
    group = IngestGroup(supervisor, name, broker_url, influx_url, database, args.processes)
    try:
        if callable(workload):
            workload = workload()
        out = publish_and_watch(
            label, workload, broker, influx, database, timeout_s=args.timeout, poll_s=poll_s, alive=group.alive
        )
        rss = group.peak_rss_mb()
    finally:
        stats = group.stop(broker)

    def total(*keys: str) -> int:
        return sum(int(one.get(k) or 0) for one in stats for k in keys)

    rejected = total("messages_rejected", "readings_rejected")
    received = [int(one.get("messages_received") or 0) for one in stats]
    log.info(
        "%s: ingest counters: received %s messages%s, wrote %s readings, rejected %d, redelivered %d%s; "
        "peak RSS %.0f MB (%d process%s)",
        label,
        f"{sum(received):,}",
        " (" + " + ".join(f"{r:,}" for r in received) + ")" if len(received) > 1 else "",
        f"{total('readings_written'):,}",
        rejected,
        total("messages_redelivered", "seq_repeats"),
        "" if len(received) > 1 else f", sequence gaps {total('seq_gaps')}",
        rss,
        args.processes,
        "es" if args.processes > 1 else "",
    )
    if rejected:
        log.warning("%s: the ingest rejected bench messages; see %s", label, supervisor.state_dir)
    return out, rss


def nodered_node(nodered_dir: Path) -> tuple[str, Path] | None:
    """Install Node-RED (pinned, ``ops/nodered/package.json``) into ``nodered_dir`` unless it is
    there already; the ``node`` executable and Node-RED's ``red.js``, or None (logged why)."""
    spec = (NODERED_SPEC / "package.json").read_bytes()
    wanted = json.loads(spec)["dependencies"]
    cache = nodered_dir.resolve()
    red = cache / "node_modules" / "node-red" / "red.js"
    stamp = cache / ".installed-package.json"
    if not (shutil.which("node") and shutil.which("npm")):
        log.info("nodered: node or npm is missing; installing Debian's nodejs and npm (apt-get)")
        if not _apt_install("nodejs", "npm"):
            return None
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        log.error("nodered: node/npm still not found after apt-get; Node-RED rates will be 0")
        return None
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    major = int(version.lstrip("v").split(".")[0]) if version.lstrip("v")[:1].isdigit() else 0
    if major < 18:
        log.error("nodered: node %s is too old for node-red %s (needs 18.5 or newer); rates will be 0", version, wanted)
        return None
    if red.exists() and stamp.exists() and stamp.read_bytes() == spec:
        log.info("nodered: reusing %s (%s)", cache, ", ".join(f"{k} {v}" for k, v in wanted.items()))
        return node, red
    log.info(
        "nodered: installing %s with npm into %s (first run only)",
        ", ".join(f"{k} {v}" for k, v in wanted.items()),
        cache,
    )
    cache.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    (cache / "package.json").write_bytes(spec)
    npm_log = cache / "npm-install.log"
    try:
        with open(npm_log, "wb") as out:
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--omit=dev", "--loglevel=error"],
                cwd=cache,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=900,
                check=False,
            )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error("nodered: npm install failed (%s); see %s; Node-RED rates will be 0", exc, npm_log)
        return None
    if done.returncode != 0 or not red.exists():
        tail = npm_log.read_text(errors="replace").strip().splitlines()[-5:]
        log.error(
            "nodered: npm install failed (exit %s), see %s; Node-RED rates will be 0:\n  %s",
            done.returncode,
            npm_log,
            "\n  ".join(tail),
        )
        return None
    for name, pinned in wanted.items():
        installed = json.loads((cache / "node_modules" / name / "package.json").read_text()).get("version")
        if installed != pinned:
            log.error(
                "nodered: npm installed %s %s, not the pinned %s; Node-RED rates will be 0", name, installed, pinned
            )
            return None
    stamp.write_bytes(spec)
    return node, red


def _apt_install(*packages: str) -> bool:
    if not shutil.which("apt-get"):
        log.error("nodered: apt-get is not available; install %s by hand; Node-RED rates will be 0", " ".join(packages))
        return False
    sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else [])
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
    try:
        if subprocess.run(install, env=env, capture_output=True, timeout=900, check=False).returncode == 0:
            return True
        # Package lists are missing on a fresh image; the install fails without them.
        subprocess.run([*sudo, "apt-get", "update", "-qq"], env=env, capture_output=True, timeout=900, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error("nodered: apt-get install %s failed: %s; Node-RED rates will be 0", " ".join(packages), exc)
        return False
    if done.returncode != 0:
        log.error(
            "nodered: apt-get install %s failed: %s; Node-RED rates will be 0",
            " ".join(packages),
            (done.stderr or "").strip()[-300:],
        )
        return False
    return True


def nodered_flow(broker_port: int, influx_port: int, database: str) -> list[dict[str, Any]]:
    """The flow template (ops/nodered/flow.json) pointed at the bench's broker and database."""
    flow: list[dict[str, Any]] = json.loads((NODERED_SPEC / "flow.json").read_text())
    for node in flow:
        if node["type"] == "mqtt-broker":
            node.update(broker="127.0.0.1", port=str(broker_port))
        elif node["type"] == "influxdb":
            node.update(hostname="127.0.0.1", port=str(influx_port), database=database)
    return flow


def nodered_settings(user_dir: Path, port: int) -> str:
    """settings.js for a headless Node-RED: no editor or admin API, only 127.0.0.1."""
    return f"""// Written by birlik bench ingest: Node-RED headless for the benchmark.
module.exports = {{
    uiHost: "127.0.0.1",
    uiPort: {port},
    httpAdminRoot: false,   // no editor, no admin API
    httpNodeRoot: "/",      // the HTTP server stays up (health check), with no routes
    userDir: {json.dumps(str(user_dir))},
    flowFile: "flows.json",
    credentialSecret: false,
    logging: {{ console: {{ level: "warn", metrics: false, audit: false }} }},
    diagnostics: {{ enabled: false, ui: false }},
    telemetry: {{ enabled: false }},
    runtimeState: {{ enabled: false, ui: false }},
    externalModules: {{ autoInstall: false, palette: {{ allowInstall: false }}, modules: {{ allowInstall: false }} }},
    editorTheme: {{ projects: {{ enabled: false }} }},
    functionExternalModules: false,
    mqttReconnectTime: 1000,
}};
"""


class NodeRed:
    """Node-RED running the flow of ops/nodered/flow.json against the bench servers."""

    DATABASE = "nodered"

    def __init__(self, supervisor: Supervisor, node: str, red: Path, broker_port: int, influx_url: str) -> None:
        from ops.servers import free_port

        self.supervisor = supervisor
        user_dir = supervisor.state_dir / "nodered"
        shutil.rmtree(user_dir, ignore_errors=True)
        user_dir.mkdir(parents=True)
        port = free_port()
        influx_port = int(influx_url.rsplit(":", 1)[1])
        (user_dir / "flows.json").write_text(
            json.dumps(nodered_flow(broker_port, influx_port, self.DATABASE), indent=1)
        )
        (user_dir / "settings.js").write_text(nodered_settings(user_dir, port))
        self.child = supervisor.start(
            "nodered",
            [node, str(red), "--settings", str(user_dir / "settings.js"), "--userDir", str(user_dir)],
            ready=lambda: _tcp_open(port),
            timeout_s=90,
            env={"NODE_ENV": "production"},
            port=port,
        )

    def wait_ready(self, broker: tuple[str, int], influx: InfluxClient, timeout_s: float = 60) -> bool:
        """Publish a probe until Node-RED has written it: subscribed, parsing, writing. Then
        the database is emptied for the measurement."""
        from birlik.payload import encode_telemetry

        probe = Machine(0, "probe", "probe", "probe", "probe-1")
        deadline = time.monotonic() + timeout_s
        k = 0
        while time.monotonic() < deadline and self.child.running:
            k += 1
            payload = encode_telemetry(
                gateway="gw-probe", seq=k, samples=[(int(time.time() * 1000), sample_values(0, k, k))], kind=KIND
            )
            with contextlib.suppress(OSError, TimeoutError):
                RawPublisher(*broker, f"bench-probe-{os.getpid()}").run([encode_publish(probe.topic, payload, 1)])
            until = time.monotonic() + 3
            while time.monotonic() < until:
                time.sleep(0.2)
                with contextlib.suppress(Exception):
                    if count_points(influx, self.DATABASE) > 0:
                        time.sleep(1.5)  # the join node's time-out: nothing of the probe left behind
                        influx.drop_database(self.DATABASE)
                        influx.create_database(self.DATABASE)
                        return True
        log.error(
            "nodered: the flow did not write a probe message within %.0f s; log:\n%s", timeout_s, self.child.log_tail()
        )
        return False

    def reset(self, influx: InfluxClient) -> None:
        influx.drop_database(self.DATABASE)
        influx.create_database(self.DATABASE)

    def stop(self) -> float:
        rss = peak_rss_mb(self.child.process.pid)
        self.supervisor.stop(self.child)
        return rss


def _tcp_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


# --- the benchmark -------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, object]:
    from birlik.influx import InfluxClient, InfluxSettings
    from ops.servers import Supervisor

    if args.messages < 1 or args.processes < 1:
        raise SystemExit("bench ingest: --messages and --processes must be at least 1")
    t_start = time.monotonic()
    nodered = None if args.no_nodered else _guarded(nodered_node, args.nodered_dir)

    tg = time.monotonic()
    single, batched = make_workloads(args.messages)
    lines = line_protocol(batched)
    log.info(
        "messages: %s one-sample and %s ten-sample messages of %d machines, %s readings each way, encoded in %.1f s",
        f"{single.messages:,}",
        f"{batched.messages:,}",
        MACHINES,
        f"{single.readings:,}",
        time.monotonic() - tg,
    )

    state = Path(args.state_dir)
    for sub in ("influxdb", "mosquitto", "logs", "stats", "nodered"):  # nothing of earlier runs
        shutil.rmtree(state / sub, ignore_errors=True)
    for old in state.glob("dead-letters-*.jsonl"):
        old.unlink()
    with Supervisor(state) as supervisor:
        broker_server = supervisor.start_mosquitto()
        influx_server = supervisor.start_influxdb()
        broker = (broker_server.host, broker_server.port)
        with InfluxClient(InfluxSettings(url=influx_server.url, database="bulk", timeout_s=60)) as influx:
            # a) InfluxDB alone: the same line protocol, batches of 5000 points.
            influx.create_database("bulk")
            tb = time.monotonic()
            for k in range(0, len(lines), BULK_BATCH_POINTS):
                influx.write(lines[k : k + BULK_BATCH_POINTS], database="bulk")
            bulk_s = time.monotonic() - tb
            db_bulk_rps = single.readings / bulk_s if bulk_s else 0.0
            log.info(
                "influxdb bulk: %s readings in %.2f s: %s readings/s",
                f"{single.readings:,}",
                bulk_s,
                f"{db_bulk_rps:,.0f}",
            )
            influx.drop_database("bulk")

            # b) The broker: the publisher alone, then with a bare counting subscriber.
            alone = RawPublisher(*broker, f"bench-pub-alone-{os.getpid()}")
            alone.run(single.packets)
            log.info("publisher (no subscriber): %s msg/s acknowledged", f"{alone.rate:,.0f}")
            broker_mps = broker_rate(supervisor, broker, single)

            # d) birlik ingest, both shapes, then the paced phase for the latency.
            out_single, rss1 = run_ingest(
                supervisor, "single", single, broker, broker_server.url, influx_server.url, influx, args
            )
            out_batched, rss2 = run_ingest(
                supervisor, "batched", batched, broker, broker_server.url, influx_server.url, influx, args
            )
            p50 = p99 = 0.0
            lost, wrong, rss3 = out_single.lost + out_batched.lost, out_single.wrong + out_batched.wrong, 0.0
            if out_single.mps > 0:
                rate = out_single.mps / 2
                made: list[Workload] = []

                def make() -> Workload:
                    # Device times are encoded before the clock starts: leave time for the encoding
                    # (about 30 us a message) so that the first message is not already late.
                    lead_s = 2.0 + rate * args.paced_seconds / 20_000
                    made.append(make_paced(rate, args.paced_seconds, start=time.time() + lead_s))
                    log.info(
                        "birlik paced: %s messages at %s msg/s (half the maximum), for the latency",
                        f"{made[0].messages:,}",
                        f"{rate:,.0f}",
                    )
                    return made[0]

                out_paced, rss3 = run_ingest(
                    supervisor, "paced", make, broker, broker_server.url, influx_server.url, influx, args, poll_s=0.1
                )
                paced = made[0]
                lat = latencies_ms(paced, out_paced.started_at, out_paced.polls)
                p50, p99 = percentile(lat, 50), percentile(lat, 99)
                lost += out_paced.lost
                wrong += out_paced.wrong
                log.info(
                    "birlik paced: latency device time -> visible p50 %.0f ms, p99 %.0f ms, max %.0f ms "
                    "(%d points; polled every 100 ms; publisher at most %.0f ms late)",
                    p50,
                    p99,
                    max(lat, default=0),
                    len(lat),
                    out_paced.publisher_late_s * 1000,
                )
            else:
                log.error("birlik single did not complete: no paced latency phase")

            # c) Node-RED on the same messages.
            nr_single = nr_batched = None
            if nodered is not None:
                nr_single, nr_batched = run_nodered(
                    supervisor, nodered, single, batched, broker, influx_server.url, influx, args
                )
            elif not args.no_nodered:
                log.error("nodered: not installed; its rates are reported as 0")

    single_mps = out_single.mps
    batched_rps = out_batched.rps if out_batched.complete else 0.0
    nr_single_mps = nr_single.mps if nr_single else 0.0
    nr_batched_rps = nr_batched.rps if nr_batched and nr_batched.complete else 0.0
    log.info("whole run: %.0f s", time.monotonic() - t_start)
    return {
        "single_mps": round(single_mps),
        "nodered_single_mps": round(nr_single_mps),
        "ratio_nodered_single": _ratio(single_mps, nr_single_mps),
        "batched_rps": round(batched_rps),
        "nodered_batched_rps": round(nr_batched_rps),
        "ratio_nodered_batched": _ratio(batched_rps, nr_batched_rps),
        "db_bulk_rps": round(db_bulk_rps),
        "ratio_db": _ratio(single_mps * len(SIGNALS), db_bulk_rps),
        "broker_qos1_mps": round(broker_mps),
        "lost": lost,
        "duplicated": wrong,
        "peak_rss_mb": round(max(rss1, rss2, rss3)),
        "p50_ms": round(p50),
        "p99_ms": round(p99),
    }


def _guarded(install: Callable[[Path], tuple[str, Path] | None], where: Path) -> tuple[str, Path] | None:
    try:
        return install(where)
    except Exception as exc:  # whatever goes wrong with Node-RED, the birlik figures still count
        log.error("nodered: installation failed (%r); its rates are reported as 0", exc)
        return None


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "0.00"


def broker_rate(supervisor: Supervisor, broker: tuple[str, int], workload: Workload) -> float:
    """QoS 1 messages a second from the first publish to the last delivered to a counting
    subscriber (a process of its own, so it does not share the publisher's interpreter)."""
    from birlik.stats import read_stats

    status = supervisor.state_dir / "stats" / "counter.json"
    status.parent.mkdir(parents=True, exist_ok=True)
    status.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-m",
        "ops.bench_ingest",
        "count-subscriber",
        broker[0],
        str(broker[1]),
        str(workload.messages),
        str(status),
    ]
    child = supervisor.start("counter", argv, ready=lambda: bool(read_stats(status).get("ready")), timeout_s=30)
    publisher = RawPublisher(*broker, f"bench-pub-broker-{os.getpid()}")
    publisher.run(workload.packets)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.process.wait(60)
    supervisor.stop(child)
    result = read_stats(status)
    received, last = int(result.get("received", 0)), float(result.get("last", 0.0))
    elapsed = last - publisher.first_send
    rate = received / elapsed if received and elapsed > 0 else 0.0
    log.info(
        "broker: %s/%s messages delivered (QoS 1) to a counting subscriber: %s msg/s (the subscriber busy %.0f%% "
        "of that time); publisher %s msg/s",
        f"{received:,}",
        f"{workload.messages:,}",
        f"{rate:,.0f}",
        100 * float(result.get("cpu_s", 0.0)) / elapsed if elapsed > 0 else 0,
        f"{publisher.rate:,.0f}",
    )
    return rate if received == workload.messages else 0.0


def run_nodered(
    supervisor: Supervisor,
    nodered: tuple[str, Path],
    single: Workload,
    batched: Workload,
    broker: tuple[str, int],
    influx_url: str,
    influx: InfluxClient,
    args: argparse.Namespace,
) -> tuple[Outcome | None, Outcome | None]:
    from ops.servers import ServerError

    influx.create_database(NodeRed.DATABASE)
    try:
        nr = NodeRed(supervisor, nodered[0], nodered[1], broker[1], influx_url)
    except ServerError as exc:
        log.error("nodered: did not start (%s); its rates are reported as 0", exc)
        return None, None
    outcomes: list[Outcome | None] = []
    try:
        if not nr.wait_ready(broker, influx):
            return None, None
        for workload in (single, batched):
            if not nr.child.running:
                log.error("nodered: exited (code %s); log:\n%s", nr.child.process.returncode, nr.child.log_tail())
                break
            nr.reset(influx)
            out = publish_and_watch(
                f"nodered {workload.name}",
                workload,
                broker,
                influx,
                NodeRed.DATABASE,
                timeout_s=args.timeout,
                alive=lambda: nr.child.running,
            )
            outcomes.append(out)
    except Exception as exc:  # the birlik figures are kept; Node-RED's count as 0
        log.error("nodered: the run failed (%r); its rates are reported as 0", exc)
    finally:
        rss = nr.stop()
        log.info("nodered: peak RSS %.0f MB", rss)
    while len(outcomes) < 2:
        outcomes.append(None)
    return outcomes[0], outcomes[1]


def _main(argv: list[str]) -> int:
    if argv[:1] == ["count-subscriber"] and len(argv) == 5:
        host, port, expect, status = argv[1:]
        return count_subscriber(host, int(port), int(expect), Path(status))
    print("usage: python -m ops.bench_ingest count-subscriber HOST PORT EXPECT STATUS_FILE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
