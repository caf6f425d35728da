"""Dead letters: bounded on disk (rotation), bounded in the log (one line per reason per
interval), durable on request (sync), and never failing on what a device sends."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from birlik.payload import Reason, Rejection
from ingest.deadletters import DeadLetters, load, rotated_files

PAYLOAD = b'{"v": 1, "gateway": "gw-1", "seq": "not a number"}'


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _reject(dead: DeadLetters, i: int, reason: str = "wrong_type") -> None:
    dead.message(f"birlik/t/s/l/m{i:05d}/telemetry", PAYLOAD, reason, f"seq must be an integer (message {i:05d})")


def _line_size(tmp_path: Path) -> int:
    probe = DeadLetters(tmp_path / "probe.jsonl")
    _reject(probe, 0)
    probe.close()
    return (tmp_path / "probe.jsonl").stat().st_size


# --- rotation ---------------------------------------------------------------------------


def test_rotation_bounds_each_file_and_keeps_the_newest(tmp_path: Path) -> None:
    size = _line_size(tmp_path)  # every entry below has the same size
    path = tmp_path / "dead-letters.jsonl"
    dead = DeadLetters(path, max_bytes=10 * size, keep=3)
    for i in range(65):
        _reject(dead, i)
    dead.close()

    # 10 entries per file: 6 full files were started before the 7th (5 entries) -> 6 rotations.
    assert dead.rotations == 6
    names = sorted(p.name for p in tmp_path.glob("dead-letters.jsonl*"))
    assert names == ["dead-letters.jsonl", "dead-letters.jsonl.1", "dead-letters.jsonl.2", "dead-letters.jsonl.3"]
    for p in tmp_path.glob("dead-letters.jsonl*"):
        assert p.stat().st_size <= 10 * size, p
    assert [p.name for p in rotated_files(path)] == [
        "dead-letters.jsonl.3",
        "dead-letters.jsonl.2",
        "dead-letters.jsonl.1",
    ]
    # The current file has the newest entries; .1 the 10 before them, and so on; the oldest
    # files (entries 0-29) were deleted.
    assert [e["topic"] for e in load(path)] == [f"birlik/t/s/l/m{i:05d}/telemetry" for i in range(60, 65)]
    assert [e["topic"] for e in load(dead.rotated_path(1))] == [
        f"birlik/t/s/l/m{i:05d}/telemetry" for i in range(50, 60)
    ]
    everything = load(path, include_rotated=True)
    assert [e["topic"] for e in everything] == [f"birlik/t/s/l/m{i:05d}/telemetry" for i in range(30, 65)]
    # The counters count everything, rotated away or not.
    assert dead.messages["wrong_type"] == 65


def test_default_limits_and_load_without_rotated_files(tmp_path: Path) -> None:
    dead = DeadLetters(tmp_path / "d.jsonl")
    assert dead.max_bytes == 100 * 1024 * 1024 and dead.keep == 5
    _reject(dead, 1)
    dead.close()
    assert len(load(tmp_path / "d.jsonl")) == len(load(tmp_path / "d.jsonl", include_rotated=True)) == 1
    assert load(tmp_path / "missing.jsonl") == [] == load(tmp_path / "missing.jsonl", include_rotated=True)


def test_an_oversized_file_from_an_earlier_run_is_rotated_at_the_first_write(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"reason": "old", "detail": "x" * 500}) + "\n")
    dead = DeadLetters(path, max_bytes=400, keep=2)
    _reject(dead, 1)
    dead.close()
    assert dead.rotations == 1
    assert [e["reason"] for e in load(path, include_rotated=True)] == ["old", "wrong_type"]
    assert [e["reason"] for e in load(path)] == ["wrong_type"]


def test_keep_zero_starts_over_without_older_files(tmp_path: Path) -> None:
    size = _line_size(tmp_path)
    path = tmp_path / "d.jsonl"
    dead = DeadLetters(path, max_bytes=2 * size, keep=0)
    for i in range(5):
        _reject(dead, i)
    dead.close()
    assert dead.rotations == 2
    assert rotated_files(path) == []
    assert len(load(path)) == 1


def test_an_entry_larger_than_max_bytes_is_still_written_whole(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    dead = DeadLetters(path, max_bytes=100, keep=1)
    _reject(dead, 1)
    _reject(dead, 2)
    dead.close()
    assert dead.rotations == 1
    assert [e["topic"] for e in load(path, include_rotated=True)] == [
        "birlik/t/s/l/m00001/telemetry",
        "birlik/t/s/l/m00002/telemetry",
    ]


def test_bad_limits_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        DeadLetters(tmp_path / "d.jsonl", max_bytes=0)
    with pytest.raises(ValueError, match="keep"):
        DeadLetters(tmp_path / "d.jsonl", keep=-1)


# --- rate-limited log -------------------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "ingest.deadletters"]


def test_a_flood_of_rejections_logs_one_line_per_reason_per_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest.deadletters")
    clock = FakeClock()
    path = tmp_path / "d.jsonl"
    dead = DeadLetters(path, clock=clock, log_interval_s=10)
    example = "e.g. seq must be an integer (message {:05d}); kept in " + str(path)

    _reject(dead, 0, "not_json")  # the first of its reason: said at once
    assert _warnings(caplog) == ["rejected 1 message for not_json in the last 10 s, " + example.format(0)]
    for i in range(1, 1001):  # a flood over 9 s: nothing more in the log
        clock.now += 0.009
        _reject(dead, i, "not_json")
    dead.flush()
    assert len(_warnings(caplog)) == 1
    assert len(load(path)) == 1001  # the file has them all

    clock.now = 1010.0  # the interval is over: the next rejection (or flush) says how many
    dead.reading("birlik/t/s/l/m/telemetry", Rejection(reason=Reason.WRONG_UNIT, detail="bearing_temp in degF"))
    assert _warnings(caplog)[1:] == [
        "rejected 1,000 messages for not_json in the last 10 s, " + example.format(1),
        f"rejected 1 reading for wrong_unit in the last 10 s, e.g. bearing_temp in degF; kept in {path}",
    ]
    # Points the database refused count as their readings.
    dead.lines(["telemetry,machine=m v=1i 1"], Reason.DB_REJECTED, "field type conflict", readings=3)
    assert _warnings(caplog)[3:] == [
        f"rejected 3 readings for db_rejected in the last 10 s, e.g. field type conflict; kept in {path}"
    ]

    clock.now = 1025.0
    dead.flush()  # nothing new since the last lines: nothing logged, the reasons are forgotten
    assert len(_warnings(caplog)) == 4
    _reject(dead, 5000, "not_json")  # so the next one is said at once again
    assert _warnings(caplog)[4:] == ["rejected 1 message for not_json in the last 10 s, " + example.format(5000)]
    dead.close()


def test_pending_counts_are_logged_by_flush_once_due(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ingest.deadletters")
    clock = FakeClock()
    dead = DeadLetters(tmp_path / "d.jsonl", clock=clock)
    for i in range(3):
        _reject(dead, i, "bad_topic")
    assert len(_warnings(caplog)) == 1
    clock.now += 9.9
    dead.flush()
    assert len(_warnings(caplog)) == 1
    clock.now += 30  # no rejection since: the ingest's periodic flush() says it
    dead.flush()
    assert _warnings(caplog)[1].startswith("rejected 2 messages for bad_topic in the last 40 s, e.g. ")
    dead.close()


def test_close_logs_what_is_still_pending(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ingest.deadletters")
    clock = FakeClock()
    dead = DeadLetters(tmp_path / "d.jsonl", clock=clock)
    _reject(dead, 0, "oversized")
    clock.now += 3
    _reject(dead, 1, "oversized")
    _reject(dead, 2, "oversized")
    dead.close()
    assert len(_warnings(caplog)) == 2
    assert _warnings(caplog)[1].startswith("rejected 2 messages for oversized in the last 3 s, e.g. ")
    dead.close()  # twice is harmless


def test_a_log_line_stays_one_line_and_short(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ingest.deadletters")
    dead = DeadLetters(tmp_path / "d.jsonl")
    dead.message("t", b"", "not_json", "line one\nline two \udcff" + "x" * 1000)
    dead.close()
    [line] = _warnings(caplog)
    assert "\n" not in line and "line one\\nline two \\udcff" in line
    assert "x" * 300 not in line and "x..." in line
    line.encode("utf-8")  # no lone surrogate reaches a log handler


# --- sync -------------------------------------------------------------------------------


def test_sync_flushes_and_fsyncs_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d.jsonl"
    dead = DeadLetters(path)
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    _reject(dead, 1)
    assert path.read_bytes() == b""  # buffered in the process
    dead.sync()
    assert synced == [dead._file.fileno()]
    assert len(load(path)) == 1  # on disk for another reader
    dead.close()


def test_rotation_syncs_the_old_file_before_renaming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    size = _line_size(tmp_path)
    path = tmp_path / "d.jsonl"
    dead = DeadLetters(path, max_bytes=size, keep=1)
    _reject(dead, 1)
    old_fd = dead._file.fileno()
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    _reject(dead, 2)  # rotates
    assert old_fd in synced
    dead.close()


# --- whatever a device sends ------------------------------------------------------------

# Topic text with every kind of character, lone surrogates included (a decoder's
# surrogateescape, or a broken client library, can hand those over).
_ANY_TEXT = st.text(alphabet=st.one_of(st.characters(), st.characters(categories=["Cs"])), max_size=60)
_JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), _ANY_TEXT)


def _strict_json(line: str) -> Any:
    """Parse ``line`` as strict JSON: no NaN/Infinity, no lone surrogate escapes."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    value = json.loads(line, parse_constant=refuse)

    def walk(v: Any) -> None:
        if isinstance(v, str):
            v.encode("utf-8")  # raises on a lone surrogate
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(k)
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(value)
    return value


