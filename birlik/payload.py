"""The MQTT payloads, schema version 1: telemetry from gateways, alerts from analytics.

A telemetry message carries the readings of one machine (the machine is named by the topic)::

    {
      "v": 1,                        # schema version
      "gateway": "gw-turkestan-1",   # the gateway that published it
      "boot": "b-1763799000",        # optional: the gateway's boot identity
      "seq": 1042,                   # per-gateway sequence number, +1 per message
      "replay": true,                # optional: sent again from the gateway's log, not live
      "kind": "centrifugal_pump",    # optional: the machine kind
      "units": {"vibration_rms": "mm/s", "bearing_temp": "degC"},
      "samples": [                   # one or more samples, oldest first
        {"ts": 1763800000000,        # device time, ms since 1970-01-01 UTC
         "values": {"vibration_rms": 2.31, "bearing_temp": 61.2, "state": "running"}}
      ]
    }

``gateway``, ``boot`` and ``kind`` are names (1-64 lowercase letters, digits, ``-``, ``_``,
``.``, as topic levels); ``boot`` names one run of the gateway, so a sequence number that
starts again after a restart can be told from a repeat. An optional field that is ``null``
counts as absent. Every numeric value needs its unit in ``units`` (states have none); a state
is one of :data:`birlik.signals.MACHINE_STATES`.

Decoding is total: for any bytes and any topic, :func:`decode_telemetry` returns a
:class:`Telemetry` or raises :class:`PayloadError`, nothing else. Validation has two levels.
A message that cannot be trusted as a whole (not JSON, a missing or mistyped header field, an
unsupported version, a bad topic, an unknown machine, too large) raises :class:`PayloadError`.
A single bad reading (unknown signal, wrong unit, wrong type, out of range, unknown state, bad
or repeated timestamp) becomes a :class:`Rejection` and the rest of the message is kept.
Every rejection carries a stable reason code and a sentence for a person. What is accepted
can always be written as line protocol: finite floats, integers that fit InfluxDB's 64 bits,
catalogue signal names, catalogue states, and names for tags.

The payload must be strict JSON (RFC 8259) in UTF-8 (``not_json`` otherwise):

* no byte-order mark, no UTF-16 or UTF-32, no invalid UTF-8 (Python's ``json`` would guess
  the encoding of bytes; this decoder does not);
* no ``NaN``, ``Infinity`` or ``-Infinity`` (Python writes them, JSON has no such tokens);
* arrays and objects nested at most :data:`MAX_DEPTH` levels (a message needs 4);
* integers of at most ``sys.get_int_max_str_digits()`` digits (4300 by default);
* no key twice in one object (``duplicate_key``): which one counts depends on the reader.

A number too large for a float (``1e400``) reads as infinity and, like a huge integer, is
rejected as ``out_of_range`` where it is a reading.
"""

from __future__ import annotations

import codecs
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, NoReturn

import orjson

from birlik.signals import MACHINE_STATES, SIGNALS, canonical_unit
from birlik.topics import CHANNELS, ROOT, Channel, MachinePath, TopicError, check_name, parse_topic

SCHEMA_VERSION = 1
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_SAMPLES = 10_000
#: How deep arrays and objects may nest in a payload; a telemetry message needs 4.
MAX_DEPTH = 64
# Device clocks drift and get set wrong; a reading far in the future would sit in the
# database as if it were real. Earliest accepted: 2000-01-01.
MAX_FUTURE_MS = 24 * 3600 * 1000
MIN_TS_MS = 946_684_800_000
#: The largest integer InfluxDB (and most devices) can store: a signed 64-bit integer.
INT64_MAX = 2**63 - 1
#: The longest valid topic: the root, four names of 64 characters and the longest channel.
MAX_TOPIC_CHARS = len(ROOT) + 4 * 65 + 1 + max(len(c) for c in CHANNELS)
_MAX_NAME = 64

Value = float | int | str

