"""Total decoding, by property: for any bytes on any topic, decode_telemetry and decode_alert
return a value or raise PayloadError (nothing else), and whatever they accept is safe to
write as InfluxDB line protocol.

Deterministic (derandomized, no example database) and small enough to run on every commit.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from birlik import payload as _payload
from birlik.lineprotocol import telemetry_lines
from birlik.payload import (
    INT64_MAX,
    MAX_FUTURE_MS,
    MIN_TS_MS,
    Alert,
    PayloadError,
    Reason,
    Telemetry,
    Value,
    _nested_deeper_than,
    decode_alert,
    decode_telemetry,
    encode_telemetry,
)
from birlik.signals import MACHINE_STATES, SIGNALS, UNIT_ALIASES, Signal
from birlik.topics import MachinePath

NOW_MS = 1_763_800_000_000
PATH = MachinePath("ontustik-textile", "kz-turkestan", "utilities-1", "pump-101")
TOPIC = PATH.topic()
ALERT_TOPIC = PATH.topic("alert")
TAGS = {"kind", "line", "machine", "site", "tenant"}


def fuzz(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- the properties every outcome must have ------------------------------------------------


def _check_error(error: PayloadError) -> None:
    assert isinstance(error.reason, Reason)
    assert isinstance(error.detail, str)
    assert error.detail
    assert str(error).startswith(f"{error.reason.value}: ")
    # A sentence for a log line: short, one line, printable as UTF-8.
    assert len(error.detail) < 2000
    assert "\n" not in error.detail
    assert "\r" not in error.detail
    error.detail.encode()


def decode(topic: str, payload: bytes) -> Telemetry | PayloadError:
    """decode_telemetry, checked: a Telemetry or a PayloadError; anything else fails the test."""
    try:
        telemetry = decode_telemetry(topic, payload, now_ms=NOW_MS)
    except PayloadError as error:
        _check_error(error)
        return error
    assert isinstance(telemetry, Telemetry)
    _check_accepted(telemetry, topic, payload)
    return telemetry


def decode_an_alert(topic: str, payload: bytes) -> Alert | PayloadError:
    try:
        alert = decode_alert(topic, payload)
    except PayloadError as error:
        _check_error(error)
        return error
    assert isinstance(alert, Alert)
    for text in (alert.alert_id, alert.detector, alert.signal, alert.message):
        assert type(text) is str
    assert alert.state in ("raised", "cleared")
    assert alert.severity in ("warning", "critical")
    for number in (alert.score, alert.threshold):
        assert type(number) is float
        assert math.isfinite(number)
    assert type(alert.ts_ms) is int
    assert -INT64_MAX - 1 <= alert.ts_ms <= INT64_MAX
    return alert


def _check_value(name: str, value: Value, unit: Any) -> None:
    signal = SIGNALS[name]
    if signal.kind == "state":
        assert type(value) is str
        assert value in MACHINE_STATES
        return
    assert not isinstance(value, str)
    assert type(unit) is str
    assert UNIT_ALIASES.get(unit, unit) == signal.unit
    assert signal.low <= value <= signal.high
    if signal.kind == "counter":
        assert type(value) is int
        assert -INT64_MAX - 1 <= value <= INT64_MAX
    else:
        assert type(value) is float
        assert math.isfinite(value)


def _check_accepted(telemetry: Telemetry, topic: str, payload: bytes) -> None:
    # An accepted payload is strict JSON without repeated keys, so Python's lenient reader
    # sees the same document.
    document = json.loads(payload)
    units = document["units"]
    assert telemetry.path.topic() == topic
    assert (telemetry.gateway, telemetry.seq, telemetry.boot) == (
        document["gateway"],
        document["seq"],
        document.get("boot"),
    )
    assert 0 <= telemetry.seq <= INT64_MAX

    seen: set[int] = set()
    for sample in telemetry.samples:
        assert sample.values
        assert MIN_TS_MS <= sample.ts_ms <= NOW_MS + MAX_FUTURE_MS
        assert sample.ts_ms not in seen
        seen.add(sample.ts_ms)
        for name, value in sample.values.items():
            _check_value(name, value, units.get(name))

    for r in telemetry.rejections:
        assert isinstance(r.reason, Reason)
        assert r.detail
        assert "\n" not in r.detail
        r.detail.encode()

    # Every reading of the input is accounted for: accepted, or rejected with its signal;
    # a sample that is not an object, or has no values object, is one rejection without one.
    given_readings: Counter[str] = Counter()
    malformed = 0
    for raw in document["samples"]:
        if type(raw) is dict and type(raw.get("values")) is dict:
            given_readings.update(raw["values"].keys())
        else:
            malformed += 1
    accepted = Counter(name for s in telemetry.samples for name in s.values)
    rejected = Counter(r.signal for r in telemetry.rejections if r.signal is not None)
    assert accepted + rejected == given_readings
    assert sum(r.signal is None for r in telemetry.rejections) == malformed
    assert telemetry.reading_count == sum(accepted.values())

    # Line protocol: one line per sample, nothing that could start another line or add a
    # tag or field. Names and states need no escaping, so a plain split is exact.
    lines = list(telemetry_lines(telemetry))
    assert len(lines) == len(telemetry.samples)
    for line, sample in zip(lines, telemetry.samples, strict=True):
        assert "\n" not in line
        assert "\r" not in line
        head, fields, ts = line.split(" ")
        assert ts == str(sample.ts_ms)
        measurement, *tags = head.split(",")
        assert measurement == "telemetry"
        tag_values = dict(tag.split("=") for tag in tags)
        assert set(tag_values) <= TAGS
        assert tag_values["machine"] == telemetry.path.machine
        assert [field.split("=")[0] for field in fields.split(",")] == list(sample.values)


# --- JSON text, assembled by hand so it can hold what json.dumps would never write -----------


@dataclass
class Obj:
    """A JSON object as its list of members: a key may appear twice."""

    pairs: list[tuple[str, Any]]


@dataclass(frozen=True)
class Raw:
    """JSON text written as it is: NaN, 1e400, deep nesting, ..."""

    text: str


def emit(node: Any, ascii_only: bool = True) -> str:
    """JSON text for ``node``: strings escaped to ASCII, or left as they are (``ascii_only=False``)."""
    if isinstance(node, Raw):
        return node.text
    if isinstance(node, Obj):
        members = (f"{json.dumps(k, ensure_ascii=ascii_only)}:{emit(v, ascii_only)}" for k, v in node.pairs)
        return "{" + ",".join(members) + "}"
    if isinstance(node, list):
        return "[" + ",".join(emit(v, ascii_only) for v in node) + "]"
    # json.dumps escapes control characters (and, to ASCII, lone surrogates); NaN -> "NaN".
    return json.dumps(node, ensure_ascii=ascii_only)


def to_bytes(node: Any, ascii_only: bool) -> bytes:
    # Unescaped, a lone surrogate becomes bytes that are not UTF-8: the decoder must say not_json.
    return emit(node, ascii_only).encode("utf-8", "surrogatepass")


def repeats_a_key(node: Any) -> bool:
    if isinstance(node, Obj):
        keys = [k for k, _ in node.pairs]
        return len(set(keys)) != len(keys) or any(repeats_a_key(v) for _, v in node.pairs)
    if isinstance(node, list):
        return any(repeats_a_key(v) for v in node)
    return False


# Characters that break things: control characters, quotes, escapes, line-protocol
# separators, lone surrogates, a byte-order mark, non-ASCII letters, an astral character.
CHARACTERS = st.sampled_from(
    [*"abcxyz019_.-AZ", *' ,="\\/\n\r\t\x00\x1f\x7f', "\u2028", "\ufeff", "\ud800", "\udfff", "é", "ı", "Ж", "😀"]
)
TEXT = st.text(CHARACTERS, max_size=10)
_NAME_START = "abcdefghijklmnopqrstuvwxyz0123456789"
NAME = st.builds(
    lambda first, rest: first + rest, st.sampled_from(_NAME_START), st.text(st.sampled_from(_NAME_START + "_.-"))
).filter(lambda name: len(name) <= 64)
NEAR_NAMES = st.one_of(
    TEXT,
    NAME.map(lambda name: name.upper() + "X"),
    st.tuples(NAME, st.sampled_from(["\n", "\\", " x=1", ",a=b", "\x00", "\ud800", "+", "#", "/"])).map("".join),
    st.just("g" * 65),
)
STATE_LIKE = st.one_of(
    st.sampled_from(MACHINE_STATES),
    st.sampled_from(["", "Running", "IDLE", " running", "running\n", "running\x00", "\ud800", 'run"ning', "idle\\"]),
    TEXT,
)
RAW_TOKENS = st.sampled_from(
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e400",
        "-1e400",
        "1" + "0" * 400,
        "-" + "9" * 500,
        "7" * 5000,  # beyond Python's int-string limit
        "-0",
        "0e0",
        "1E+2",
        "5e-324",
        "1.7976931348623157e308",
    ]
)
DEEP = st.tuples(st.integers(1, 80), st.booleans()).map(
    lambda d: Raw("[" * d[0] + "]" * d[0] if d[1] else '{"a":' * d[0] + "1" + "}" * d[0])
)
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=2**62, max_value=2**70),
    st.integers(min_value=-(2**70), max_value=-(2**62)),
    st.floats(),  # NaN and infinities are written as the non-JSON tokens
    st.just(10**400),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, STATE_LIKE, RAW_TOKENS.map(Raw), DEEP)
KEYS = st.one_of(st.sampled_from([*sorted(SIGNALS), "v", "ts", "values", "samples"]), TEXT)
JUNK = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.lists(st.tuples(KEYS, children), max_size=3).map(lambda pairs: Obj(list(pairs))),
    ),
    max_leaves=4,
)


def in_range(signal: Signal) -> st.SearchStrategy[Any]:
    if signal.kind == "state":
        return st.sampled_from(MACHINE_STATES)
    whole = st.integers(math.ceil(signal.low), math.floor(signal.high))
    if signal.kind == "counter":
        return st.one_of(whole, whole.map(float))
    return st.one_of(st.floats(signal.low, signal.high), whole)


_IN_RANGE = {name: in_range(signal) for name, signal in SIGNALS.items()}
_DAMAGE: dict[str, st.SearchStrategy[Any]] = {
    name: st.one_of(STATE_LIKE, JUNK)
    if signal.kind == "state"
    else st.one_of(
        st.sampled_from([signal.low, signal.high, signal.low - 1, signal.high + 1, -0.0, signal.high * 10]),
        NUMBERS,
        JUNK,
    )
    for name, signal in SIGNALS.items()
}


def rarely(draw: st.DrawFn, tenths: int = 1) -> bool:
    """True about ``tenths``/10 of the time."""
    return draw(st.integers(0, 9)) < tenths


def reading(draw: st.DrawFn, name: str) -> Any:
    if name not in SIGNALS:
        return draw(JUNK)
    return draw(_DAMAGE[name]) if rarely(draw, 3) else draw(_IN_RANGE[name])


def unit_for(draw: st.DrawFn, name: str) -> Any:
    unit = SIGNALS[name].unit
    if not rarely(draw, 2):
        return unit
    aliases = [alias for alias, canonical in UNIT_ALIASES.items() if canonical == unit]
    return draw(st.one_of(st.sampled_from([*aliases, "degF", unit.upper(), unit + " "]), JUNK))


def maybe(draw: st.DrawFn, valid: Any, junk: st.SearchStrategy[Any] = JUNK) -> Any:
    """Mostly the valid value, now and then junk."""
    return draw(junk) if draw(st.integers(0, 19)) == 0 else valid


SIGNAL_NAMES = st.one_of(st.sampled_from(sorted(SIGNALS)), st.sampled_from(sorted(SIGNALS)), KEYS)
USUAL_TS = st.sampled_from([NOW_MS, NOW_MS + 1, NOW_MS - 5000, MIN_TS_MS, NOW_MS + MAX_FUTURE_MS])


@st.composite
def messages(draw: st.DrawFn) -> Obj:
    """A telemetry document, mostly valid, with random damage anywhere."""
    objects: list[Obj] = []  # every object built, to repeat a key in one of them
    samples: list[Any] = []
    numeric: set[str] = set()
    for _ in range(draw(st.integers(1, 3))):
        names = draw(st.lists(SIGNAL_NAMES, max_size=5, unique=True))
        if "state" not in names and rarely(draw, 5):
            names.append("state")
        values = Obj([(name, reading(draw, name)) for name in names])
        numeric.update(n for n in names if n in SIGNALS and SIGNALS[n].is_numeric)
        ts = draw(st.one_of(st.integers(0, 2 * NOW_MS), JUNK)) if rarely(draw, 2) else draw(USUAL_TS)
        sample = Obj([("ts", ts), ("values", maybe(draw, values))])
        if rarely(draw):
            sample.pairs = draw(st.permutations(sample.pairs))[: draw(st.integers(0, 2))]
        objects += [values, sample]
        samples.append(maybe(draw, sample))
    units = Obj([(name, unit_for(draw, name)) for name in sorted(numeric) if not rarely(draw)])
    header: list[tuple[str, Any]] = [
        ("v", maybe(draw, 1)),
        ("gateway", maybe(draw, draw(NAME), st.one_of(NEAR_NAMES, JUNK))),
        ("seq", maybe(draw, draw(st.integers(0, INT64_MAX)), st.one_of(st.just(INT64_MAX + 1), NUMBERS, JUNK))),
        ("units", maybe(draw, units)),
        ("samples", maybe(draw, samples, st.one_of(st.just([]), JUNK))),
    ]
    for key in ("boot", "kind"):
        choice = draw(st.integers(0, 9))
        if choice < 5:
            header.append((key, draw(NAME)))
        elif choice == 5:
            header.append((key, draw(st.one_of(st.none(), NEAR_NAMES, JUNK))))
    if rarely(draw, 2):
        header.append((draw(TEXT), draw(JUNK)))  # a field the schema does not name
    if rarely(draw):
        header.remove(draw(st.sampled_from(header)))
    document = Obj(draw(st.permutations(header)))
    objects += [units, document]
    # Now and then a key twice: the same value again, or another one.
    candidates = [o for o in objects if o.pairs]
    if candidates and rarely(draw):
        target = draw(st.sampled_from(candidates))
        key, value = draw(st.sampled_from(target.pairs))
        target.pairs.insert(draw(st.integers(0, len(target.pairs))), (key, draw(st.one_of(st.just(value), JUNK))))
    return document


def good_payload() -> bytes:
    return encode_telemetry(
        gateway="gw-kz-turkestan",
        seq=7,
        kind="centrifugal_pump",
        samples=[(NOW_MS, {"vibration_rms": 2.31, "bearing_temp": 61.2, "count_good": 5, "state": "running"})],
    )


TOPICS = st.one_of(
    st.just(TOPIC),
    st.just(ALERT_TOPIC),
    st.text(CHARACTERS),
    st.lists(st.one_of(NAME, TEXT), min_size=4, max_size=4).map(
        lambda levels: "/".join(["birlik", *levels, "telemetry"])
    ),
)
JSON_PIECES = [bytes([c]) for c in b'{}[]:, 1-"'] + [
    *(b".5", b"e9", b"null", b"true", b"NaN", b"1e400", b'"\\ud800"', b"\\", b"\xff", b"\xef\xbb\xbf", b"\x00"),
    *(b'"v"', b'"gateway"', b'"seq"', b'"units"', b'"samples"', b'"ts"', b'"values"', b'"state"', b'"running"'),
]
JSONISH = st.lists(st.sampled_from(JSON_PIECES), max_size=60).map(b"".join)


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A good payload with a few bytes replaced, inserted or removed."""
    payload = bytearray(good_payload())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(payload)))
        edit = draw(st.integers(0, 2))
        if edit == 0 and at < len(payload):
            payload[at] = draw(st.integers(0, 255))
        elif edit == 1:
            payload[at:at] = draw(st.binary(min_size=1, max_size=4))
        else:
            del payload[at : at + draw(st.integers(1, 8))]
    return bytes(payload)


