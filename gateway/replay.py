"""CSV replay: a recorded dataset played as machines, its labels as ground truth.

Each CSV file becomes one machine. A :class:`CsvMapping` says how to read the files: the
delimiter, which column holds the timestamp (format and time zone), which columns become
which catalogue signals (with an optional linear conversion ``value * scale + offset``),
and which columns hold the labels. The rows then go through the gateway, the broker, the
ingest and analytics exactly like simulated readings, and the labelled anomaly intervals
become ground truth (:class:`RecordedInterval`) to score detectors against.

    >>> from birlik.topics import MachinePath
    >>> driver = CsvReplayDriver(
    ...     {MachinePath("replay", "lab", "testbed", "valve1-0"): "skab/data/valve1/0.csv"},
    ...     mapping=SKAB,
    ... )  # doctest: +SKIP
    >>> driver.ground_truth()  # doctest: +SKIP

The built-in ``skab`` mapping reads the Skoltech Anomaly Benchmark; ``gateway/mappings/``
holds the same mapping as an annotated YAML file to copy for other recordings.
"""

from __future__ import annotations

import csv
import heapq
import json
import logging
import math
import os
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from birlik.payload import Value
from birlik.plant import Machine
from birlik.signals import SIGNALS
from birlik.topics import MachinePath, TopicError, check_name
from gateway.drivers import Reading

log = logging.getLogger("gateway.replay")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")


class ReplayError(ValueError):
    """A recording or a column mapping cannot be used; the message says where and why."""


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """One CSV column as a catalogue signal: ``value = float(cell) * scale + offset``."""

    signal: str
    scale: float = 1.0
    offset: float = 0.0

    def convert(self, raw: float) -> float:
        # Without a conversion the value is the parsed float itself, bit for bit.
        if self.scale == 1.0 and self.offset == 0.0:
            return raw
        return raw * self.scale + self.offset


@dataclass(frozen=True)
class CsvMapping:
    """How to read recordings of one kind of CSV file.

    ``columns`` maps a CSV column to a :class:`ColumnMapping`, or to ``None`` to skip it
    deliberately; CSV columns not listed are ignored too (and named in the log). Label
    columns missing from a file mean the file has no labels (no ground truth), mapped value
    columns missing from a file are an error.
    """

    columns: Mapping[str, ColumnMapping | None]
    name: str = "custom"
    delimiter: str = ","
    timestamp_column: str = "timestamp"
    #: ``iso`` (ISO 8601, e.g. ``2020-03-09 10:14:33``), ``unix_s``, ``unix_ms``, or a
    #: :func:`time.strptime` format such as ``%d.%m.%Y %H:%M:%S``.
    timestamp_format: str = "iso"
    #: Zone of timestamps written without one: ``UTC``, a fixed offset ``+03:00``, or an
    #: IANA name (``Asia/Almaty``; needs the system's time zone database).
    timezone: str = "UTC"
    anomaly_column: str | None = None
    changepoint_column: str | None = None
    #: Machine kind to report when the caller gives none.
    kind: str | None = None

    def __post_init__(self) -> None:
        where = f"mapping {self.name!r}"
        if len(self.delimiter) != 1:
            raise ReplayError(f"{where}: delimiter must be one character, got {self.delimiter!r}")
        if not any(self.columns.values()):
            raise ReplayError(f"{where}: no column is mapped to a signal")
        signals: dict[str, str] = {}
        for column, target in self.columns.items():
            if target is None:
                continue
            signal = SIGNALS.get(target.signal)
            if signal is None or not signal.is_numeric or signal.kind == "counter":
                raise ReplayError(
                    f"{where}: column {column!r} -> {target.signal!r}: not a numeric gauge or total of the "
                    "signal catalogue (birlik/signals.py)"
                )
            if target.signal in signals:
                raise ReplayError(
                    f"{where}: columns {signals[target.signal]!r} and {column!r} both map to {target.signal!r}"
                )
            if not (math.isfinite(target.scale) and math.isfinite(target.offset)):
                raise ReplayError(f"{where}: column {column!r}: scale and offset must be finite numbers")
            signals[target.signal] = column
        if self.kind is not None:
            try:
                check_name("kind", self.kind)
            except TopicError as exc:
                raise ReplayError(f"{where}: {exc}") from None
        self.tz()  # fail now, not at the first row

    def tz(self) -> tzinfo:
        return parse_timezone(self.timezone, f"mapping {self.name!r}")

    def describe(self) -> str:
        return f"{self.name} (timestamps {self.timestamp_column!r} as {self.timestamp_format}, zone {self.timezone})"


