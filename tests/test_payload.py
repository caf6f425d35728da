"""The MQTT payload contract (schema 1): what a gateway may send, what the ingest keeps,
and why it refuses the rest."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import pytest

from birlik.payload import (
    INT64_MAX,
    MAX_DEPTH,
    MAX_FUTURE_MS,
    MAX_PAYLOAD_BYTES,
    MIN_TS_MS,
    Alert,
    PayloadError,
    Reason,
    Telemetry,
    Value,
    decode_alert,
    decode_telemetry,
    encode_telemetry,
)
from birlik.topics import MachinePath

NOW_MS = 1_763_800_000_000
PATH = MachinePath("ontustik-textile", "kz-turkestan", "utilities-1", "pump-101")
TOPIC = PATH.topic()


def _message(**overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "v": 1,
        "gateway": "gw-kz-turkestan",
        "seq": 7,
        "kind": "centrifugal_pump",
        "units": {"vibration_rms": "mm/s", "bearing_temp": "degC", "count_good": "count", "energy": "kWh"},
        "samples": [{"ts": NOW_MS, "values": {"vibration_rms": 2.31, "bearing_temp": 61.2, "state": "running"}}],
    }
    message.update(overrides)
    return message


def _raw(message: Any) -> bytes:
    return json.dumps(message).encode()


def _decode(message: Any, **kwargs: Any) -> Any:
    return decode_telemetry(TOPIC, _raw(message), now_ms=NOW_MS, **kwargs)


def _reject(payload: bytes, reason: Reason, *, topic: str = TOPIC, **kwargs: Any) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        decode_telemetry(topic, payload, now_ms=NOW_MS, **kwargs)
    error = caught.value
    assert error.reason is reason, error
    assert error.detail, "a rejection must say why, for a person"
    assert str(error).startswith(f"{reason.value}: ")
    return error


# --- round trip -----------------------------------------------------------------------


def test_encode_decode_round_trip_keeps_every_reading_typed() -> None:
    samples: list[tuple[int, dict[str, Value]]] = [
        (NOW_MS - 5000, {"state": "running", "power": 18.5, "energy": 12345.678, "count_good": 10, "speed": 2950}),
        (NOW_MS, {"state": "idle", "power": 0.0, "energy": 12345.7, "count_good": 11, "speed": 0}),
    ]
    payload = encode_telemetry(gateway="gw-kz-turkestan", seq=42, samples=samples, kind="conveyor_drive")

    telemetry = decode_telemetry(TOPIC, payload, now_ms=NOW_MS)

    assert telemetry.path == PATH
    assert (telemetry.gateway, telemetry.seq, telemetry.kind) == ("gw-kz-turkestan", 42, "conveyor_drive")
    assert telemetry.rejections == []
    assert [(s.ts_ms, s.values) for s in telemetry.samples] == samples
    assert telemetry.reading_count == 10
    # Units are declared from the catalogue, for numeric signals only.
    assert json.loads(payload)["units"] == {"power": "kW", "energy": "kWh", "count_good": "count", "speed": "rpm"}


def test_encode_refuses_nan_so_a_bad_value_never_leaves_the_gateway_as_invalid_json() -> None:
    with pytest.raises(ValueError):
        encode_telemetry(gateway="gw", seq=1, samples=[(NOW_MS, {"power": math.nan})])


def test_gauges_become_float_counters_int_totals_float() -> None:
    message = _message(
        units={"bearing_temp": "degC", "count_good": "count", "energy": "kWh"},
        samples=[{"ts": NOW_MS, "values": {"bearing_temp": 12, "count_good": 5.0, "energy": 100}}],
    )

    values = _decode(message).samples[0].values

    assert values == {"bearing_temp": 12.0, "count_good": 5, "energy": 100.0}
    assert type(values["bearing_temp"]) is float
    assert type(values["count_good"]) is int
    assert type(values["energy"]) is float


@pytest.mark.parametrize(("unit", "signal", "value"), [("°C", "bearing_temp", 40.0), ("RPM", "speed", 1450.0)])
def test_unit_aliases_are_accepted(unit: str, signal: str, value: float) -> None:
    message = _message(units={signal: unit}, samples=[{"ts": NOW_MS, "values": {signal: value}}])

    telemetry = _decode(message)

    assert telemetry.rejections == []
    assert telemetry.samples[0].values == {signal: value}


def test_machine_registry_fills_in_the_kind() -> None:
    message = _message()
    del message["kind"]

    assert _decode(message, machines={PATH: "centrifugal_pump"}).kind == "centrifugal_pump"


def test_boot_identity_round_trip() -> None:
    payload = encode_telemetry(gateway="gw-kz-turkestan", boot="b-1763799000", seq=0, samples=[(NOW_MS, GOOD)])

    telemetry = decode_telemetry(TOPIC, payload, now_ms=NOW_MS)

    assert json.loads(payload)["boot"] == "b-1763799000"
    assert telemetry.boot == "b-1763799000"
    assert telemetry.rejections == []


def test_boot_is_optional() -> None:
    payload = encode_telemetry(gateway="gw-kz-turkestan", seq=0, samples=[(NOW_MS, GOOD)])

    assert "boot" not in json.loads(payload)
    assert decode_telemetry(TOPIC, payload, now_ms=NOW_MS).boot is None
    assert _decode(_message(boot=None)).boot is None  # null is absent, as for kind


def test_telemetry_is_still_built_positionally() -> None:
    telemetry = Telemetry(PATH, "gw", 1, None, [])

    assert telemetry.boot is None
    assert telemetry.rejections == []
    assert Telemetry(PATH, "gw", 1, None, [], [], boot="b1").boot == "b1"


# --- message-level rejections ---------------------------------------------------------


def test_not_json() -> None:
    _reject(b"{not json", Reason.NOT_JSON)
    _reject(b"\xff\xfe\x00garbage", Reason.NOT_JSON)


GOOD_MESSAGE = json.dumps(_message())


@pytest.mark.parametrize(
    ("payload", "hint"),
    [
        (b"", "JSON"),
        (b"   ", "JSON"),
        (GOOD_MESSAGE.encode()[:-1], "JSON"),  # truncated
        (GOOD_MESSAGE.encode() + b" x", "JSON"),  # trailing garbage
        (GOOD_MESSAGE.replace('"', "'").encode(), "JSON"),  # single quotes
        (b'{"v":1,}', "JSON"),  # trailing comma
        (b'{"v":1,"gateway":"gw\xff"}', "UTF-8"),  # invalid UTF-8
        (b'{"v":1,"gateway":"\xed\xa0\x80"}', "UTF-8"),  # a surrogate encoded as UTF-8 bytes
        (b'{"v":1,"gateway":"\xc0\xaf"}', "UTF-8"),  # an overlong encoding
        (b"\xef\xbb\xbf" + GOOD_MESSAGE.encode(), "byte-order mark"),
        (GOOD_MESSAGE.encode("utf-16"), "UTF-16"),  # with its byte-order mark
        (GOOD_MESSAGE.encode("utf-16-le"), "UTF-16"),
        (GOOD_MESSAGE.encode("utf-16-be"), "UTF-16"),
        (GOOD_MESSAGE.encode("utf-32"), "UTF-32"),
        (b'{"v":1,"gateway":"gw\x01"}', "JSON"),  # a raw control character inside a string
    ],
)
def test_only_strict_utf8_json_is_read(payload: bytes, hint: str) -> None:
    # Python's json.loads(bytes) would guess UTF-16/32 and skip a byte-order mark; the
    # contract is UTF-8 only, so every device is read the same way by every tool.
    error = _reject(payload, Reason.NOT_JSON)
    assert hint in error.detail


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000,
        b'{"a":' * 40_000 + b"1" + b"}" * 40_000,
        b"[" * 65 + b"]" * 65,  # just over the limit
        # deep junk inside an otherwise good message
        GOOD_MESSAGE.replace('"kind"', '"junk":' + "[" * 70 + "]" * 70 + ',"kind"').encode(),
        GOOD_MESSAGE.replace("2.31", "[" * 70 + "]" * 70).encode(),
    ],
)
def test_nesting_deeper_than_the_limit_is_not_json(payload: bytes) -> None:
    error = _reject(payload, Reason.NOT_JSON)
    assert f"nested more than {MAX_DEPTH} levels" in error.detail


def test_nesting_up_to_the_limit_is_read() -> None:
    # The message is 4 levels deep; its value adds MAX_DEPTH - 4 more: exactly the limit.
    deep = "[" * (MAX_DEPTH - 4) + "]" * (MAX_DEPTH - 4)
    telemetry = decode_telemetry(TOPIC, GOOD_MESSAGE.replace("2.31", deep).encode(), now_ms=NOW_MS)

    [rejection] = telemetry.rejections
    assert (rejection.reason, rejection.signal) == (Reason.WRONG_TYPE, "vibration_rms")


def test_brackets_and_escapes_inside_strings_do_not_count_as_nesting() -> None:
    text = "[{" * 100 + '\\"\\' + '\\"' + "]}" * 3
    message = _message(samples=[{"ts": NOW_MS, "values": {"vibration_rms": 2.31, "state": text, text: 1}}])

    telemetry = _decode(message)

    assert [s.values for s in telemetry.samples] == [GOOD]
    assert [(r.reason, r.signal) for r in telemetry.rejections] == [
        (Reason.UNKNOWN_STATE, "state"),
        (Reason.UNKNOWN_SIGNAL, text),
    ]


@pytest.mark.parametrize(
    "payload",
    [
        b'{"v":1,"v":2,"gateway":"gw","seq":1,"units":{},"samples":[{}]}',
        b'{"v":1,"\\u0076":1,"gateway":"gw","seq":1,"units":{},"samples":[{}]}',  # the same key, escaped
        b'{"v":1,"gateway":"gw","seq":1,"units":{"power":"kW","power":"W"},"samples":[{}]}',
        b'{"v":1,"gateway":"gw","seq":1,"units":{},"samples":[{"ts":1,"ts":2,"values":{}}]}',
        b'{"v":1,"gateway":"gw","seq":1,"units":{"bearing_temp":"degC"},'
        b'"samples":[{"ts":%d,"values":{"bearing_temp":60.1,"bearing_temp":99.9}}]}' % NOW_MS,
        b'{"v":1,"gateway":"gw","seq":1,"units":{},"samples":[{}],"junk":[[{"a":1,"a":1}]]}',
    ],
)
def test_duplicate_keys_reject_the_message(payload: bytes) -> None:
    # Readers disagree on which of two equal keys counts: refuse to guess.
    error = _reject(payload, Reason.DUPLICATE_KEY)
    assert "more than once" in error.detail


@pytest.mark.parametrize("body", [[1, 2], "text", 42, None])
def test_not_object(body: Any) -> None:
    error = _reject(_raw(body), Reason.NOT_OBJECT)
    assert "object" in error.detail


def test_oversized() -> None:
    error = _reject(_raw(_message()), Reason.OVERSIZED, max_bytes=50)
    assert "50" in error.detail


@pytest.mark.parametrize("payload", [b"[" * 300_000, b"\xff" * 300_000, b" " * 300_000])
def test_size_is_checked_before_anything_is_parsed(payload: bytes) -> None:
    _reject(payload, Reason.OVERSIZED)
    _reject(payload, Reason.OVERSIZED, topic="not a topic")


def test_too_many_samples_is_oversized() -> None:
    samples = [{"ts": NOW_MS, "values": {}}] * 10_001
    _reject(_raw(_message(samples=samples)), Reason.OVERSIZED)


@pytest.mark.parametrize("field", ["v", "gateway", "seq", "units", "samples"])
def test_missing_field(field: str) -> None:
    message = _message()
    del message[field]

    error = _reject(_raw(message), Reason.MISSING_FIELD)

    assert repr(field) in error.detail


def test_empty_samples_is_a_missing_field() -> None:
    _reject(_raw(_message(samples=[])), Reason.MISSING_FIELD)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("v", "1"),
        ("v", True),  # a bool is an int in Python, not in the schema
        ("gateway", 12),
        ("gateway", "GW Turkestan"),  # not a valid name
        ("seq", "7"),
        ("seq", 7.0),
        ("seq", False),
        ("seq", -1),
        ("seq", 2**63),  # beyond a signed 64-bit integer
        ("seq", 10**400),
        ("seq", None),
        ("units", ["mm/s"]),
        ("units", "mm/s"),
        ("samples", {"ts": NOW_MS}),
        ("samples", "[]"),
        ("kind", 3),
        ("kind", ["pump"]),
        # Names reach InfluxDB tags and logs: only the topic-level alphabet is accepted.
        ("gateway", ""),
        ("gateway", "gw\n"),
        ("gateway", "gw\x00"),
        ("gateway", "gw-\ud800"),  # a lone surrogate, from the JSON escape
        ("gateway", "gw," * 30),
        ("gateway", "g" * 65),
        ("gateway", "g" * 100_000),
        ("kind", "pump\\"),
        ("kind", "pump\nfake"),
        ("kind", "pump kind"),
        ("kind", "Pump"),
        ("kind", "\u200bpump"),
        ("boot", 17),
        ("boot", True),
        ("boot", ""),
        ("boot", "Boot-1"),
        ("boot", "b" * 65),
        ("boot", "b\r1"),
        ("boot", {"id": "b1"}),
    ],
)
def test_wrong_type(field: str, value: Any) -> None:
    error = _reject(_raw(_message(**{field: value})), Reason.WRONG_TYPE)
    assert field in error.detail


@pytest.mark.parametrize("version", [0, 2])
def test_unsupported_version(version: int) -> None:
    error = _reject(_raw(_message(v=version)), Reason.UNSUPPORTED_VERSION)
    assert str(version) in error.detail


@pytest.mark.parametrize(
    "topic",
    [
        PATH.topic("alert"),  # analytics' channel, not telemetry
        "birlik/ontustik-textile/kz-turkestan/utilities-1/telemetry",  # one level short
        "birlik/ontustik-textile/kz-turkestan/utilities-1/pump-101/x/telemetry",  # one level too many
        "factory/ontustik-textile/kz-turkestan/utilities-1/pump-101/telemetry",  # wrong root
        "birlik/ontustik-textile/kz-turkestan/utilities-1/Pump 101/telemetry",  # bad machine name
        "birlik/ontustik-textile/kz-turkestan/utilities-1/pump-101/status",  # unknown channel
    ],
)
def test_bad_topic(topic: str) -> None:
    error = _reject(_raw(_message()), Reason.BAD_TOPIC, topic=topic)
    assert "topic" in error.detail or "name" in error.detail


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "/",
        "\x00",
        "birlik",
        "birlik/+/kz-turkestan/utilities-1/pump-101/telemetry",
        "birlik/#",
        "birlik/ontustik-textile/kz-turkestan/utilities-1/#/telemetry",
        "birlik/ontustik-textile/kz-turkestan/utilities-1/pump\x00101/telemetry",
        "birlik/ontustik-textile/kz-turkestan/utilities-1/pump-101/telemetry\n",
        "birlik/ontustik-textile/kz-turkestan/utilities-1/pump-101/telemetry/",
        "/birlik/ontustik-textile/kz-turkestan/utilities-1/pump-101/telemetry",
        "birlik/ontustik-textile//utilities-1/pump-101/telemetry",
        "birlik/öntüstik/kz-turkestan/utilities-1/pump-101/telemetry",
        "birlik/ontustik-textile/kz-turkestan/utilities-1/\ud800/telemetry",
        "birlik/" + "a" * 65 + "/kz-turkestan/utilities-1/pump-101/telemetry",
        "birlik/" + "/".join(["a" * 64] * 4) + "/telemetry/" + "x" * 100_000,
        "x" * 1_000_000,
    ],
)
def test_any_text_is_a_topic_or_a_bad_topic(topic: str) -> None:
    error = _reject(_raw(_message()), Reason.BAD_TOPIC, topic=topic)
    assert len(error.detail) < 1000
    assert "\n" not in error.detail


def test_unknown_machine() -> None:
    other = MachinePath("ontustik-textile", "kz-turkestan", "utilities-1", "pump-999")
    error = _reject(_raw(_message()), Reason.UNKNOWN_MACHINE, machines={other: "centrifugal_pump"})
    assert str(PATH) in error.detail


def test_kind_mismatch() -> None:
    error = _reject(_raw(_message(kind="air_compressor")), Reason.KIND_MISMATCH, machines={PATH: "centrifugal_pump"})
    assert "centrifugal_pump" in error.detail
    assert "air_compressor" in error.detail


# --- reading-level rejections ---------------------------------------------------------


GOOD = {"vibration_rms": 2.31}


@pytest.mark.parametrize(
    ("units", "bad", "reason"),
    [
        ({}, {"wobble": 1.0}, Reason.UNKNOWN_SIGNAL),
        ({}, {"bearing_temp": 60.0}, Reason.MISSING_UNIT),
        ({"bearing_temp": "degF"}, {"bearing_temp": 140.0}, Reason.WRONG_UNIT),
        ({"bearing_temp": 1}, {"bearing_temp": 60.0}, Reason.WRONG_UNIT),
        ({"bearing_temp": "degC"}, {"bearing_temp": 301.0}, Reason.OUT_OF_RANGE),
        ({"bearing_temp": "degC"}, {"bearing_temp": -50.5}, Reason.OUT_OF_RANGE),
        ({"power": "kW"}, {"power": -0.1}, Reason.OUT_OF_RANGE),
        ({"count_good": "count"}, {"count_good": 10.5}, Reason.WRONG_TYPE),
        ({"power": "kW"}, {"power": "12"}, Reason.WRONG_TYPE),
        ({"power": "kW"}, {"power": True}, Reason.WRONG_TYPE),
        ({"power": "kW"}, {"power": None}, Reason.WRONG_TYPE),
        ({}, {"state": 1}, Reason.WRONG_TYPE),
        ({}, {"state": None}, Reason.WRONG_TYPE),
        ({}, {"state": ["running"]}, Reason.WRONG_TYPE),
        # A state is one of the catalogue's, spelled exactly: anything else never reaches the database.
        ({}, {"state": ""}, Reason.UNKNOWN_STATE),
        ({}, {"state": "x" * 65}, Reason.UNKNOWN_STATE),
        ({}, {"state": "Running"}, Reason.UNKNOWN_STATE),
        ({}, {"state": "running "}, Reason.UNKNOWN_STATE),
        ({}, {"state": "running\nfake,tenant=x power=1"}, Reason.UNKNOWN_STATE),
        ({}, {"state": "\ud800"}, Reason.UNKNOWN_STATE),  # a lone surrogate, from the JSON escape
        ({}, {"state": "idle\x00"}, Reason.UNKNOWN_STATE),
        # Huge numbers are compared exactly, never turned into a float first.
        ({"power": "kW"}, {"power": 10**400}, Reason.OUT_OF_RANGE),
        ({"power": "kW"}, {"power": -(10**400)}, Reason.OUT_OF_RANGE),
        ({"count_good": "count"}, {"count_good": 2**63}, Reason.OUT_OF_RANGE),
        ({"count_good": "count"}, {"count_good": -1}, Reason.OUT_OF_RANGE),
        ({"power": "kW"}, {"power": [1.0]}, Reason.WRONG_TYPE),
        ({"power": "kW"}, {"power": {"value": 1.0}}, Reason.WRONG_TYPE),
        ({"bearing_temp": ["degC"]}, {"bearing_temp": 60.0}, Reason.WRONG_UNIT),
        ({"bearing_temp": None}, {"bearing_temp": 60.0}, Reason.MISSING_UNIT),
        ({}, {"": 1.0}, Reason.UNKNOWN_SIGNAL),
        ({}, {"power,tenant=x": 1.0}, Reason.UNKNOWN_SIGNAL),
        ({}, {"power\n": 1.0}, Reason.UNKNOWN_SIGNAL),
        ({}, {"\ud800": 1.0}, Reason.UNKNOWN_SIGNAL),
        ({}, {"POWER": 1.0}, Reason.UNKNOWN_SIGNAL),
    ],
)
def test_bad_reading_is_rejected_and_the_rest_kept(units: dict[str, Any], bad: dict[str, Any], reason: Reason) -> None:
    message = _message(units={"vibration_rms": "mm/s", **units}, samples=[{"ts": NOW_MS, "values": {**GOOD, **bad}}])

    telemetry = _decode(message)

    assert [s.values for s in telemetry.samples] == [GOOD]
    [rejection] = telemetry.rejections
    assert rejection.reason is reason
    [(name, value)] = bad.items()
    assert (rejection.signal, rejection.value, rejection.ts_ms) == (name, value, NOW_MS)
    assert name in rejection.detail or repr(name) in rejection.detail
    # The sentence is safe to log: device text in it is escaped.
    assert "\n" not in rejection.detail
    rejection.detail.encode()


def _with_power(token: bytes) -> bytes:
    """A message whose power reading is the raw JSON text ``token``."""
    return (
        b'{"v":1,"gateway":"gw","seq":1,"units":{"power":"kW","vibration_rms":"mm/s"},'
        b'"samples":[{"ts":%d,"values":{"vibration_rms":2.31,"power":%s}}]}' % (NOW_MS, token)
    )


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_json_number_tokens_reject_the_message(token: bytes) -> None:
    # Python's json (and many device stacks) write these tokens, but they are not JSON.
    error = _reject(_with_power(token), Reason.NOT_JSON)
    assert token.decode() in error.detail


@pytest.mark.parametrize("token", [b"1e400", b"-1e400", b"1" + b"0" * 400, b"1" + b"0" * 400 + b".5"])
def test_numbers_beyond_a_float_are_out_of_range(token: bytes) -> None:
    telemetry = decode_telemetry(TOPIC, _with_power(token), now_ms=NOW_MS)

    assert [s.values for s in telemetry.samples] == [GOOD]
    [rejection] = telemetry.rejections
    assert (rejection.reason, rejection.signal) == (Reason.OUT_OF_RANGE, "power")
    assert len(rejection.detail) < 200  # the number is shortened, not printed in full


def test_an_integer_beyond_the_parsers_digit_limit_is_not_json() -> None:
    digits = sys.get_int_max_str_digits() or 4300
    _reject(_with_power(b"1" * (digits + 1)), Reason.NOT_JSON)


@pytest.mark.parametrize(
    "ts",
    [
        MIN_TS_MS - 1,  # before 2000
        NOW_MS + MAX_FUTURE_MS + 1,  # a clock set a day ahead
        str(NOW_MS),
        float(NOW_MS),
        True,
        None,
        -1,
        10**400,
        2**63,
        [NOW_MS],
        {"ms": NOW_MS},
        "",
    ],
)
def test_bad_timestamp_rejects_the_sample_not_the_message(ts: Any) -> None:
    message = _message(
        samples=[
            {"ts": ts, "values": {"vibration_rms": 9.0, "state": "fault"}},
            {"ts": NOW_MS, "values": GOOD},
        ]
    )

    telemetry = _decode(message)

    assert [(s.ts_ms, s.values) for s in telemetry.samples] == [(NOW_MS, GOOD)]
    assert {(r.reason, r.signal) for r in telemetry.rejections} == {
        (Reason.BAD_TIMESTAMP, "vibration_rms"),
        (Reason.BAD_TIMESTAMP, "state"),
    }


def test_timestamp_limits_are_inclusive() -> None:
    message = _message(samples=[{"ts": MIN_TS_MS, "values": GOOD}, {"ts": NOW_MS + MAX_FUTURE_MS, "values": GOOD}])

    telemetry = _decode(message)

    assert telemetry.rejections == []
    assert [s.ts_ms for s in telemetry.samples] == [MIN_TS_MS, NOW_MS + MAX_FUTURE_MS]


def test_malformed_samples_are_rejected_individually() -> None:
    message = _message(samples=["oops", {"ts": NOW_MS}, {"ts": NOW_MS, "values": GOOD}])

    telemetry = _decode(message)

    assert [s.values for s in telemetry.samples] == [GOOD]
    assert [r.reason for r in telemetry.rejections] == [Reason.WRONG_TYPE, Reason.MISSING_FIELD]
    assert "samples[0]" in telemetry.rejections[0].detail
    assert "samples[1]" in telemetry.rejections[1].detail


def test_values_of_the_wrong_type_reject_the_sample() -> None:
    message = _message(
        samples=[
            {"ts": NOW_MS, "values": [2.31]},
            {"ts": NOW_MS, "values": "vibration_rms=2.31"},
            {"ts": NOW_MS, "values": None},
            [NOW_MS, GOOD],
            {"ts": NOW_MS, "values": GOOD},
        ]
    )

    telemetry = _decode(message)

    assert [s.values for s in telemetry.samples] == [GOOD]
    assert [(r.reason, r.signal) for r in telemetry.rejections] == [
        (Reason.WRONG_TYPE, None),
        (Reason.WRONG_TYPE, None),
        (Reason.MISSING_FIELD, None),
        (Reason.WRONG_TYPE, None),
    ]


def test_a_repeated_timestamp_rejects_the_later_samples() -> None:
    # The database keys a point by its time: the second would silently overwrite the first.
    message = _message(
        samples=[
            {"ts": NOW_MS, "values": {"vibration_rms": 2.31, "state": "running"}},
            {"ts": NOW_MS + 1, "values": {"vibration_rms": 2.4}},
            {"ts": NOW_MS, "values": {"vibration_rms": 9.9, "bearing_temp": 70.0}},
            {"ts": NOW_MS + 1, "values": {"state": "fault"}},
        ]
    )

    telemetry = _decode(message)

    assert [(s.ts_ms, s.values) for s in telemetry.samples] == [
        (NOW_MS, {"vibration_rms": 2.31, "state": "running"}),
        (NOW_MS + 1, {"vibration_rms": 2.4}),
    ]
    assert [(r.reason, r.signal, r.value, r.ts_ms) for r in telemetry.rejections] == [
        (Reason.DUPLICATE_TIMESTAMP, "vibration_rms", 9.9, NOW_MS),
        (Reason.DUPLICATE_TIMESTAMP, "bearing_temp", 70.0, NOW_MS),
        (Reason.DUPLICATE_TIMESTAMP, "state", "fault", NOW_MS + 1),
    ]
    assert "samples[2]" in telemetry.rejections[0].detail


def test_a_timestamp_counts_as_used_even_when_its_readings_were_rejected() -> None:
    # Simple and predictable: the first sample with a timestamp owns it.
    message = _message(samples=[{"ts": NOW_MS, "values": {"wobble": 1}}, {"ts": NOW_MS, "values": GOOD}])

    telemetry = _decode(message)

    assert telemetry.samples == []
    assert [r.reason for r in telemetry.rejections] == [Reason.UNKNOWN_SIGNAL, Reason.DUPLICATE_TIMESTAMP]


def test_a_sample_with_a_bad_timestamp_does_not_use_up_a_timestamp() -> None:
    message = _message(samples=[{"ts": str(NOW_MS), "values": GOOD}, {"ts": NOW_MS, "values": GOOD}])

    telemetry = _decode(message)

    assert [(s.ts_ms, s.values) for s in telemetry.samples] == [(NOW_MS, GOOD)]
    assert [r.reason for r in telemetry.rejections] == [Reason.BAD_TIMESTAMP]


def test_seq_limits_are_those_of_a_signed_64_bit_integer() -> None:
    assert _decode(_message(seq=0)).seq == 0
    assert _decode(_message(seq=INT64_MAX)).seq == INT64_MAX


def test_counter_limits_fit_influxdb_integers() -> None:
    message = _message(samples=[{"ts": NOW_MS, "values": {"count_good": 10**15}}])

    [sample] = _decode(message).samples

    assert sample.values == {"count_good": 10**15}
    assert type(sample.values["count_good"]) is int
    assert sample.values["count_good"] <= INT64_MAX


def test_a_sample_with_only_bad_readings_is_dropped() -> None:
    message = _message(samples=[{"ts": NOW_MS, "values": {"wobble": 1}}, {"ts": NOW_MS + 1, "values": GOOD}])

    telemetry = _decode(message)

    assert [s.ts_ms for s in telemetry.samples] == [NOW_MS + 1]
    assert telemetry.reading_count == 1


# --- alerts ---------------------------------------------------------------------------


def _alert(**overrides: Any) -> Alert:
    fields: dict[str, Any] = {
        "path": PATH,
        "alert_id": "pump-101-1763800000000",
        "state": "raised",
        "severity": "critical",
        "detector": "zscore",
        "signal": "bearing_temp",
        "score": 13.25,
        "threshold": 6.0,
        "ts_ms": NOW_MS,
        "message": 'pump-101: bearing_temp "abnormal" for 5 samples',
    }
    fields.update(overrides)
    return Alert(**fields)


def test_alert_round_trip() -> None:
    alert = _alert()

    assert decode_alert(PATH.topic("alert"), alert.encode()) == alert


def test_alert_score_is_rounded_on_the_wire() -> None:
    decoded = decode_alert(PATH.topic("alert"), _alert(score=7.123456789).encode())

    assert decoded.score == 7.1235


def test_alert_on_telemetry_topic_is_a_bad_topic() -> None:
    with pytest.raises(PayloadError) as caught:
        decode_alert(TOPIC, _alert().encode())
    assert caught.value.reason is Reason.BAD_TOPIC


@pytest.mark.parametrize(("field", "value"), [("state", "exploded"), ("severity", "catastrophic")])
def test_alert_with_unknown_state_or_severity_is_rejected(field: str, value: str) -> None:
    message = json.loads(_alert().encode())
    message[field] = value

    with pytest.raises(PayloadError):
        decode_alert(PATH.topic("alert"), _raw(message))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b"nope", Reason.NOT_JSON), (b"[]", Reason.NOT_OBJECT), (b'{"id": "x"}', Reason.MISSING_FIELD)],
)
def test_bad_alert_payload(payload: bytes, reason: Reason) -> None:
    with pytest.raises(PayloadError) as caught:
        decode_alert(PATH.topic("alert"), payload)
    assert caught.value.reason is reason


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", 17),
        ("id", None),
        ("detector", ["zscore"]),
        ("signal", {"name": "bearing_temp"}),
        ("message", False),
        ("score", "13.25"),
        ("score", True),
        ("score", None),
        ("score", 10**400),  # beyond any float
        ("threshold", [6.0]),
        ("ts", float(NOW_MS)),
        ("ts", str(NOW_MS)),
        ("ts", True),
        ("ts", 2**63),
        ("ts", 10**400),
        ("state", ["raised"]),
        ("state", {"raised": True}),
        ("severity", None),
    ],
)
def test_alert_of_the_wrong_type_is_rejected(field: str, value: Any) -> None:
    message = json.loads(_alert().encode())
    message[field] = value

    with pytest.raises(PayloadError) as caught:
        decode_alert(PATH.topic("alert"), _raw(message))

    assert caught.value.reason is Reason.WRONG_TYPE
    assert field in caught.value.detail


@pytest.mark.parametrize("version", [2, "1", True, None])
def test_alert_of_another_version_is_rejected(version: Any) -> None:
    message = json.loads(_alert().encode())
    message["v"] = version

    with pytest.raises(PayloadError) as caught:
        decode_alert(PATH.topic("alert"), _raw(message))

    assert caught.value.reason is Reason.UNSUPPORTED_VERSION


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[" * 100_000, Reason.NOT_JSON),
        (b'{"id":' * 40_000, Reason.NOT_JSON),
        (b"\xef\xbb\xbf{}", Reason.NOT_JSON),
        (b"\xff\xfe{\x00}\x00", Reason.NOT_JSON),
        (b'{"score": NaN}', Reason.NOT_JSON),
        (b'{"id": "a", "id": "b"}', Reason.DUPLICATE_KEY),
        (b" " * (MAX_PAYLOAD_BYTES + 1), Reason.OVERSIZED),
    ],
)
def test_alert_payloads_are_read_as_strictly_as_telemetry(payload: bytes, reason: Reason) -> None:
    with pytest.raises(PayloadError) as caught:
        decode_alert(PATH.topic("alert"), payload)
    assert caught.value.reason is reason


def test_alert_score_beyond_a_float_is_rejected() -> None:
    payload = _alert().encode().replace(b'"score":13.25', b'"score":1e400')

    with pytest.raises(PayloadError) as caught:
        decode_alert(PATH.topic("alert"), payload)
    assert caught.value.reason is Reason.WRONG_TYPE


@pytest.mark.parametrize("topic", ["", "\x00", "birlik/+/a/b/c/alert", "x" * 1_000_000, "birlik/a/b/c/\ud800/alert"])
def test_alert_on_any_bad_topic_is_a_bad_topic(topic: str) -> None:
    with pytest.raises(PayloadError) as caught:
        decode_alert(topic, _alert().encode())
    assert caught.value.reason is Reason.BAD_TOPIC
