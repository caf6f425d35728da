"""The MQTT payloads, schema version 1: telemetry from gateways, alerts from analytics.

A telemetry message carries the readings of one machine (the machine is named by the topic)::

    {
      "v": 1,                        # schema version
      "gateway": "gw-turkestan-1",   # the gateway that published it
      "seq": 1042,                   # per-gateway sequence number, +1 per message
      "kind": "centrifugal_pump",    # optional: the machine kind
      "units": {"vibration_rms": "mm/s", "bearing_temp": "degC"},
      "samples": [                   # one or more samples, oldest first
        {"ts": 1763800000000,        # device time, ms since 1970-01-01 UTC
         "values": {"vibration_rms": 2.31, "bearing_temp": 61.2, "state": "running"}}
      ]
    }

Every numeric value needs its unit in ``units`` (states have none). Validation has two
levels. A message that cannot be trusted as a whole (not JSON, a missing or mistyped
header field, an unsupported version, a bad topic, an unknown machine, too large) raises
:class:`PayloadError`. A single bad reading (unknown signal, wrong unit, wrong type, out of
range, bad timestamp) becomes a :class:`Rejection` and the rest of the message is kept.
Every rejection carries a stable reason code and a sentence for a person.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from birlik.signals import SIGNALS, canonical_unit
from birlik.topics import Channel, MachinePath, TopicError, check_name, parse_topic

SCHEMA_VERSION = 1
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_SAMPLES = 10_000
# Device clocks drift and get set wrong; a reading far in the future would sit in the
# database as if it were real. Earliest accepted: 2000-01-01.
MAX_FUTURE_MS = 24 * 3600 * 1000
MIN_TS_MS = 946_684_800_000

Value = float | int | str


class Reason(StrEnum):
    """Why a message or a reading was rejected. The values are stable: logs and tools read them."""

    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    OVERSIZED = "oversized"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    UNSUPPORTED_VERSION = "unsupported_version"
    BAD_TOPIC = "bad_topic"
    UNKNOWN_MACHINE = "unknown_machine"
    KIND_MISMATCH = "kind_mismatch"
    BAD_TIMESTAMP = "bad_timestamp"
    UNKNOWN_SIGNAL = "unknown_signal"
    MISSING_UNIT = "missing_unit"
    WRONG_UNIT = "wrong_unit"
    OUT_OF_RANGE = "out_of_range"
    DB_REJECTED = "db_rejected"


class PayloadError(ValueError):
    """The whole message is rejected."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Rejection:
    """One reading that was not accepted, with the reason."""

    reason: Reason
    detail: str
    signal: str | None = None
    value: Any = None
    ts_ms: int | None = None


@dataclass(slots=True)
class Sample:
    ts_ms: int
    values: dict[str, Value]


@dataclass(slots=True)
class Telemetry:
    """A validated telemetry message: only accepted readings are in ``samples``."""

    path: MachinePath
    gateway: str
    seq: int
    kind: str | None
    samples: list[Sample]
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def reading_count(self) -> int:
        return sum(len(s.values) for s in self.samples)


def encode_telemetry(
    *,
    gateway: str,
    seq: int,
    samples: Sequence[tuple[int, Mapping[str, Value]]],
    kind: str | None = None,
) -> bytes:
    """Build a schema-1 telemetry payload; units come from the signal catalogue."""
    units: dict[str, str] = {}
    for _, values in samples:
        for name in values:
            if name not in units and name in SIGNALS and SIGNALS[name].is_numeric:
                units[name] = SIGNALS[name].unit
    message: dict[str, Any] = {"v": SCHEMA_VERSION, "gateway": gateway, "seq": seq}
    if kind is not None:
        message["kind"] = kind
    message["units"] = units
    message["samples"] = [{"ts": ts, "values": dict(values)} for ts, values in samples]
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()