# --- (1) any bytes, any topic ---------------------------------------------------------------


@fuzz(400)
@given(payload=st.one_of(st.binary(max_size=300), JSONISH, damaged()), topic=TOPICS)
@example(payload=b"[" * 100_000, topic=TOPIC)
@example(payload=b'{"a":' * 50_000, topic=ALERT_TOPIC)
@example(payload=b"\xef\xbb\xbf{}", topic=TOPIC)
@example(payload=b"", topic="")
@example(payload=b"{}", topic="\x00")
def test_any_bytes_on_any_topic_decode_or_raise_payload_error(payload: bytes, topic: str) -> None:
    decode(topic, payload)
    decode_an_alert(topic, payload)


# --- (2) documents built from valid telemetry, damaged -----------------------------------------


@fuzz(300)
@given(document=messages(), ascii_only=st.booleans())
def test_damaged_documents_decode_to_readings_that_keep_the_catalogue_rules(document: Obj, ascii_only: bool) -> None:
    payload = to_bytes(document, ascii_only)

    result = decode(TOPIC, payload)

    if repeats_a_key(document):
        assert isinstance(result, PayloadError)
        assert result.reason in (Reason.DUPLICATE_KEY, Reason.NOT_JSON), result


def test_the_document_generator_reaches_acceptance_and_rejection() -> None:
    # The property above is only worth something if both outcomes happen often enough.
    outcomes: Counter[str] = Counter()

    # 400 examples: in a long run of the whole suite Hypothesis has been seen to draw fewer
    # out-of-range values than alone, with 150 sometimes none.
    @fuzz(400)
    @given(document=messages())
    def sample(document: Obj) -> None:
        result = decode(TOPIC, to_bytes(document, True))
        if isinstance(result, PayloadError):
            outcomes[result.reason.value] += 1
        else:
            outcomes["accepted"] += 1
            outcomes["readings accepted"] += result.reading_count
            outcomes.update(r.reason.value for r in result.rejections)

    sample()
    assert outcomes["accepted"] >= 15, outcomes
    assert outcomes["readings accepted"] >= 15, outcomes
    for reason in ("duplicate_key", "not_json", "wrong_type", "out_of_range", "unknown_state"):
        assert outcomes[reason], (reason, outcomes)