def parse_timezone(text: str, where: str = "timezone") -> tzinfo:
    """``UTC``, a fixed offset (``+03:00``, ``-0530``) or an IANA zone name."""
    if text.upper() in ("UTC", "Z"):
        return UTC
    match = _OFFSET.fullmatch(text.strip())
    if match:
        sign, hours, minutes = match.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes))
        return timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReplayError(
            f"{where}: unknown time zone {text!r} (use UTC, an offset like +03:00, or an IANA name)"
        ) from None


#: The Skoltech Anomaly Benchmark (SKAB): a water-circulation test bed, one row a second.
#: Its ``datetime`` is the local time of the laboratory in Moscow, UTC+3 all year since
#: 2014, so the recordings (2020) are read at a fixed +03:00.
SKAB = CsvMapping(
    name="skab",
    delimiter=";",
    timestamp_column="datetime",
    timestamp_format="iso",
    timezone="+03:00",
    anomaly_column="anomaly",
    changepoint_column="changepoint",
    kind="centrifugal_pump",
    columns={
        "Accelerometer1RMS": ColumnMapping("accel_rms"),
        "Accelerometer2RMS": ColumnMapping("accel2_rms"),
        "Current": ColumnMapping("motor_current"),
        "Pressure": ColumnMapping("discharge_pressure"),
        "Temperature": ColumnMapping("motor_temp"),
        "Thermocouple": ColumnMapping("fluid_temp"),
        "Voltage": ColumnMapping("voltage"),
        "Volume Flow RateRMS": ColumnMapping("flow", scale=0.06),  # l/min -> m3/h
    },
)

#: Mappings known by name (``--mapping skab``).
MAPPINGS: dict[str, CsvMapping] = {"skab": SKAB}

_MAPPING_KEYS = {"name", "delimiter", "timestamp", "labels", "kind", "columns"}


def load_mapping(name_or_path: str | os.PathLike[str]) -> CsvMapping:
    """A built-in mapping by name (``skab``) or a mapping YAML file (see ``gateway/mappings/``)."""
    if isinstance(name_or_path, str) and name_or_path in MAPPINGS:
        return MAPPINGS[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise ReplayError(f"{path}: no such mapping file (built-in mappings: {', '.join(MAPPINGS)})")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ReplayError(f"{path}: not valid YAML: {exc}") from None
    return mapping_from_dict(doc, str(path))


def mapping_from_dict(doc: Any, where: str) -> CsvMapping:
    """A :class:`CsvMapping` from the parsed YAML document ``doc`` (``where`` names it in errors)."""
    if not isinstance(doc, dict):
        raise ReplayError(f"{where}: a mapping file is a YAML mapping with a 'columns' key")
    unknown = set(doc) - _MAPPING_KEYS
    if unknown:
        raise ReplayError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(_MAPPING_KEYS)})")
    timestamp = _section(doc, "timestamp", where, {"column", "format", "timezone"})
    labels = _section(doc, "labels", where, {"anomaly", "changepoint"})
    raw_columns = doc.get("columns")
    if not isinstance(raw_columns, dict) or not raw_columns:
        raise ReplayError(f"{where}: 'columns' must map CSV column names to signals")
    columns: dict[str, ColumnMapping | None] = {}
    for column, target in raw_columns.items():
        columns[str(column)] = _column(target, f"{where}: columns[{column!r}]")
    try:
        return CsvMapping(
            columns=columns,
            name=str(doc.get("name", Path(where).stem)),
            delimiter=str(doc.get("delimiter", ",")),
            timestamp_column=str(timestamp.get("column", "timestamp")),
            timestamp_format=str(timestamp.get("format", "iso")),
            timezone=str(timestamp.get("timezone", "UTC")),
            anomaly_column=_optional_str(labels.get("anomaly")),
            changepoint_column=_optional_str(labels.get("changepoint")),
            kind=_optional_str(doc.get("kind")),
        )
    except ReplayError as exc:
        raise ReplayError(f"{where}: {exc}") from None