def _require(message: Mapping[str, Any], key: str, types: type | tuple[type, ...], what: str) -> Any:
    if key not in message:
        raise PayloadError(Reason.MISSING_FIELD, f"missing field {key!r} ({what})")
    value = message[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        raise PayloadError(Reason.WRONG_TYPE, f"field {key!r} must be {what}, got {type(value).__name__} {value!r:.60}")
    return value


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _parse(topic: str, payload: bytes, expected: Channel) -> tuple[MachinePath, Any]:
    """The machine a topic names, and the payload's JSON; or PayloadError."""
    try:
        path, channel = parse_topic(topic)
    except TopicError as exc:
        raise PayloadError(Reason.BAD_TOPIC, str(exc)) from None
    if channel != expected:
        raise PayloadError(Reason.BAD_TOPIC, f"topic {topic!r} is not a {expected} topic")
    try:
        return path, json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(Reason.NOT_JSON, f"payload is not JSON: {exc}") from None


def decode_telemetry(
    topic: str,
    payload: bytes,
    *,
    machines: Mapping[MachinePath, str] | None = None,
    now_ms: int | None = None,
    max_bytes: int = MAX_PAYLOAD_BYTES,
) -> Telemetry:
    """Validate one telemetry message.

    ``machines`` maps every known machine to its kind; when given, messages for other
    machines are rejected. Raises :class:`PayloadError` when the whole message is rejected;
    otherwise bad readings are listed in ``Telemetry.rejections``.
    """
    if len(payload) > max_bytes:
        raise PayloadError(Reason.OVERSIZED, f"payload is {len(payload)} bytes, the limit is {max_bytes}")
    path, message = _parse(topic, payload, "telemetry")
    if not isinstance(message, dict):
        raise PayloadError(Reason.NOT_OBJECT, f"payload must be a JSON object, got {type(message).__name__}")

    version = _require(message, "v", int, "the schema version, an integer")
    if version != SCHEMA_VERSION:
        raise PayloadError(
            Reason.UNSUPPORTED_VERSION,
            f"schema version {version} is not supported (this ingest reads {SCHEMA_VERSION})",
        )
    gateway = _require(message, "gateway", str, "the gateway id, a string")
    try:
        check_name("gateway", gateway)
    except TopicError as exc:
        raise PayloadError(Reason.WRONG_TYPE, str(exc)) from None
    seq = _require(message, "seq", int, "the sequence number, an integer")
    if seq < 0:
        raise PayloadError(Reason.WRONG_TYPE, f"field 'seq' must be >= 0, got {seq}")
    units = _require(message, "units", dict, "an object of signal -> unit")
    samples = _require(message, "samples", list, "a list of samples")
    if not samples:
        raise PayloadError(Reason.MISSING_FIELD, "field 'samples' is empty")
    if len(samples) > MAX_SAMPLES:
        raise PayloadError(Reason.OVERSIZED, f"{len(samples)} samples in one message, the limit is {MAX_SAMPLES}")
    kind = message.get("kind")
    if kind is not None:
        if not isinstance(kind, str):
            raise PayloadError(Reason.WRONG_TYPE, f"field 'kind' must be a string, got {type(kind).__name__}")
        try:
            check_name("kind", kind)
        except TopicError as exc:
            raise PayloadError(Reason.WRONG_TYPE, str(exc)) from None
    if machines is not None:
        known_kind = machines.get(path)
        if known_kind is None:
            raise PayloadError(Reason.UNKNOWN_MACHINE, f"machine {path} is not in the plant registry")
        if kind is not None and kind != known_kind:
            raise PayloadError(Reason.KIND_MISMATCH, f"machine {path} is a {known_kind}, the message says {kind}")
        kind = known_kind

    now = int(time.time() * 1000) if now_ms is None else now_ms
    telemetry = Telemetry(path, gateway, seq, kind, [])
    reject = telemetry.rejections.append
    for index, raw in enumerate(samples):
        if not isinstance(raw, dict):
            reject(Rejection(Reason.WRONG_TYPE, f"samples[{index}] must be an object"))
            continue
        ts = raw.get("ts")
        values = raw.get("values")
        if not isinstance(values, dict):
            reject(Rejection(Reason.MISSING_FIELD, f"samples[{index}] has no 'values' object"))
            continue
        if not isinstance(ts, int) or isinstance(ts, bool):
            for name, value in values.items():
                reject(
                    Rejection(
                        Reason.BAD_TIMESTAMP, f"samples[{index}].ts must be integer ms, got {ts!r:.40}", name, value
                    )
                )
            continue
        if not MIN_TS_MS <= ts <= now + MAX_FUTURE_MS:
            for name, value in values.items():
                reject(
                    Rejection(
                        Reason.BAD_TIMESTAMP,
                        f"timestamp {ts} ms is before 2000 or more than 24 h ahead of the ingest clock",
                        name,
                        value,
                        ts,
                    )
                )
            continue
        accepted: dict[str, Value] = {}
        for name, value in values.items():
            checked = _check_reading(name, value, units)
            if isinstance(checked, Rejection):
                checked.ts_ms = ts
                reject(checked)
            else:
                accepted[name] = checked
        if accepted:
            telemetry.samples.append(Sample(ts, accepted))
    return telemetry


def _check_reading(name: str, value: Any, units: Mapping[str, Any]) -> Value | Rejection:
    signal = SIGNALS.get(name)
    if signal is None:
        return Rejection(Reason.UNKNOWN_SIGNAL, f"signal {name!r} is not in the signal catalogue", name, value)
    if signal.kind == "state":
        if not isinstance(value, str) or not value or len(value) > 64:
            return Rejection(Reason.WRONG_TYPE, f"{name} must be a short string, got {value!r:.40}", name, value)
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Rejection(
            Reason.WRONG_TYPE, f"{name} must be a number, got {type(value).__name__} {value!r:.40}", name, value
        )
    unit = units.get(name)
    if unit is None:
        return Rejection(Reason.MISSING_UNIT, f"{name} has no unit in 'units' (expected {signal.unit!r})", name, value)
    if not isinstance(unit, str) or canonical_unit(unit) != signal.unit:
        return Rejection(Reason.WRONG_UNIT, f"{name} must be in {signal.unit}, got {unit!r:.20}", name, value)
    if not math.isfinite(value) or not signal.low <= value <= signal.high:
        return Rejection(
            Reason.OUT_OF_RANGE,
            f"{name} = {value} {signal.unit} is outside [{signal.low:g}, {signal.high:g}]",
            name,
            value,
        )
    if signal.kind == "counter":
        if value != int(value):
            return Rejection(
                Reason.WRONG_TYPE, f"{name} is a counter and must be a whole number, got {value}", name, value
            )
        return int(value)
    return float(value)


# --- alerts ---------------------------------------------------------------------------

AlertState = Literal["raised", "cleared"]
Severity = Literal["warning", "critical"]


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert about one machine, raised or cleared by analytics."""

    path: MachinePath
    alert_id: str
    state: AlertState
    severity: Severity
    detector: str
    signal: str
    score: float
    threshold: float
    ts_ms: int
    message: str

    def encode(self) -> bytes:
        return json.dumps(
            {
                "v": SCHEMA_VERSION,
                "id": self.alert_id,
                "state": self.state,
                "severity": self.severity,
                "detector": self.detector,
                "signal": self.signal,
                "score": round(self.score, 4),
                "threshold": self.threshold,
                "ts": self.ts_ms,
                "message": self.message,
            },
            separators=(",", ":"),
        ).encode()


def decode_alert(topic: str, payload: bytes) -> Alert:
    path, m = _parse(topic, payload, "alert")
    if not isinstance(m, dict):
        raise PayloadError(Reason.NOT_OBJECT, "alert must be a JSON object")
    missing = [
        k
        for k in ("id", "state", "severity", "detector", "signal", "score", "threshold", "ts", "message")
        if k not in m
    ]
    if missing:
        raise PayloadError(Reason.MISSING_FIELD, f"alert is missing {', '.join(missing)}")
    if m.get("state") not in ("raised", "cleared") or m.get("severity") not in ("warning", "critical"):
        raise PayloadError(
            Reason.WRONG_TYPE, f"alert state/severity {m.get('state')!r}/{m.get('severity')!r} is not known"
        )
    try:
        return Alert(
            path,
            str(m["id"]),
            m["state"],
            m["severity"],
            str(m["detector"]),
            str(m["signal"]),
            float(m["score"]),
            float(m["threshold"]),
            int(m["ts"]),
            str(m["message"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PayloadError(Reason.MISSING_FIELD, f"alert is missing or mistypes {exc}") from None
