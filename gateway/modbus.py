"""Modbus TCP driver: holding and input registers of a PLC polled as machine readings.

A driver file (``birlik gateway --driver FILE``, see ``gateway/examples/modbus.yaml`` and
``docs/driver-modbus.md``) names the device (host, port, unit id), the poll interval and, per
machine, each catalogue signal's register::

    driver: modbus
    host: 10.0.4.21
    port: 502
    unit_id: 1
    interval: 1s
    machines:
      - path: acme/kz-turkestan/compressors/comp-101
        kind: air_compressor
        signals:
          discharge_pressure: {address: 0, table: holding, type: uint16, scale: 0.01}
          oil_temp: {address: 10, table: input, type: float32, word_order: little}

The registers are read in blocks (neighbouring registers of one table in one request, at most
125 registers) by a pymodbus client in a thread of its own, once per interval; every value of
one machine read in one poll carries the local time of that poll. A lost connection is logged
once, retried with back-off forever, and counted; a request the device refuses (an exception
response) and a value that is not a finite number or lies outside the catalogue's range are
counted, logged rejections.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from birlik.payload import Value
from birlik.plant import Machine
from gateway.drivers import Reading
from gateway.southbound import (
    Backoff,
    DriverConfigError,
    Link,
    Rejections,
    SampleBuffer,
    SignalConversion,
    backoff,
    check_keys,
    conversion,
    duration,
    integer,
    machines,
    read_yaml,
)

log = logging.getLogger("gateway.modbus")

Table = Literal["holding", "input"]
RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32"]
WordOrder = Literal["big", "little"]
TABLES: tuple[Table, ...] = ("holding", "input")
TYPES: dict[str, tuple[int, str]] = {  # registers, struct format of the big-endian bytes
    "int16": (1, ">h"),
    "uint16": (1, ">H"),
    "int32": (2, ">i"),
    "uint32": (2, ">I"),
    "float32": (2, ">f"),
}
WORD_ORDERS: tuple[WordOrder, ...] = ("big", "little")
#: Largest read of one request (the Modbus limit for registers).
MAX_BLOCK = 125
#: Registers not asked for that one block may span to join two neighbouring ones.
MAX_GAP = 16

_KEYS = {"driver", "gateway", "host", "port", "unit_id", "interval", "timeout", "reconnect", "word_order", "machines"}


@dataclass(frozen=True)
class RegisterSignal:
    """One register (or two) of one unit as one catalogue signal of one machine."""

    machine: Machine
    unit_id: int
    table: Table
    address: int
    type: RegisterType
    word_order: WordOrder
    conversion: SignalConversion

    @property
    def count(self) -> int:
        return TYPES[self.type][0]

    def decode(self, registers: list[int]) -> float:
        """The raw number in ``registers`` (``count`` of them, as read)."""
        words = registers if self.word_order == "big" or self.count == 1 else registers[::-1]
        value: float = struct.unpack(TYPES[self.type][1], struct.pack(f">{self.count}H", *words))[0]
        return value


@dataclass(frozen=True)
class Block:
    """One read request: ``count`` registers of ``table`` from ``address``."""

    unit_id: int
    table: Table
    address: int
    count: int
    signals: tuple[RegisterSignal, ...]


@dataclass(frozen=True)
class ModbusConfig:
    host: str
    signals: tuple[RegisterSignal, ...]
    port: int = 502
    interval_s: float = 1.0
    timeout_s: float = 2.0
    reconnect: Backoff = field(default_factory=lambda: Backoff(1.0, 60.0))
    gateway: str | None = None
    source: str = ""

    def machines(self) -> list[Machine]:
        out: list[Machine] = []
        for s in self.signals:
            if s.machine not in out:
                out.append(s.machine)
        return out

    def blocks(self) -> list[Block]:
        """The signals' registers as few read requests as the limits allow."""
        out: list[Block] = []
        keyed = sorted(self.signals, key=lambda s: (s.unit_id, s.table, s.address))
        current: list[RegisterSignal] = []
        for s in keyed:
            if current:
                first, last_end = current[0], max(c.address + c.count for c in current)
                if (
                    (s.unit_id, s.table) != (first.unit_id, first.table)
                    or s.address - last_end > MAX_GAP
                    or s.address + s.count - first.address > MAX_BLOCK
                ):
                    out.append(_block(current))
                    current = []
            current.append(s)
        if current:
            out.append(_block(current))
        return out


def _block(signals: list[RegisterSignal]) -> Block:
    start = signals[0].address
    end = max(s.address + s.count for s in signals)
    return Block(signals[0].unit_id, signals[0].table, start, end - start, tuple(signals))


def load_modbus(path: str) -> ModbusConfig:
    return modbus_config(read_yaml(path), path)