def _section(doc: Mapping[str, Any], key: str, where: str, known: set[str]) -> Mapping[str, Any]:
    section = doc.get(key) or {}
    if not isinstance(section, dict):
        raise ReplayError(f"{where}: {key!r} must be a mapping with keys {sorted(known)}")
    unknown = set(section) - known
    if unknown:
        raise ReplayError(f"{where}: {key}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    return section


def _column(target: Any, where: str) -> ColumnMapping | None:
    if target is None:
        return None
    if isinstance(target, str):
        return ColumnMapping(target)
    if not isinstance(target, dict) or "signal" not in target or set(target) - {"signal", "scale", "offset"}:
        raise ReplayError(f"{where}: expected a signal name, null, or {{signal: ..., scale: ..., offset: ...}}")
    try:
        return ColumnMapping(str(target["signal"]), float(target.get("scale", 1.0)), float(target.get("offset", 0.0)))
    except (TypeError, ValueError):
        raise ReplayError(f"{where}: scale and offset must be numbers") from None


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


# --- ground truth ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedInterval:
    """A labelled anomaly of a recording: consecutive rows with ``anomaly`` = 1.

    ``onset_ms`` and ``end_ms`` are the timestamps (as replayed, after any time shift) of
    the first and the last anomalous row, both included. ``changepoints_ms`` are the rows
    marked as changepoints from the onset up to the first normal row after the interval
    (SKAB marks the end of a fault regime on that row).
    """

    machine: str  # tenant/site/line/machine
    kind: str
    source: str  # the CSV file
    onset_ms: int
    end_ms: int
    changepoints_ms: tuple[int, ...] = ()
    category: str = "recorded"

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["changepoints_ms"] = list(self.changepoints_ms)
        return out


def write_ground_truth(path: str | os.PathLike[str], intervals: Iterable[RecordedInterval]) -> None:
    """Write the intervals as a JSON list of objects (the fields of :class:`RecordedInterval`)."""
    Path(path).write_text(json.dumps([i.as_dict() for i in intervals], indent=1) + "\n", encoding="utf-8")


# --- the driver ------------------------------------------------------------------------


@dataclass
class Recording:
    """One CSV file, read: its samples (time order) and labels, on the replay's time line."""

    machine: Machine
    source: Path
    timestamps: list[int]
    samples: list[dict[str, Value]]
    intervals: list[RecordedInterval]
    rows: int
    skipped_readings: int
    shift_ms: int = 0
    ignored_columns: list[str] = field(default_factory=list)
    cursor: int = 0

    @property
    def readings(self) -> int:
        return sum(len(s) for s in self.samples)


class CsvReplayDriver:
    """Plays CSV recordings, one file per machine, on the gateway clock.

    ``recordings`` maps each machine's path to its CSV file. With ``start_ms`` ``None`` the
    rows keep their recorded timestamps; with ``start_ms`` given, each file is shifted so
    that its first row falls on ``start_ms`` (several files then play side by side).
    A cell that is empty or not a finite number drops that one reading, not the row.
    """

    name = "replay"

    def __init__(
        self,
        recordings: Mapping[MachinePath, str | os.PathLike[str]],
        *,
        mapping: CsvMapping = SKAB,
        kind: str | None = None,
        start_ms: int | None = None,
    ) -> None:
        if not recordings:
            raise ReplayError("no recordings to replay")
        kind = kind or mapping.kind
        if kind is None:
            raise ReplayError(f"mapping {mapping.name!r} names no machine kind: give one")
        try:
            check_name("kind", kind)
        except TopicError as exc:
            raise ReplayError(str(exc)) from None
        self.mapping = mapping
        self.recordings = [
            _read(Path(source), Machine(path.machine, kind, path), mapping, start_ms)
            for path, source in recordings.items()
        ]
        for r in self.recordings:
            log.info(
                "replay %s -> %s: %d rows, %d readings (%d cells empty or not numbers), recorded %s .. %s%s, "
                "%d labelled anomal%s%s",
                r.source,
                r.machine.path,
                r.rows,
                r.readings,
                r.skipped_readings,
                _iso(r.timestamps[0] - r.shift_ms),
                _iso(r.timestamps[-1] - r.shift_ms),
                f", replayed from {_iso(r.timestamps[0])}" if r.shift_ms else "",
                len(r.intervals),
                "y" if len(r.intervals) == 1 else "ies",
                f"; columns not replayed: {', '.join(r.ignored_columns)}" if r.ignored_columns else "",
            )

    @property
    def start_ms(self) -> int:
        """Time of the earliest row of any recording."""
        return min(r.timestamps[0] for r in self.recordings)

    @property
    def end_ms(self) -> int:
        """Time of the latest row of any recording: the replay is over once the clock passes it."""
        return max(r.timestamps[-1] for r in self.recordings)

    def machines(self) -> list[Machine]:
        return [r.machine for r in self.recordings]

    def poll(self, until_ms: int) -> Iterator[Reading]:
        """Every row up to and including ``until_ms`` not returned before, in time order."""
        due = []
        for r in self.recordings:
            stop = bisect_right(r.timestamps, until_ms, lo=r.cursor)
            due.append(_rows(r, r.cursor, stop))
            r.cursor = stop
        return heapq.merge(*due, key=lambda reading: reading[1])

    def ground_truth(self) -> list[RecordedInterval]:
        """The labelled anomaly intervals of every recording, on the replay's time line."""
        return [i for r in self.recordings for i in r.intervals]


def _rows(r: Recording, start: int, stop: int) -> Iterator[Reading]:
    for i in range(start, stop):
        if r.samples[i]:
            yield r.machine, r.timestamps[i], r.samples[i]


def _iso(ts_ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ts_ms)).isoformat(timespec="seconds").replace("+00:00", "Z")


