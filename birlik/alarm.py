"""Alarms, schema version 1: what maintenance teams receive, in every channel.

An **alarm** is one abnormal situation of one machine, of one **kind**:

``condition``  the machine's condition (vibration, temperatures... against its normal);
``sensor``     a sensor reads wrong (stuck, drifting, out of range...): fix the sensor;
``trip``       the machine tripped (its state turned ``fault``);
``stale``      the machine or its gateway stopped reporting.

At most one alarm is open per machine and kind. Its **state** follows ISA-18.2:

``unack_active``  active, not acknowledged (new);
``ack_active``    active, acknowledged by someone;
``unack_rtn``     returned to normal before anyone acknowledged it;
``shelved``       silenced by someone until ``shelved_until``;
``suppressed``    silenced by design: the machine is in a planned stop;
``normal``        closed: returned to normal and acknowledged (or cleared by hand).

Every change is a **transition** (``raised``, ``severity``, ``escalated``, ``acknowledged``,
``returned``, ``reactivated``, ``shelved``, ``unshelved``, ``suppressed``, ``cleared``),
numbered per alarm (``seq``); ``key`` (``<id>#<seq>``) names one transition everywhere, so a
receiver that sees a key twice knows it is the same notification.

On MQTT every transition is published (QoS 1) on ``birlik/<tenant>/<site>/<line>/<machine>/alarm``
and the machine's open alarms, retained, on ``.../alarm_state`` (see :func:`encode_state`).
Commands (acknowledge, shelve, unshelve, clear) go to ``birlik/_alarms/command``
(:func:`decode_command`). Decoding is total: any bytes give the value or a
:class:`~birlik.payload.PayloadError`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from birlik.payload import SCHEMA_VERSION, PayloadError, Reason, _brief, _json, _json_type, finite_number
from birlik.topics import ROOT, MachinePath, TopicError, check_name

AlarmKind = Literal["condition", "sensor", "trip", "stale"]
AlarmState = Literal["unack_active", "ack_active", "unack_rtn", "shelved", "suppressed", "normal"]
Transition = Literal[
    "raised",
    "severity",
    "escalated",
    "acknowledged",
    "returned",
    "reactivated",
    "shelved",
    "unshelved",
    "suppressed",
    "cleared",
]
Priority = Literal["low", "medium", "high", "critical"]
Action = Literal["acknowledge", "shelve", "unshelve", "clear"]

KINDS: tuple[AlarmKind, ...] = get_args(AlarmKind)
STATES: tuple[AlarmState, ...] = get_args(AlarmState)
TRANSITIONS: tuple[Transition, ...] = get_args(Transition)
PRIORITIES: tuple[Priority, ...] = get_args(Priority)
ACTIONS: tuple[Action, ...] = get_args(Action)
#: States in which an alarm is open (not ``normal``).
OPEN_STATES = frozenset(STATES) - {"normal"}

COMMAND_TOPIC = f"{ROOT}/_alarms/command"
MAX_ALARM_BYTES = 64 * 1024
_TEXT_MAX = 4000


@dataclass(frozen=True, slots=True)
class SignalContext:
    """One signal behind an alarm: its value now, its normal level, and its trend."""

    name: str
    value: float
    unit: str = ""
    #: The machine's normal level of this signal (at this load, where the model knows it).
    normal: float | None = None
    #: Change per hour over the recent past.
    rate_per_h: float | None = None


@dataclass(frozen=True, slots=True)
class Alarm:
    """One transition of one alarm, with everything a technician needs to act on it."""

    path: MachinePath
    alarm_id: str
    seq: int
    kind: AlarmKind
    state: AlarmState
    transition: Transition
    priority: Priority
    ts_ms: int
    title: str
    text: str
    machine_kind: str = ""
    signals: tuple[SignalContext, ...] = ()
    #: 1 healthy ... 0 failed, where a health indicator is known.
    health: float | None = None
    #: Estimated time to failure, hours, and its band.
    ttf_h: float | None = None
    ttf_low_h: float | None = None
    ttf_high_h: float | None = None
    team: str = ""
    dashboard: str = ""
    user: str = ""
    comment: str = ""
    shelved_until_ms: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        return f"{self.alarm_id}#{self.seq}"

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path")
        d.pop("extra")
        d["id"] = d.pop("alarm_id")
        d["ts"] = d.pop("ts_ms")
        d["shelved_until"] = d.pop("shelved_until_ms")
        d["signals"] = [asdict(s) for s in self.signals]
        return {"v": SCHEMA_VERSION, "key": self.key, "machine": str(self.path), **d}

    def encode(self) -> bytes:
        return json.dumps(self.as_dict(), separators=(",", ":"), ensure_ascii=False).encode()


def alarm_topic(path: MachinePath) -> str:
    return f"{ROOT}/{path.tenant}/{path.site}/{path.line}/{path.machine}/alarm"


def state_topic(path: MachinePath) -> str:
    return f"{ROOT}/{path.tenant}/{path.site}/{path.line}/{path.machine}/alarm_state"


def encode_state(path: MachinePath, alarms: list[Alarm], ts_ms: int) -> bytes:
    """The machine's open alarms (latest transition of each), for its retained state topic."""
    return json.dumps(
        {"v": SCHEMA_VERSION, "machine": str(path), "ts": ts_ms, "alarms": [a.as_dict() for a in alarms if a.open]},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


# --- decoding -------------------------------------------------------------------------------


def _path(topic: Any, channel: str) -> MachinePath:
    parts = topic.split("/") if type(topic) is str else []
    if len(parts) != 6 or parts[0] != ROOT or parts[5] != channel:
        raise PayloadError(
            Reason.BAD_TOPIC, f"{_brief(topic)} is not {ROOT}/<tenant>/<site>/<line>/<machine>/{channel}"
        )
    try:
        return MachinePath(*parts[1:5])
    except TopicError as exc:
        raise PayloadError(Reason.BAD_TOPIC, str(exc)) from None


def _text(m: dict[str, Any], key: str, *, optional: bool = False, limit: int = _TEXT_MAX) -> str:
    value = m.get(key, "" if optional else None)
    if value is None and optional:
        return ""
    if type(value) is not str or len(value) > limit:
        raise PayloadError(Reason.WRONG_TYPE, f"alarm field {key!r} must be a string of at most {limit} characters")
    return value


def _number(value: Any, key: str, *, optional: bool = True) -> float | None:
    if value is None and optional:
        return None
    number = finite_number(value)
    if number is not None:
        return number
    raise PayloadError(Reason.WRONG_TYPE, f"alarm field {key!r} must be a finite number, got {_brief(value)}")


def _choice(m: dict[str, Any], key: str, choices: tuple[str, ...]) -> Any:
    value = m.get(key)
    if type(value) is not str or value not in choices:
        raise PayloadError(Reason.WRONG_TYPE, f"alarm field {key!r} must be one of {', '.join(choices)}")
    return value


def _int(value: Any, key: str, *, optional: bool = False, low: int = 0) -> int | None:
    if value is None and optional:
        return None
    if type(value) is not int or not low <= value <= 2**63 - 1:
        raise PayloadError(Reason.WRONG_TYPE, f"alarm field {key!r} must be an integer >= {low}, got {_brief(value)}")
    return value


def _object(payload: bytes, what: str) -> dict[str, Any]:
    if len(payload) > MAX_ALARM_BYTES:
        raise PayloadError(Reason.OVERSIZED, f"{what} is {len(payload)} bytes, the limit is {MAX_ALARM_BYTES}")
    m = _json(payload)
    if type(m) is not dict:
        raise PayloadError(Reason.NOT_OBJECT, f"{what} must be a JSON object, got {_json_type(m)}")
    if m.get("v") != SCHEMA_VERSION or type(m.get("v")) is not int:
        raise PayloadError(Reason.UNSUPPORTED_VERSION, f"{what} schema version {_brief(m.get('v'))} is not supported")
    return m


def _alarm(path: MachinePath, m: Any) -> Alarm:
    if type(m) is not dict:
        raise PayloadError(Reason.NOT_OBJECT, "an alarm must be a JSON object")
    missing = [k for k in ("id", "seq", "kind", "state", "transition", "priority", "ts", "title", "text") if k not in m]
    if missing:
        raise PayloadError(Reason.MISSING_FIELD, f"alarm is missing {', '.join(missing)}")
    signals = m.get("signals", [])
    if type(signals) is not list or len(signals) > 50:
        raise PayloadError(Reason.WRONG_TYPE, "alarm field 'signals' must be a list of at most 50 objects")
    contexts = []
    for s in signals:
        if type(s) is not dict:
            raise PayloadError(Reason.WRONG_TYPE, "each of the alarm's signals must be an object")
        name = _text(s, "name", limit=64)
        value = _number(s.get("value"), "signals.value", optional=False)
        assert value is not None
        contexts.append(
            SignalContext(
                name,
                value,
                _text(s, "unit", optional=True, limit=32),
                _number(s.get("normal"), "signals.normal"),
                _number(s.get("rate_per_h"), "signals.rate_per_h"),
            )
        )
    seq = _int(m["seq"], "seq", low=1)
    ts = _int(m["ts"], "ts", low=-(2**63))
    assert seq is not None and ts is not None
    return Alarm(
        path=path,
        alarm_id=_text(m, "id", limit=200),
        seq=seq,
        kind=_choice(m, "kind", KINDS),
        state=_choice(m, "state", STATES),
        transition=_choice(m, "transition", TRANSITIONS),
        priority=_choice(m, "priority", PRIORITIES),
        ts_ms=ts,
        title=_text(m, "title"),
        text=_text(m, "text"),
        machine_kind=_text(m, "machine_kind", optional=True, limit=64),
        signals=tuple(contexts),
        health=_number(m.get("health"), "health"),
        ttf_h=_number(m.get("ttf_h"), "ttf_h"),
        ttf_low_h=_number(m.get("ttf_low_h"), "ttf_low_h"),
        ttf_high_h=_number(m.get("ttf_high_h"), "ttf_high_h"),
        team=_text(m, "team", optional=True, limit=64),
        dashboard=_text(m, "dashboard", optional=True),
        user=_text(m, "user", optional=True, limit=128),
        comment=_text(m, "comment", optional=True),
        shelved_until_ms=_int(m.get("shelved_until"), "shelved_until", optional=True, low=-(2**63)),
    )


def decode_alarm(topic: str, payload: bytes) -> Alarm:
    """One transition from ``.../alarm``; raises :class:`PayloadError` and nothing else."""
    path = _path(topic, "alarm")
    return _alarm(path, _object(payload, "alarm"))


def decode_state(topic: str, payload: bytes) -> list[Alarm]:
    """The open alarms from a retained ``.../alarm_state`` message (empty: none open)."""
    path = _path(topic, "alarm_state")
    m = _object(payload, "alarm state")
    alarms = m.get("alarms")
    if type(alarms) is not list:
        raise PayloadError(Reason.WRONG_TYPE, "alarm state field 'alarms' must be a list")
    return [_alarm(path, a) for a in alarms]


@dataclass(frozen=True, slots=True)
class Command:
    """Acknowledge, shelve, unshelve or clear one alarm (by id), or every open alarm of a machine
    (``alarm_id`` empty, ``machine`` given), as ``user``, with a comment."""

    action: Action
    alarm_id: str = ""
    machine: str = ""
    kind: str = ""
    user: str = ""
    comment: str = ""
    #: ``shelve``: for how long, seconds.
    duration_s: float = 0.0

    def encode(self) -> bytes:
        return json.dumps({"v": SCHEMA_VERSION, **asdict(self)}, separators=(",", ":")).encode()


def decode_command(payload: bytes) -> Command:
    """A command from ``birlik/_alarms/command``; raises :class:`PayloadError` and nothing else."""
    m = _object(payload, "command")
    action = _choice(m, "action", ACTIONS)
    alarm_id = _text(m, "alarm_id", optional=True, limit=200)
    machine = _text(m, "machine", optional=True, limit=300)
    kind = _text(m, "kind", optional=True, limit=16)
    if not alarm_id and not machine:
        raise PayloadError(Reason.MISSING_FIELD, "a command names an alarm_id or a machine")
    if machine:
        levels = machine.split("/")
        if len(levels) != 4:
            raise PayloadError(Reason.WRONG_TYPE, "command field 'machine' must be tenant/site/line/machine")
        try:
            for level, value in zip(("tenant", "site", "line", "machine"), levels, strict=True):
                check_name(level, value)
        except TopicError as exc:
            raise PayloadError(Reason.WRONG_TYPE, str(exc)) from None
    if kind and kind not in KINDS:
        raise PayloadError(Reason.WRONG_TYPE, f"command field 'kind' must be one of {', '.join(KINDS)}")
    duration = _number(m.get("duration_s", 0.0), "duration_s", optional=False)
    assert duration is not None
    if action == "shelve" and not 0 < duration <= 30 * 24 * 3600:
        raise PayloadError(Reason.OUT_OF_RANGE, "shelve needs duration_s between 0 and 30 days")
    return Command(
        action,
        alarm_id,
        machine,
        kind,
        _text(m, "user", optional=True, limit=128),
        _text(m, "comment", optional=True),
        duration,
    )