def _as_written(text: str) -> str:
    """Text as the dead letters keep it: itself, or with lone surrogates backslash-escaped."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _last_line(path: Path) -> str:
    return path.read_bytes().decode("ascii").splitlines()[-1]


@settings(max_examples=150, deadline=None)
@given(topic=_ANY_TEXT, payload=st.binary(max_size=2048), reason=_ANY_TEXT, detail=_ANY_TEXT)
@example(topic="birlik/\u00e9\ud800/x", payload=b"\xff\xfe{", reason="r\udcff", detail="\x80\ud800")
def test_any_message_is_written_as_a_valid_json_line(topic: str, payload: bytes, reason: str, detail: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.jsonl"
        dead = DeadLetters(path, max_bytes=1024, keep=1)
        dead.message(topic, payload, reason, detail)
        dead.close()
        entry = _strict_json(_last_line(path))
        [loaded] = load(path)
        assert loaded == entry
        assert entry["kind"] == "message" and entry["payload_bytes"] == len(payload)
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            assert entry["payload"] == text
        assert entry["topic"] == _as_written(topic)
        assert entry["detail"] == _as_written(detail) and entry["reason"] == _as_written(reason)


@settings(max_examples=100, deadline=None)
@given(
    topic=_ANY_TEXT,
    value=st.recursive(_JSON_LEAF, lambda children: st.lists(children, max_size=3), max_leaves=8),
    signal=_ANY_TEXT,
    detail=_ANY_TEXT,
)
@example(topic="\ud800", value=[math.inf, "\x80\udfff", [math.nan]], signal="\u00e9\udcff", detail="\x80\ud800")
def test_any_rejected_reading_is_written_as_a_valid_json_line(topic: str, value: Any, signal: str, detail: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.jsonl"
        dead = DeadLetters(path)
        dead.reading(
            topic,
            Rejection(reason=Reason.OUT_OF_RANGE, detail=detail, signal=signal, value=value, ts_ms=1),
            gateway=topic,
            seq=7,
        )
        dead.close()
        entry = _strict_json(_last_line(path))
        assert load(path) == [entry]
        assert entry["reason"] == "out_of_range" and entry["seq"] == 7 and entry["ts"] == 1


def test_payload_is_kept_up_to_64_kib_and_odd_inputs_do_not_fail(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    dead = DeadLetters(path)
    dead.message("t", b"\xff" + b"a" * (100 * 1024), "oversized", "too large")
    dead.message("t", bytearray(b"\x00\x01"), "not_json", "binary")
    dead.message("t", memoryview(b"{}"), "missing_field", "no v")
    dead.message("t", "text \udcff", Reason.NOT_JSON, "a str payload")  # type: ignore[arg-type]
    nan = Rejection(reason=Reason.OUT_OF_RANGE, detail="nan", signal="load", value=math.nan)
    dead.reading("t", nan, extra=object())
    dead.close()
    first, second, third, fourth, fifth = (_strict_json(line) for line in path.read_text().splitlines())
    assert first["payload_bytes"] == 100 * 1024 + 1
    assert first["payload"].startswith("\\xffaaa") and len(first["payload"]) == 4 + 64 * 1024 - 1
    assert second["payload"] == "\x00\x01" and third["payload"] == "{}"
    assert fourth["payload"] == "text \\xed\\xb3\\xbf" and fourth["reason"] == "not_json"
    assert fifth["value"] == "nan" and fifth["extra"].startswith("<object object")
    assert dead.messages == {"oversized": 1, "not_json": 2, "missing_field": 1}
    assert dead.readings == {"out_of_range": 1}