def _read(source: Path, machine: Machine, mapping: CsvMapping, start_ms: int | None) -> Recording:
    tz = mapping.tz()
    parse_ts = _timestamp_parser(mapping.timestamp_format, tz)
    try:
        with source.open(newline="", encoding="utf-8-sig") as f:
            rows = csv.reader(f, delimiter=mapping.delimiter)
            header = next(rows, None)
            if header is None:
                raise ReplayError(f"{source}: the file is empty")
            header = [h.strip() for h in header]
            index = {name: i for i, name in enumerate(header)}

            def column(name: str, what: str) -> int:
                if name not in index:
                    raise ReplayError(
                        f"{source}: no column {name!r} ({what}) in the header; columns: {', '.join(header)} "
                        f"(delimiter {mapping.delimiter!r})"
                    )
                return index[name]

            ts_col = column(mapping.timestamp_column, "timestamp")
            value_cols = [
                (column(name, f"signal {target.signal}"), target.signal, target)
                for name, target in mapping.columns.items()
                if target is not None
            ]
            anomaly_col = index.get(mapping.anomaly_column) if mapping.anomaly_column else None
            changepoint_col = index.get(mapping.changepoint_column) if mapping.changepoint_column else None
            used = {ts_col, anomaly_col, changepoint_col, *(c for c, _, _ in value_cols)}
            ignored = [h for i, h in enumerate(header) if i not in used]

            timestamps: list[int] = []
            samples: list[dict[str, Value]] = []
            anomalous: list[bool] = []
            changepoints: list[bool] = []
            skipped = 0
            for row in rows:
                if not any(cell.strip() for cell in row):
                    continue  # blank line
                line = rows.line_num
                cell = row[ts_col].strip() if ts_col < len(row) else ""
                try:
                    ts = parse_ts(cell)
                except (ValueError, OverflowError):
                    raise ReplayError(
                        f"{source}:{line}: timestamp {cell!r} is not in the format {mapping.timestamp_format!r}"
                    ) from None
                if timestamps and ts <= timestamps[-1]:
                    raise ReplayError(
                        f"{source}:{line}: timestamp {cell!r} is not after the previous row's; a recording must "
                        "be in time order (a local time zone with daylight saving repeats an hour: use an offset)"
                    )
                values: dict[str, Value] = {}
                for col, signal, target in value_cols:
                    number = _number(row[col]) if col < len(row) else None
                    if number is None:
                        skipped += 1
                    else:
                        values[signal] = target.convert(number)
                timestamps.append(ts)
                samples.append(values)
                anomalous.append(_flag(row, anomaly_col))
                changepoints.append(_flag(row, changepoint_col))
    except OSError as exc:
        raise ReplayError(f"{source}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ReplayError(f"{source}: not UTF-8 text: {exc}") from None
    except csv.Error as exc:
        raise ReplayError(f"{source}: not a readable CSV file: {exc}") from None
    if not timestamps:
        raise ReplayError(f"{source}: no rows after the header")
    shift = 0 if start_ms is None else start_ms - timestamps[0]
    if shift:
        timestamps = [ts + shift for ts in timestamps]
    intervals = [
        RecordedInterval(
            str(machine.path),
            machine.kind,
            str(source),
            timestamps[first],
            timestamps[last],
            tuple(timestamps[i] for i in range(first, min(last + 2, len(timestamps))) if changepoints[i]),
        )
        for first, last in _runs(anomalous)
    ]
    return Recording(machine, source, timestamps, samples, intervals, len(timestamps), skipped, shift, ignored)


def _timestamp_parser(fmt: str, tz: tzinfo) -> Callable[[str], int]:
    def to_ms(dt: datetime) -> int:
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=tz)
        return (dt - _EPOCH) // timedelta(milliseconds=1)

    if fmt == "iso":
        return lambda cell: to_ms(datetime.fromisoformat(cell))
    if fmt == "unix_s":
        return lambda cell: round(float(cell) * 1000)
    if fmt == "unix_ms":
        return lambda cell: round(float(cell))
    return lambda cell: to_ms(datetime.strptime(cell, fmt))


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _flag(row: list[str], col: int | None) -> bool:
    if col is None or col >= len(row):
        return False
    value = _number(row[col])
    return value is not None and value != 0


def _runs(flags: list[bool]) -> Iterator[tuple[int, int]]:
    """(first, last) index of every run of consecutive true flags."""
    first: int | None = None
    for i, flag in enumerate(flags):
        if flag and first is None:
            first = i
        elif not flag and first is not None:
            yield first, i - 1
            first = None
    if first is not None:
        yield first, len(flags) - 1
