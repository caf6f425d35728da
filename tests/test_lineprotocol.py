"""InfluxDB line protocol: escaping by the reference rules, typed fields, and a round trip
through the real InfluxDB."""

from __future__ import annotations

import math

import pytest

from birlik.influx import InfluxClient, quote_ident
from birlik.lineprotocol import encode_point, escape_key, escape_measurement, format_field, telemetry_lines
from birlik.payload import PayloadError, Value, decode_telemetry, encode_telemetry
from birlik.topics import MachinePath

NOW_MS = 1_763_800_000_000
PATH = MachinePath("sirdaryo-agro", "uz-syrdarya", "juice-1", "pump-302")

# Floats whose shortest repr is exponent notation, very small, very large, or not exact in binary.
TRICKY_FLOATS = [0.1, 1 / 3, 12.0, -2.5, 1e16, 1e-5, 5e-324, 1.7976931348623157e308, 123456.789012345]


# --- escaping -------------------------------------------------------------------------


def test_measurement_escapes_commas_and_spaces_but_not_equals() -> None:
    assert escape_measurement("cpu load,total=1") == r"cpu\ load\,total=1"


def test_keys_escape_commas_equals_and_spaces() -> None:
    assert escape_key("a b,c=d") == r"a\ b\,c\=d"
    assert escape_key("plain-name_1.2") == "plain-name_1.2"


def test_string_field_escapes_quotes_and_backslashes() -> None:
    assert format_field('say "hi" \\ ok') == r'"say \"hi\" \\ ok"'
    assert format_field("a,b=c d") == '"a,b=c d"'  # nothing else needs escaping inside quotes


def test_integers_bools_and_floats() -> None:
    assert format_field(5) == "5i"
    assert format_field(-3) == "-3i"
    assert format_field(True) == "true"  # a bool is an int in Python, not in line protocol
    assert format_field(False) == "false"
    assert format_field(12.0) == "12.0"  # a float stays a float field even when whole


@pytest.mark.parametrize("value", TRICKY_FLOATS)
def test_float_text_round_trips(value: float) -> None:
    assert float(format_field(value)) == value


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_raise(value: float) -> None:
    with pytest.raises(ValueError, match="cannot carry"):
        format_field(value)


def test_point_sorts_tags_omits_empty_ones_and_escapes_everything() -> None:
    line = encode_point(
        "plant metrics",
        {"site": "kz turkestan", "empty": "", "none": None, "a=b": "x,y"},
        {"load pct": 81.5, "count": 3, "note": 'he said "ok"'},
        1000,
    )

    assert line == r'plant\ metrics,a\=b=x\,y,site=kz\ turkestan load\ pct=81.5,count=3i,note="he said \"ok\"" 1000'


def test_point_without_timestamp_and_without_tags() -> None:
    assert encode_point("m", {}, {"v": 1.5}) == "m v=1.5"


def test_point_needs_a_field() -> None:
    with pytest.raises(ValueError, match="field"):
        encode_point("m", {"a": "b"}, {})


def test_telemetry_lines_of_a_decoded_message() -> None:
    payload = encode_telemetry(
        gateway="gw-uz-syrdarya",
        seq=3,
        kind="centrifugal_pump",
        samples=[
            (NOW_MS, {"state": "running", "bearing_temp": 61, "count_good": 7, "energy": 100}),
            (NOW_MS + 5000, {"state": "fault", "vibration_rms": 9.5}),
        ],
    )
    telemetry = decode_telemetry(PATH.topic(), payload, now_ms=NOW_MS)

    lines = list(telemetry_lines(telemetry))

    head = "telemetry,kind=centrifugal_pump,line=juice-1,machine=pump-302,site=uz-syrdarya,tenant=sirdaryo-agro"
    assert lines == [
        f'{head} state="running",bearing_temp=61.0,count_good=7i,energy=100.0 {NOW_MS}',
        f'{head} state="fault",vibration_rms=9.5 {NOW_MS + 5000}',
    ]


def test_telemetry_lines_without_kind_omit_the_tag() -> None:
    payload = encode_telemetry(gateway="gw", seq=1, samples=[(NOW_MS, {"power": 1.0})])
    telemetry = decode_telemetry(PATH.topic(), payload, now_ms=NOW_MS)

    [line] = telemetry_lines(telemetry, measurement="raw data")

    assert line.startswith(r"raw\ data,line=juice-1,")
    assert "kind=" not in line


# --- against the real InfluxDB --------------------------------------------------------

NASTY = [
    "a,b",
    "a b",
    "a=b",
    'say "hi"',
    "back\\slash",
    "a\\,b",
    "mid\\ dle",
    "Türkistan ✓ Сырдарья",
    "x,y=z w",
]


def test_nasty_tags_fields_and_strings_read_back_identical(influx: InfluxClient) -> None:
    measurement = "odd measurement,name"
    lines = []
    for i, text in enumerate(NASTY):
        fields: dict[str, Value | bool] = {"text": text, "odd key, =x": float(i), "n": i, "ok": i % 2 == 0}
        lines.append(encode_point(measurement, {"label": text, "index": str(i)}, fields, NOW_MS + i))
    influx.write(lines)

    [series] = influx.query(f"SELECT * FROM {quote_ident(measurement)}")

    assert series.name == measurement
    rows = sorted(series.records(), key=lambda r: r["n"])
    assert [r["label"] for r in rows] == NASTY
    assert [r["text"] for r in rows] == NASTY
    assert [r["odd key, =x"] for r in rows] == [float(i) for i in range(len(NASTY))]
    assert [r["ok"] for r in rows] == [i % 2 == 0 for i in range(len(NASTY))]
    assert [r["time"] for r in rows] == [NOW_MS + i for i in range(len(NASTY))]


def test_floats_and_ints_read_back_identical(influx: InfluxClient) -> None:
    influx.write(
        encode_point("numbers", {"i": str(i)}, {"x": value, "big": 2**62}, NOW_MS + i)
        for i, value in enumerate(TRICKY_FLOATS)
    )

    [series] = influx.query("SELECT x, big, i FROM numbers")

    rows = sorted(series.records(), key=lambda r: int(r["i"]))
    assert [r["x"] for r in rows] == TRICKY_FLOATS
    assert {r["big"] for r in rows} == {2**62}


def test_kind_ending_in_backslash_does_not_break_the_write(influx: InfluxClient) -> None:
    payload = encode_telemetry(gateway="gw", seq=1, kind="pump\\", samples=[(NOW_MS, {"power": 1.0})])
    try:
        telemetry = decode_telemetry(PATH.topic(), payload, now_ms=NOW_MS)
    except PayloadError:
        return  # refusing such a kind at the door would fix it too

    influx.write(telemetry_lines(telemetry))

    [series] = influx.query("SELECT power, kind FROM telemetry")
    assert series.values == [[NOW_MS, 1.0, "pump\\"]]


def test_newline_in_a_string_field_reads_back_identical(influx: InfluxClient) -> None:
    try:
        line = encode_point("notes", {}, {"text": "line one\nline two"}, NOW_MS)
    except ValueError:
        return  # refusing the value, as for NaN, would fix it too
    influx.write(line)

    [series] = influx.query("SELECT text FROM notes")
    assert series.values == [[NOW_MS, "line one\nline two"]]


def test_float_subclasses_are_written_as_plain_floats() -> None:
    import numpy as np

    from birlik.lineprotocol import format_field

    assert format_field(np.float64(49.839)) == "49.839"