# --- (3) round trip -----------------------------------------------------------------------------


@st.composite
def valid_samples(draw: st.DrawFn) -> list[tuple[int, dict[str, Value]]]:
    stamps = draw(st.lists(st.integers(MIN_TS_MS, NOW_MS + MAX_FUTURE_MS), min_size=1, max_size=4, unique=True))
    samples: list[tuple[int, dict[str, Value]]] = []
    for ts in stamps:
        names = draw(st.lists(st.sampled_from(sorted(SIGNALS)), min_size=1, max_size=8, unique=True))
        samples.append((ts, {name: draw(_IN_RANGE[name]) for name in names}))
    return samples


def _typed(name: str, value: Value) -> Value:
    kind = SIGNALS[name].kind
    if kind == "state":
        return value
    return int(value) if kind == "counter" else float(value)


@fuzz(150)
@given(
    samples=valid_samples(),
    gateway=NAME,
    seq=st.integers(0, INT64_MAX),
    kind=st.none() | NAME,
    boot=st.none() | NAME,
)
def test_encoded_samples_decode_to_the_same_values(
    samples: list[tuple[int, dict[str, Value]]], gateway: str, seq: int, kind: str | None, boot: str | None
) -> None:
    payload = encode_telemetry(gateway=gateway, seq=seq, samples=samples, kind=kind, boot=boot)

    telemetry = decode(TOPIC, payload)

    assert isinstance(telemetry, Telemetry), telemetry
    assert telemetry.rejections == []
    assert (telemetry.gateway, telemetry.seq, telemetry.kind, telemetry.boot) == (gateway, seq, kind, boot)
    expected = [(ts, {name: _typed(name, v) for name, v in values.items()}) for ts, values in samples]
    assert [(s.ts_ms, s.values) for s in telemetry.samples] == expected
    for sample, (_, values) in zip(telemetry.samples, expected, strict=True):
        assert [type(v) for v in sample.values.values()] == [type(v) for v in values.values()]