_STATES = frozenset(MACHINE_STATES)
#: Gauges and totals (floats in the database): name -> (low, high, unit), for the fast path.
_GAUGES = {s.name: (s.low, s.high, s.unit) for s in SIGNALS.values() if s.kind in ("gauge", "total")}
_STATE_SIGNALS = frozenset(s.name for s in SIGNALS.values() if s.kind == "state")
_COUNTERS = {s.name: (s.low, s.high, s.unit) for s in SIGNALS.values() if s.kind == "counter"}


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
    DUPLICATE_KEY = "duplicate_key"
    UNKNOWN_STATE = "unknown_state"
    DUPLICATE_TIMESTAMP = "duplicate_timestamp"


class PayloadError(ValueError):
    """The whole message is rejected."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Rejection:
    """One reading that was not accepted, with the reason.

    ``signal`` and ``value`` are what the device sent, unchecked (any JSON value, at most
    :data:`MAX_DEPTH` deep); ``detail`` is safe to print.
    """

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
    """A validated telemetry message: only accepted readings are in ``samples``.

    Timestamps of ``samples`` are distinct; ``boot`` is the gateway's boot identity, if it sent one.
    """

    path: MachinePath
    gateway: str
    seq: int
    kind: str | None
    samples: list[Sample]
    rejections: list[Rejection] = field(default_factory=list)
    boot: str | None = field(default=None, kw_only=True)
    #: Sent again from the gateway's log (after an outage, or on a repair request), not live.
    replay: bool = field(default=False, kw_only=True)

    @property
    def reading_count(self) -> int:
        return sum(len(s.values) for s in self.samples)


def encode_telemetry(
    *,
    gateway: str,
    seq: int,
    samples: Sequence[tuple[int, Mapping[str, Value]]],
    kind: str | None = None,
    boot: str | None = None,
    replay: bool = False,
) -> bytes:
    """Build a schema-1 telemetry payload; units come from the signal catalogue."""
    units: dict[str, str] = {}
    for _, values in samples:
        for name in values:
            if name not in units and name in SIGNALS and SIGNALS[name].is_numeric:
                units[name] = SIGNALS[name].unit
    message: dict[str, Any] = {"v": SCHEMA_VERSION, "gateway": gateway}
    if boot is not None:
        message["boot"] = boot
    message["seq"] = seq
    if replay:
        message["replay"] = True
    if kind is not None:
        message["kind"] = kind
    message["units"] = units
    message["samples"] = [{"ts": ts, "values": dict(values)} for ts, values in samples]
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()


# --- describing what a device sent, safely ----------------------------------------------

_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "a boolean"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _brief(value: Any, limit: int = 40) -> str:
    """A short, printable description of any JSON value: never deep, never long."""
    if isinstance(value, dict):
        return f"an object of {len(value)} keys"
    if isinstance(value, list):
        return f"an array of {len(value)} items"
    # repr escapes control characters and lone surrogates; an int has at most the parser's digits.
    text = repr(value[:limit]) if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- parsing ----------------------------------------------------------------------------


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                break
            seen.add(key)
        raise PayloadError(Reason.DUPLICATE_KEY, f"key {_brief(key)} appears more than once in one object")
    return obj


def _constant(name: str) -> NoReturn:
    raise PayloadError(Reason.NOT_JSON, f"payload is not JSON: {name} is not a JSON number")


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant)
# For the nesting check: keep only quotes and brackets, and make every bracket square.
_STRUCTURE = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')


def _nested_deeper_than(payload: bytes, limit: int) -> bool:
    """Whether the arrays and objects of JSON ``payload`` nest more than ``limit`` levels.

    Exact for valid JSON (for other text it may say yes), linear and in C. Escaped backslashes
    and quotes go first, so every quote left delimits a string; then everything but quotes and
    brackets, then the text of strings; then each pass removes the innermost level (every ``[]``).
    """
    if b"\\" in payload:
        payload = payload.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Removing two adjacent quotes (an empty string, or one string's end and the next one's
    # start) leaves every other character inside or outside a string as it was.
    s = payload.translate(_STRUCTURE, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in s:  # strings with brackets in them
        s = b"".join(s.split(b'"')[::2])
    for _ in range(limit):
        if not s:
            return False
        inner = s.replace(b"[]", b"")
        if len(inner) == len(s):
            return True  # brackets that do not match: not JSON
        s = inner
    return bool(s)


def _encoding_hint(payload: bytes) -> str:
    if payload[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in payload[:4]:
        return " (it looks like UTF-16 or UTF-32; send UTF-8)"
    return ""


def _json(payload: bytes) -> Any:
    """The JSON document in ``payload``; or PayloadError (``not_json``, ``duplicate_key``).

    orjson parses first (about 7 times faster than the standard library here). Its answer is
    taken only when it is certainly the strict parser's too: orjson accepted the text, and the
    document provably has no duplicate key and nests at most ``MAX_DEPTH`` levels (see
    :func:`_certain`). Anything else (orjson refused it, or the proof does not go through)
    goes to :func:`_json_strict`, which gives the verdict and the reason. So the result is
    always exactly the strict parser's; ``tests/test_payload_fuzz.py`` checks that.
    """
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return _json_strict(payload)
    if (type(document) is dict or type(document) is list) and _certain(payload, document):
        return document
    if type(document) is not dict and type(document) is not list:
        return document
    return _json_strict(payload)


def _certain(payload: bytes, document: Any) -> bool:
    """Whether orjson's ``document`` (parsed from ``payload``) has no duplicate key and no
    nesting deeper than ``MAX_DEPTH``.

    orjson keeps the last of duplicate keys without a word. Count the keys: with no whitespace
    in the text, every key in it is followed at once by ``":``, so the text holds at least as
    many ``":`` as key occurrences (more when a string holds an escaped quote before a colon).
    The document holds the key occurrences minus the duplicates. Equal counts therefore prove
    there was no duplicate; when they differ, the strict parser decides.
    """
    # (Any whitespace at all sends the message the strict way: one-byte searches are memchr,
    # much cheaper than looking for a quote followed by whitespace. Gateways send compact JSON.)
    if b" " in payload or b"\n" in payload or b"\t" in payload or b"\r" in payload:
        return False
    return _keys(document, 1) == payload.count(b'":')


def _keys(node: Any, depth: int) -> int:
    """Keys in every object of ``node``; hugely negative when nested deeper than ``MAX_DEPTH``
    (so no count can match). Recursion stops at ``MAX_DEPTH``, far below Python's limit."""
    if depth > MAX_DEPTH:
        return -(1 << 62)
    if type(node) is dict:
        n = len(node)
        for child in node.values():
            if type(child) is dict or type(child) is list:
                n += _keys(child, depth + 1)
        return n
    n = 0
    for child in node:
        if type(child) is dict or type(child) is list:
            n += _keys(child, depth + 1)
    return n


