"""The MQTT payload contract (schema 1): what a gateway may send, what the ingest keeps,
and why it refuses the rest."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from birlik.payload import (
    MAX_FUTURE_MS,
    MIN_TS_MS,
    Alert,
    PayloadError,
    Reason,
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


# --- message-level rejections ---------------------------------------------------------


def test_not_json() -> None:
    _reject(b"{not json", Reason.NOT_JSON)
    _reject(b"\xff\xfe\x00garbage", Reason.NOT_JSON)


@pytest.mark.parametrize("body", [[1, 2], "text", 42, None])
def test_not_object(body: Any) -> None:
    error = _reject(_raw(body), Reason.NOT_OBJECT)
    assert "object" in error.detail


def test_oversized() -> None:
    error = _reject(_raw(_message()), Reason.OVERSIZED, max_bytes=50)
    assert "50" in error.detail


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
        ("units", ["mm/s"]),
        ("samples", {"ts": NOW_MS}),
        ("kind", 3),
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
        ({}, {"state": ""}, Reason.WRONG_TYPE),
        ({}, {"state": "x" * 65}, Reason.WRONG_TYPE),
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
    assert name in rejection.detail


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_out_of_range(token: str) -> None:
    # Python's json (and many device stacks) write these non-standard tokens.
    payload = (
        b'{"v":1,"gateway":"gw","seq":1,"units":{"power":"kW","vibration_rms":"mm/s"},'
        b'"samples":[{"ts":%d,"values":{"vibration_rms":2.31,"power":%s}}]}' % (NOW_MS, token.encode())
    )

    telemetry = decode_telemetry(TOPIC, payload, now_ms=NOW_MS)

    assert [s.values for s in telemetry.samples] == [GOOD]
    assert [(r.reason, r.signal) for r in telemetry.rejections] == [(Reason.OUT_OF_RANGE, "power")]


@pytest.mark.parametrize(
    "ts",
    [
        MIN_TS_MS - 1,  # before 2000
        NOW_MS + MAX_FUTURE_MS + 1,  # a clock set a day ahead
        str(NOW_MS),
        float(NOW_MS),
        True,
        None,
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