# --- alerts ---------------------------------------------------------------------------------------

# Text that survives JSON: not two lone surrogates that read back as one astral character.
PLAIN_TEXT = st.text(max_size=20)
ALERT_VALID: dict[str, st.SearchStrategy[Any]] = {
    "v": st.just(1),
    "id": TEXT,
    "state": st.sampled_from(["raised", "cleared"]),
    "severity": st.sampled_from(["warning", "critical"]),
    "detector": TEXT,
    "signal": TEXT,
    "score": st.floats(allow_nan=False, allow_infinity=False),
    "threshold": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**6), 10**6),
    "ts": st.integers(-(2**63), INT64_MAX),
    "message": TEXT,
}


@st.composite
def alert_documents(draw: st.DrawFn) -> Obj:
    pairs = [
        (key, maybe(draw, draw(valid), st.one_of(NUMBERS, STATE_LIKE, JUNK))) for key, valid in ALERT_VALID.items()
    ]
    if draw(st.integers(0, 9)) == 0:
        pairs.remove(draw(st.sampled_from(pairs)))
    if draw(st.integers(0, 9)) == 0:
        pairs.append(draw(st.sampled_from(pairs)))
    return Obj(draw(st.permutations(pairs)))


@fuzz(300)
@given(document=alert_documents(), ascii_only=st.booleans())
def test_damaged_alerts_decode_or_raise_payload_error(document: Obj, ascii_only: bool) -> None:
    result = decode_an_alert(ALERT_TOPIC, to_bytes(document, ascii_only))

    if repeats_a_key(document):
        assert isinstance(result, PayloadError)