def _json_strict(payload: bytes) -> Any:
    """The JSON document in ``payload``, strictly; or PayloadError (``not_json``, ``duplicate_key``)."""
    if payload.startswith(codecs.BOM_UTF8):
        raise PayloadError(Reason.NOT_JSON, "payload starts with a UTF-8 byte-order mark; send UTF-8 without one")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(Reason.NOT_JSON, f"payload is not UTF-8{_encoding_hint(payload)}: {exc}") from None
    # Cheap: nesting deeper than MAX_DEPTH needs more brackets than that.
    if payload.count(b"[") + payload.count(b"{") > MAX_DEPTH and _nested_deeper_than(payload, MAX_DEPTH):
        raise PayloadError(Reason.NOT_JSON, f"payload is nested more than {MAX_DEPTH} levels deep (or is not JSON)")
    try:
        return _DECODER.decode(text)
    except PayloadError:
        raise
    except RecursionError:  # not expected after the check above; kept as a last line
        raise PayloadError(Reason.NOT_JSON, f"payload is nested more than {MAX_DEPTH} levels deep") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(Reason.NOT_JSON, f"payload is not JSON{_encoding_hint(payload)}: {exc}") from None
    except ValueError as exc:  # an integer beyond Python's int-string limit
        raise PayloadError(Reason.NOT_JSON, f"payload has a number that cannot be read: {str(exc)[:120]}") from None


#: Topics and header names seen valid before: the ingest sees the same few thousand again and
#: again, so their checks run once (bounded: cleared when full).
_VALID_TOPICS: dict[tuple[str, str], MachinePath] = {}
_VALID_NAMES: set[str] = set()
_CACHE_MAX = 100_000