def modbus_config(doc: Mapping[str, Any], where: str) -> ModbusConfig:
    check_keys(doc, where, _KEYS, {"driver", "host", "machines"})
    host = doc["host"]
    if not isinstance(host, str) or not host:
        raise DriverConfigError(f"{where}: host must be a host name or address")
    default_unit = integer(doc.get("unit_id"), f"{where}: unit_id", 0, 255, 1)
    default_order = _choice(doc.get("word_order", "big"), f"{where}: word_order", WORD_ORDERS)

    def parse_signal(signal: str, spec: Mapping[str, Any], sw: str) -> dict[str, Any]:
        if "address" not in spec:
            raise DriverConfigError(f"{sw}: missing 'address'")
        typ = _choice(spec.get("type", "uint16"), f"{sw}: type", tuple(TYPES))
        address = integer(spec["address"], f"{sw}: address", 0, 65536 - TYPES[typ][0])
        return {
            "table": _choice(spec.get("table", "holding"), f"{sw}: table", TABLES),
            "address": address,
            "type": typ,
            "word_order": _choice(spec.get("word_order", default_order), f"{sw}: word_order", WORD_ORDERS),
            "conversion": conversion(spec, sw, signal),
        }

    signals: list[RegisterSignal] = []
    for machine, parsed, entry in machines(
        doc, where, {"address", "table", "type", "word_order"}, parse_signal, {"unit_id"}
    ):
        unit_id = integer(entry.get("unit_id"), f"{where}: machine {machine.path}: unit_id", 0, 255, default_unit)
        for p in parsed.values():
            signals.append(RegisterSignal(machine=machine, unit_id=unit_id, **p))
    port = integer(doc.get("port"), f"{where}: port", 1, 65535, 502)
    gateway = doc.get("gateway")
    return ModbusConfig(
        host=host,
        signals=tuple(signals),
        port=port,
        interval_s=duration(doc.get("interval"), f"{where}: interval", 1.0),
        timeout_s=duration(doc.get("timeout"), f"{where}: timeout", 2.0),
        reconnect=backoff(doc, where),
        gateway=None if gateway is None else str(gateway),
        source=where,
    )


def modbus_from_dict(doc: Mapping[str, Any], where: str) -> ModbusDriver:
    return ModbusDriver(modbus_config(doc, where))


def _choice(value: Any, where: str, choices: tuple[str, ...]) -> Any:
    if value not in choices:
        raise DriverConfigError(f"{where}: must be one of {', '.join(choices)}, got {value!r}")
    return value


class _Lost(Exception):
    """The connection failed during a poll."""


class ModbusDriver:
    """Readings from polled Modbus TCP registers (see the module's description)."""

    name = "modbus"

    def __init__(self, config: ModbusConfig) -> None:
        self.config = config
        self.blocks = config.blocks()
        self.buffer = SampleBuffer(settle_s=0.0)
        self.rejections = Rejections("modbus")
        target = f"modbus://{config.host}:{config.port}"
        self.link = Link("modbus", target, config.reconnect.min_s, config.reconnect.max_s)
        self.polls = 0
        self.requests = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # --- the Driver protocol -----------------------------------------------------------

    def machines(self) -> list[Machine]:
        return self.config.machines()

    def poll(self, until_ms: int) -> list[Reading]:
        """The samples read since the last poll (live data: ``until_ms`` is not used; each
        sample carries the local time of its poll)."""
        if self._thread is None:
            self.start()
        return self.buffer.take()

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="modbus-driver", daemon=True)
        self._thread.start()
        log.info(
            "modbus: %d machines, %d signals in %d read requests from %s every %g s",
            len(self.machines()),
            len(self.config.signals),
            len(self.blocks),
            self.link.target,
            self.config.interval_s,
        )

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is None:
            return
        self._thread.join(timeout_s)
        self._thread = None
        log.info("modbus: stopped; %s", ", ".join(f"{k} {v}" for k, v in self.stats().items()))

    def stats(self) -> dict[str, int]:
        return {
            "polls": self.polls,
            "requests": self.requests,
            "readings": self.buffer.readings,
            "rejected": self.rejections.total,
            "connects": self.link.connects,
            "connection_losses": self.link.losses,
            "failed_connects": self.link.failed_attempts,
        }

    def _run(self) -> None:
        from pymodbus.client import ModbusTcpClient

        while not self._stop.is_set():
            client: Any = None
            try:
                client = ModbusTcpClient(
                    self.config.host,
                    port=self.config.port,
                    timeout=self.config.timeout_s,
                    retries=0,
                    reconnect_delay=0,
                )
                if not client.connect():
                    raise _Lost("connection refused or timed out")
                self.link.up(f"unit {', '.join(sorted({str(b.unit_id) for b in self.blocks}))}")
                next_at = time.monotonic()
                while not self._stop.is_set():
                    self._poll_once(client)
                    next_at += self.config.interval_s
                    now = time.monotonic()
                    if next_at < now:  # too slow for the interval: skip the missed polls
                        next_at = now + self.config.interval_s
                    self._stop.wait(next_at - now)
            except Exception as exc:  # the driver never dies of a device problem
                self.link.down(exc)
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
            if not self._stop.is_set():
                self._stop.wait(self.link.next_delay())

    def _poll_once(self, client: Any) -> None:
        from pymodbus.exceptions import ConnectionException, ModbusIOException

        ts = int(time.time() * 1000)
        samples: dict[Machine, dict[str, Value]] = {}
        for block in self.blocks:
            read = client.read_holding_registers if block.table == "holding" else client.read_input_registers
            self.requests += 1
            try:
                response = read(block.address, count=block.count, device_id=block.unit_id)
            except (ConnectionException, ModbusIOException, OSError) as exc:
                raise _Lost(str(exc) or type(exc).__name__) from exc
            if isinstance(response, ModbusIOException):
                raise _Lost(str(response))
            registers = getattr(response, "registers", None)
            if response.isError() or registers is None or len(registers) < block.count:
                names = ", ".join(f"{s.machine.path} {s.conversion.signal}" for s in block.signals)
                self.rejections.reject(
                    "read_refused",
                    f"unit {block.unit_id} {block.table} registers {block.address}..{block.address + block.count - 1} "
                    f"({names}): {response}",
                )
                continue
            for s in block.signals:
                offset = s.address - block.address
                raw = s.decode(registers[offset : offset + s.count])
                value, reason = s.conversion.check(raw)
                if value is None:
                    self.rejections.reject(
                        reason,
                        f"{s.machine.path} {s.conversion.signal} ({s.table} {s.address} {s.type}): {raw!r}",
                    )
                    continue
                samples.setdefault(s.machine, {})[s.conversion.signal] = value
        for machine, values in samples.items():
            self.buffer.add_sample(machine, ts, values)
        self.polls += 1