@fuzz(100)
@given(
    alert_id=PLAIN_TEXT,
    state=st.sampled_from(["raised", "cleared"]),
    severity=st.sampled_from(["warning", "critical"]),
    detector=PLAIN_TEXT,
    signal=PLAIN_TEXT,
    score=st.floats(allow_nan=False, allow_infinity=False),
    threshold=st.floats(allow_nan=False, allow_infinity=False),
    ts=st.integers(-(2**63), INT64_MAX),
    message=PLAIN_TEXT,
)
def test_alert_round_trip(
    alert_id: str,
    state: Any,
    severity: Any,
    detector: str,
    signal: str,
    score: float,
    threshold: float,
    ts: int,
    message: str,
) -> None:
    alert = Alert(PATH, alert_id, state, severity, detector, signal, score, threshold, ts, message)

    decoded = decode_an_alert(ALERT_TOPIC, alert.encode())

    assert decoded == Alert(PATH, alert_id, state, severity, detector, signal, round(score, 4), threshold, ts, message)


# --- the nesting check ------------------------------------------------------------------------

BRACKETY_TEXT = st.text(st.sampled_from([*'[]{}"\\\\/:,ab ', "\n", "\u2028", "Ж"]), max_size=8)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), BRACKETY_TEXT),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(BRACKETY_TEXT, children, max_size=3),
    max_leaves=20,
)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