def _machine(topic: str, expected: Channel) -> MachinePath:
    """The machine a topic names; or PayloadError (``bad_topic``)."""
    known = _VALID_TOPICS.get((topic, expected))
    if known is not None:
        return known
    path = _parse_machine(topic, expected)
    if len(_VALID_TOPICS) >= _CACHE_MAX:
        _VALID_TOPICS.clear()
    _VALID_TOPICS[(topic, expected)] = path
    return path


def _parse_machine(topic: str, expected: Channel) -> MachinePath:
    if not isinstance(topic, str):
        raise PayloadError(Reason.BAD_TOPIC, f"topic must be text, got {type(topic).__name__}")
    if len(topic) > MAX_TOPIC_CHARS:
        raise PayloadError(
            Reason.BAD_TOPIC, f"topic of {len(topic)} characters is longer than any valid topic: {topic[:80]!r}..."
        )
    try:
        path, channel = parse_topic(topic)
    except TopicError as exc:
        raise PayloadError(Reason.BAD_TOPIC, str(exc)) from None
    if channel != expected:
        raise PayloadError(Reason.BAD_TOPIC, f"topic {topic!r} is not a {expected} topic")
    return path


def _require(message: Mapping[str, Any], key: str, type_: type, what: str) -> Any:
    if key not in message:
        raise PayloadError(Reason.MISSING_FIELD, f"missing field {key!r} ({what})")
    value = message[key]
    if type(value) is not type_:  # JSON values have exact types: a bool is not an int here
        raise PayloadError(Reason.WRONG_TYPE, f"field {key!r} must be {what}, got {_json_type(value)} {_brief(value)}")
    return value