@fuzz(200)
@given(value=JSON_VALUES, ascii_only=st.booleans(), limit=st.integers(0, 6))
def test_the_nesting_check_is_exact_for_json(value: Any, ascii_only: bool, limit: int) -> None:
    payload = json.dumps(value, ensure_ascii=ascii_only).encode()

    assert _nested_deeper_than(payload, limit) == (depth(value) > limit)


# --- the fast JSON path gives exactly the strict parser's answer --------------------------


_json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
_json_doc = st.recursive(
    _json_leaf,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=20,
)


def _outcome(parse: Any, data: bytes) -> tuple[str, Any]:
    try:
        return "ok", parse(data)
    except PayloadError as exc:
        return "rejected", exc.reason


@st.composite
def _json_texts(draw: st.DrawFn) -> bytes:
    text = json.dumps(
        draw(_json_doc),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": "), (",", " : "), (",\n", ":\t")])),
        ensure_ascii=draw(st.booleans()),
    )
    edits = draw(
        st.lists(
            st.tuples(
                st.integers(0, max(0, len(text))),
                st.sampled_from(
                    ['"k":1,', '"k":2,', '\\"', '":', " ", "\n", "[", "]", "{", "}", ",", "\\ud800", "\x00", '"']
                ),
            ),
            max_size=3,
        )
    )
    for where, what in edits:
        text = text[:where] + what + text[where:]
    return text.encode("utf-8", "surrogatepass")


@fuzz(600)
@given(_json_texts() | st.binary(max_size=64))
@example(b'{"a":1,"a":2}')
@example(b'{"a":"x\\":","a":2}')
@example(b'{"a" :1,"a":2}')
@example(b"[" * 65 + b"]" * 65)
@example(b"[" * 64 + b"]" * 64)
@example(b'{"a":"\\ud800"}')
def test_the_fast_json_path_answers_exactly_as_the_strict_parser(data: bytes) -> None:
    fast, strict = _outcome(_payload._json, data), _outcome(_payload._json_strict, data)
    assert fast == strict