def _name(key: str, value: Any, what: str) -> str:
    """A header name (gateway, boot, kind): a string that could be a topic level."""
    if type(value) is str and value in _VALID_NAMES:
        return value
    if type(value) is not str:
        raise PayloadError(Reason.WRONG_TYPE, f"field {key!r} must be {what}, got {_json_type(value)} {_brief(value)}")
    if len(value) > _MAX_NAME:
        raise PayloadError(Reason.WRONG_TYPE, f"field {key!r} must be at most {_MAX_NAME} characters, got {len(value)}")
    try:
        check_name(key, value)
    except TopicError as exc:
        raise PayloadError(Reason.WRONG_TYPE, str(exc)) from None
    if len(_VALID_NAMES) >= _CACHE_MAX:
        _VALID_NAMES.clear()
    _VALID_NAMES.add(value)
    return value


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
    otherwise bad readings are listed in ``Telemetry.rejections``. Raises nothing else, for
    any ``topic`` and ``payload``.
    """
    if len(payload) > max_bytes:
        raise PayloadError(Reason.OVERSIZED, f"payload is {len(payload)} bytes, the limit is {max_bytes}")
    path = _machine(topic, "telemetry")
    message = _json(payload)
    if type(message) is not dict:
        raise PayloadError(Reason.NOT_OBJECT, f"payload must be a JSON object, got {_json_type(message)}")

    version = _require(message, "v", int, "the schema version, an integer")
    if version != SCHEMA_VERSION:
        raise PayloadError(
            Reason.UNSUPPORTED_VERSION,
            f"schema version {_brief(version)} is not supported (this ingest reads {SCHEMA_VERSION})",
        )
    if "gateway" not in message:
        raise PayloadError(Reason.MISSING_FIELD, "missing field 'gateway' (the gateway id, a string)")
    gateway = _name("gateway", message["gateway"], "the gateway id, a string")
    boot = message.get("boot")
    if boot is not None:
        boot = _name("boot", boot, "the gateway's boot identity, a string")
    seq = _require(message, "seq", int, "the sequence number, an integer")
    replay = message.get("replay")
    if replay is None:
        replay = False
    elif type(replay) is not bool:
        raise PayloadError(
            Reason.WRONG_TYPE, f"field 'replay' must be true or false, got {_json_type(replay)} {_brief(replay)}"
        )
    if not 0 <= seq <= INT64_MAX:
        raise PayloadError(Reason.WRONG_TYPE, f"field 'seq' must be from 0 to 2**63 - 1, got {_brief(seq)}")
    units = _require(message, "units", dict, "an object of signal -> unit")
    samples = _require(message, "samples", list, "a list of samples")
    if not samples:
        raise PayloadError(Reason.MISSING_FIELD, "field 'samples' is empty")
    if len(samples) > MAX_SAMPLES:
        raise PayloadError(Reason.OVERSIZED, f"{len(samples)} samples in one message, the limit is {MAX_SAMPLES}")
    kind = message.get("kind")
    if kind is not None:
        kind = _name("kind", kind, "the machine kind, a string")
    if machines is not None:
        known_kind = machines.get(path)
        if known_kind is None:
            raise PayloadError(Reason.UNKNOWN_MACHINE, f"machine {path} is not in the plant registry")
        if kind is not None and kind != known_kind:
            raise PayloadError(Reason.KIND_MISMATCH, f"machine {path} is a {known_kind}, the message says {kind}")
        kind = known_kind

    latest = (int(time.time() * 1000) if now_ms is None else now_ms) + MAX_FUTURE_MS
    telemetry = Telemetry(path, gateway, seq, kind, [], boot=boot, replay=replay)
    reject = telemetry.rejections.append
    seen: set[int] = set()
    for index, raw in enumerate(samples):
        if type(raw) is not dict:
            reject(Rejection(Reason.WRONG_TYPE, f"samples[{index}] must be an object, got {_json_type(raw)}"))
            continue
        values = raw.get("values")
        if type(values) is not dict:
            if values is None:
                reject(Rejection(Reason.MISSING_FIELD, f"samples[{index}] has no 'values' object"))
            else:
                reject(
                    Rejection(
                        Reason.WRONG_TYPE,
                        f"samples[{index}].values must be an object of signal -> value, got {_json_type(values)}",
                    )
                )
            continue
        ts = raw.get("ts")
        if type(ts) is not int:
            reason, detail, ts = Reason.BAD_TIMESTAMP, f"samples[{index}].ts must be integer ms, got {_brief(ts)}", None
        elif not MIN_TS_MS <= ts <= latest:
            reason = Reason.BAD_TIMESTAMP
            detail = f"timestamp {_brief(ts)} ms is before 2000 or more than 24 h ahead of the ingest clock"
        elif ts in seen:
            reason = Reason.DUPLICATE_TIMESTAMP
            detail = f"samples[{index}] repeats timestamp {ts} ms of an earlier sample; one would overwrite the other"
        else:
            seen.add(ts)
            accepted: dict[str, Value] = {}
            for name, value in values.items():
                # Fast path for the common case (a known gauge or total, a float in range, the
                # catalogue's unit; a known state): the same verdict as _check_reading, sooner.
                spec = _GAUGES.get(name)
                if spec is not None:
                    if type(value) is float and spec[0] <= value <= spec[1] and units.get(name) == spec[2]:
                        accepted[name] = value
                        continue
                elif name in _STATE_SIGNALS and type(value) is str and value in _STATES:
                    accepted[name] = value
                    continue
                else:
                    spec = _COUNTERS.get(name)
                    if (
                        spec is not None
                        and type(value) is int
                        and spec[0] <= value <= spec[1]
                        and units.get(name) == spec[2]
                    ):
                        accepted[name] = value
                        continue
                checked = _check_reading(name, value, units)
                if isinstance(checked, Rejection):
                    checked.ts_ms = ts
                    reject(checked)
                else:
                    accepted[name] = checked
            if accepted:
                telemetry.samples.append(Sample(ts, accepted))
            continue
        for name, value in values.items():
            reject(Rejection(reason, detail, name, value, ts))
    return telemetry


def _check_reading(name: str, value: Any, units: Mapping[str, Any]) -> Value | Rejection:
    signal = SIGNALS.get(name)
    if signal is None:
        return Rejection(Reason.UNKNOWN_SIGNAL, f"signal {_brief(name)} is not in the signal catalogue", name, value)
    if signal.kind == "state":
        if type(value) is not str:
            return Rejection(
                Reason.WRONG_TYPE, f"{name} must be a string, got {_json_type(value)} {_brief(value)}", name, value
            )
        if value not in _STATES:
            return Rejection(
                Reason.UNKNOWN_STATE,
                f"{name} {_brief(value)} is not a machine state ({', '.join(MACHINE_STATES)})",
                name,
                value,
            )
        return value
    kind = type(value)
    if kind is not float and kind is not int:  # a bool is not a number here
        return Rejection(
            Reason.WRONG_TYPE, f"{name} must be a number, got {_json_type(value)} {_brief(value)}", name, value
        )
    unit = units.get(name)
    if unit is None:
        return Rejection(Reason.MISSING_UNIT, f"{name} has no unit in 'units' (expected {signal.unit!r})", name, value)
    if type(unit) is not str or canonical_unit(unit) != signal.unit:
        return Rejection(Reason.WRONG_UNIT, f"{name} must be in {signal.unit}, got {_brief(unit, 20)}", name, value)
    # Exact for integers of any size; false for infinities (1e400 reads as inf).
    if not signal.low <= value <= signal.high:
        return Rejection(
            Reason.OUT_OF_RANGE,
            f"{name} = {_brief(value)} {signal.unit} is outside [{signal.low:g}, {signal.high:g}]",
            name,
            value,
        )
    if signal.kind == "counter":
        if kind is float and not value.is_integer():
            return Rejection(
                Reason.WRONG_TYPE, f"{name} is a counter and must be a whole number, got {value!r}", name, value
            )
        return int(value)  # within the catalogue's range, so within InfluxDB's 64 bits
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


_ALERT_FIELDS = ("id", "state", "severity", "detector", "signal", "score", "threshold", "ts", "message")


def finite_number(value: Any) -> float | None:
    """A JSON number (not a bool) as a finite float, or None (anything else, or too large)."""
    if type(value) is not int and type(value) is not float:
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return number if math.isfinite(number) else None


def _alert_number(m: Mapping[str, Any], key: str) -> float:
    value = m[key]
    number = finite_number(value)
    if number is not None:
        return number
    raise PayloadError(Reason.WRONG_TYPE, f"alert field {key!r} must be a finite number, got {_brief(value)}")


def _alert_text(m: Mapping[str, Any], key: str) -> str:
    value = m[key]
    if type(value) is not str:
        raise PayloadError(
            Reason.WRONG_TYPE, f"alert field {key!r} must be a string, got {_json_type(value)} {_brief(value)}"
        )
    return value


def decode_alert(topic: str, payload: bytes, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> Alert:
    """Validate one alert; raises :class:`PayloadError` and nothing else, for any input."""
    if len(payload) > max_bytes:
        raise PayloadError(Reason.OVERSIZED, f"alert is {len(payload)} bytes, the limit is {max_bytes}")
    path = _machine(topic, "alert")
    m = _json(payload)
    if type(m) is not dict:
        raise PayloadError(Reason.NOT_OBJECT, f"alert must be a JSON object, got {_json_type(m)}")
    missing = [k for k in _ALERT_FIELDS if k not in m]
    if missing:
        raise PayloadError(Reason.MISSING_FIELD, f"alert is missing {', '.join(missing)}")
    version = m.get("v", SCHEMA_VERSION)
    if type(version) is not int or version != SCHEMA_VERSION:
        raise PayloadError(
            Reason.UNSUPPORTED_VERSION, f"alert schema version {_brief(version)} is not supported ({SCHEMA_VERSION})"
        )
    state, severity = m["state"], m["severity"]
    if type(state) is not str or state not in ("raised", "cleared"):
        raise PayloadError(Reason.WRONG_TYPE, f"alert state {_brief(state)} is not known (raised, cleared)")
    if type(severity) is not str or severity not in ("warning", "critical"):
        raise PayloadError(Reason.WRONG_TYPE, f"alert severity {_brief(severity)} is not known (warning, critical)")
    ts = m["ts"]
    if type(ts) is not int or not -INT64_MAX - 1 <= ts <= INT64_MAX:
        raise PayloadError(Reason.WRONG_TYPE, f"alert field 'ts' must be integer ms, got {_brief(ts)}")
    return Alert(
        path,
        _alert_text(m, "id"),
        state,  # type: ignore[arg-type]  # checked above
        severity,  # type: ignore[arg-type]
        _alert_text(m, "detector"),
        _alert_text(m, "signal"),
        _alert_number(m, "score"),
        _alert_number(m, "threshold"),
        ts,
        _alert_text(m, "message"),
    )
