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

A bad row never stops a replay: every data row is either replayed or rejected with a
reason (``ROW_REASONS``: a timestamp that does not parse, is out of the payload contract's
range, repeats an earlier row's or goes back in time; the wrong number of cells; a line too
long), and a bad cell drops just that reading (``READING_REASONS``). Both are counted on the
driver (``rejections``, ``dropped_readings``, ``counters()``), logged at most once per reason
every ``LOG_EVERY_S`` seconds, and summed up per file. Only a file that cannot be used at all
(unreadable, a mapped column missing from its header, no row to replay) is a
:class:`ReplayError`, before anything is published.

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
import time
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from birlik.payload import MAX_FUTURE_MS, MIN_TS_MS, Value
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
        if len(self.delimiter) != 1 or self.delimiter in '"\r\n':
            raise ReplayError(
                f"{where}: delimiter must be one character (not a quote or a line end), got {self.delimiter!r}"
            )
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

#: The longest line read as a row, in bytes (without its line end). A longer line is rejected
#: (``line_too_long``) without being held in memory. It is below the csv module's field size
#: limit, so no field can exceed that.
MAX_LINE_BYTES = 64 * 1024
#: Rejections are logged at most once per reason in this many seconds (and summed up per file).
LOG_EVERY_S = 10.0

# Why a row is rejected (the whole row: no readings, no labels). Stable codes: logs and stats show them.
BAD_TIMESTAMP = "bad_timestamp"  # empty, or not in the mapping's format, or not a finite number
TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"  # before 2000 or more than 24 h ahead (the payload contract)
DUPLICATE_TIMESTAMP = "duplicate_timestamp"  # the time of an earlier row: it would overwrite that row's readings
OUT_OF_ORDER = "out_of_order"  # earlier than the previous row replayed
WRONG_COLUMN_COUNT = "wrong_column_count"  # fewer cells than the header, or more (that are not empty)
LINE_TOO_LONG = "line_too_long"  # more than MAX_LINE_BYTES
UNREADABLE = "unreadable"  # the csv module cannot split the line (e.g. a carriage return inside a cell)
ROW_REASONS = (
    BAD_TIMESTAMP,
    TIMESTAMP_OUT_OF_RANGE,
    DUPLICATE_TIMESTAMP,
    OUT_OF_ORDER,
    WRONG_COLUMN_COUNT,
    LINE_TOO_LONG,
    UNREADABLE,
)
# Why one reading (one cell of a replayed row) is dropped; the rest of the row is kept.
EMPTY = "empty"
NOT_A_NUMBER = "not_a_number"
NOT_FINITE = "not_finite"  # nan, inf, or a number too large for a float (1e400)
OUT_OF_RANGE = "out_of_range"  # after value * scale + offset: outside the catalogue's range, or infinite
READING_REASONS = (EMPTY, NOT_A_NUMBER, NOT_FINITE, OUT_OF_RANGE)


@dataclass
class Recording:
    """One CSV file, read: its samples (time order) and labels, on the replay's time line."""

    machine: Machine
    source: Path
    timestamps: list[int]
    samples: list[dict[str, Value]]
    intervals: list[RecordedInterval]
    #: Rows replayed (``timestamps`` has one per row).
    rows: int
    #: Readings dropped (empty cells, not numbers, out of range); ``dropped_readings`` says why.
    skipped_readings: int
    shift_ms: int = 0
    ignored_columns: list[str] = field(default_factory=list)
    cursor: int = 0
    #: Data rows in the file (blank lines not counted): ``rows`` + ``sum(rejections.values())``.
    rows_read: int = 0
    blank_lines: int = 0
    #: Rows rejected, by reason (``ROW_REASONS``).
    rejections: Counter[str] = field(default_factory=Counter)
    #: Readings dropped from replayed rows, by reason (``READING_REASONS``).
    dropped_readings: Counter[str] = field(default_factory=Counter)

    @property
    def readings(self) -> int:
        return sum(len(s) for s in self.samples)


class RejectionLog:
    """Logs rejections as warnings, at most one line per reason every ``every_s`` seconds."""

    def __init__(self, every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def __call__(self, reason: str, where: str, detail: str) -> None:
        now = self._clock()
        last = self._last.get(reason)
        if last is not None and now - last < self.every_s:
            self._suppressed[reason] += 1
            return
        self._last[reason] = now
        more = self._suppressed.pop(reason, 0)
        log.warning(
            "replay %s: %s (%s%s)",
            where,
            detail,
            reason,
            f"; {more} more not logged in the last {self.every_s:g} s" if more else "",
        )


class CsvReplayDriver:
    """Plays CSV recordings, one file per machine, on the gateway clock.

    ``recordings`` maps each machine's path to its CSV file. With ``start_ms`` ``None`` the
    rows keep their recorded timestamps; with ``start_ms`` given, each file is shifted so
    that its first replayed row falls on ``start_ms`` (several files then play side by side).

    Every data row of a file is either replayed or rejected with a reason, counted in
    ``rejections`` (and logged, rate-limited): a timestamp that does not parse, is out of the
    payload contract's range (recorded before 2000 or more than 24 h after ``now_ms``), repeats
    an earlier row's or goes back in time, a row with the wrong number of cells, a line too
    long. A cell that is empty, not a finite number, or out of the catalogue's range after
    the conversion drops that one reading (``dropped_readings``), not the row. Only what
    makes the whole file unusable raises :class:`ReplayError`: it cannot be read, a mapped
    column is missing from its header, or no row at all can be replayed.
    """

    name = "replay"

    def __init__(
        self,
        recordings: Mapping[MachinePath, str | os.PathLike[str]],
        *,
        mapping: CsvMapping = SKAB,
        kind: str | None = None,
        start_ms: int | None = None,
        now_ms: int | None = None,
        rejection_log: RejectionLog | None = None,
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
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        report = rejection_log or RejectionLog()
        self.recordings: list[Recording] = []
        for path, source in recordings.items():
            r = _read(Path(source), Machine(path.machine, kind, path), mapping, start_ms, now_ms, report)
            self.recordings.append(r)
            log.log(
                logging.WARNING if r.rejections or r.dropped_readings else logging.INFO,
                "replay %s -> %s: %d rows read, %d replayed (%d readings), %d rejected%s, %d readings dropped%s; "
                "recorded %s .. %s%s, %d labelled anomal%s%s",
                r.source,
                r.machine.path,
                r.rows_read,
                r.rows,
                r.readings,
                sum(r.rejections.values()),
                _reasons(r.rejections),
                r.skipped_readings,
                _reasons(r.dropped_readings),
                _iso(r.timestamps[0] - r.shift_ms),
                _iso(r.timestamps[-1] - r.shift_ms),
                f", replayed from {_iso(r.timestamps[0])}" if r.shift_ms else "",
                len(r.intervals),
                "y" if len(r.intervals) == 1 else "ies",
                f"; columns not replayed: {', '.join(r.ignored_columns)}" if r.ignored_columns else "",
            )
        if len(self.recordings) > 1:
            log.log(
                logging.WARNING if self.rejections or self.dropped_readings else logging.INFO,
                "replay: %d files, %d rows read, %d replayed, %d rejected%s, %d readings dropped%s",
                len(self.recordings),
                self.rows_read,
                self.rows,
                sum(self.rejections.values()),
                _reasons(self.rejections),
                sum(self.dropped_readings.values()),
                _reasons(self.dropped_readings),
            )

    @property
    def rows_read(self) -> int:
        """Data rows read from every file (blank lines not counted)."""
        return sum(r.rows_read for r in self.recordings)

    @property
    def rows(self) -> int:
        """Rows replayed from every file."""
        return sum(r.rows for r in self.recordings)

    @property
    def rejections(self) -> Counter[str]:
        """Rows rejected in every file, by reason."""
        return sum((r.rejections for r in self.recordings), Counter())

    @property
    def dropped_readings(self) -> Counter[str]:
        """Readings dropped from replayed rows of every file, by reason."""
        return sum((r.dropped_readings for r in self.recordings), Counter())

    def stats(self) -> dict[str, object]:
        """The counters as JSON-ready values, e.g. for a stats file."""
        return {
            "rows_read": self.rows_read,
            "rows_replayed": self.rows,
            "rows_rejected": dict(self.rejections),
            "readings_dropped": dict(self.dropped_readings),
        }

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


def _reasons(counts: Counter[str]) -> str:
    return f" ({', '.join(f'{reason} {n}' for reason, n in counts.most_common())})" if counts else ""


def _iso(ts_ms: int) -> str:
    try:
        return (_EPOCH + timedelta(milliseconds=ts_ms)).isoformat(timespec="seconds").replace("+00:00", "Z")
    except OverflowError:
        return f"{ts_ms} ms"


def _brief(cell: str, limit: int = 40) -> str:
    """A cell for a log line: quoted, shortened, bytes that are not UTF-8 shown as \\udcXX."""
    return repr(cell if len(cell) <= limit else cell[:limit] + "...")


def _lines(f: BinaryIO) -> Iterator[bytes | None]:
    """Each line of ``f`` without its line end; ``None`` for a line longer than MAX_LINE_BYTES."""
    while True:
        raw = f.readline(MAX_LINE_BYTES + 2)  # room for \r\n
        if not raw:
            return
        if not raw.endswith(b"\n") and len(raw) == MAX_LINE_BYTES + 2:
            while raw and not raw.endswith(b"\n"):  # skip the rest of the line, a chunk at a time
                raw = f.readline(MAX_LINE_BYTES)
            yield None
            continue
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        yield None if len(raw) > MAX_LINE_BYTES else raw


def _split(text: str, delimiter: str) -> list[str]:
    """One line as cells. Raises csv.Error. A quoted cell cannot span lines here: a row is one line."""
    return next(csv.reader((text,), delimiter=delimiter), [])


def _open_header(source: Path, f: BinaryIO, mapping: CsvMapping) -> list[str]:
    first = next(_lines(f), b"")
    if first is None:
        raise ReplayError(f"{source}: the first line (the header) is longer than {MAX_LINE_BYTES} bytes")
    if first.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ReplayError(f"{source}: the file is UTF-16 (or UTF-32) text: convert it to UTF-8")
    first = first.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
    if not first.strip():
        raise ReplayError(
            f"{source}: the file is empty" if not first else f"{source}: the first line (header) is empty"
        )
    try:
        return [h.strip() for h in _split(first.decode("utf-8", "surrogateescape"), mapping.delimiter)]
    except csv.Error as exc:
        raise ReplayError(f"{source}:1: the header is not a readable CSV line: {exc}") from None


def _read(
    source: Path,
    machine: Machine,
    mapping: CsvMapping,
    start_ms: int | None,
    now_ms: int,
    report: Callable[[str, str, str], None],
) -> Recording:
    parse_ts = _timestamp_parser(mapping.timestamp_format, mapping.tz())
    latest_ms = now_ms + MAX_FUTURE_MS
    delimiter = mapping.delimiter
    timestamps: list[int] = []
    lines: list[int] = []  # line number of each replayed row
    samples: list[dict[str, Value]] = []
    anomalous: list[bool] = []
    changepoints: list[bool] = []
    rejections: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    rows_read = blank = 0
    try:
        with source.open("rb") as f:
            header = _open_header(source, f, mapping)
            index = {name: i for i, name in enumerate(header)}

            def column(name: str, what: str) -> int:
                if name not in index:
                    garbled = any("\x00" in h or any("\udc80" <= c <= "\udcff" for c in h) for h in header)
                    raise ReplayError(
                        f"{source}: no column {name!r} ({what}) in the header; columns: {', '.join(header)} "
                        f"(delimiter {mapping.delimiter!r})"
                        + ("; the header is not UTF-8 text: convert the file to UTF-8" if garbled else "")
                    )
                return index[name]

            ts_col = column(mapping.timestamp_column, "timestamp")
            value_cols = [
                (column(name, f"signal {target.signal}"), target, SIGNALS[target.signal])
                for name, target in mapping.columns.items()
                if target is not None
            ]
            anomaly_col = index.get(mapping.anomaly_column) if mapping.anomaly_column else None
            changepoint_col = index.get(mapping.changepoint_column) if mapping.changepoint_column else None
            used = {ts_col, anomaly_col, changepoint_col, *(c for c, _, _ in value_cols)}
            ignored = [h for i, h in enumerate(header) if i not in used]
            width = len(header)

            def reject(reason: str, line: int, detail: str) -> None:
                rejections[reason] += 1
                report(reason, f"{source}:{line}", f"row rejected: {detail}")

            for line, raw in enumerate(_lines(f), start=2):
                if raw is None:
                    rows_read += 1
                    reject(LINE_TOO_LONG, line, f"the line is longer than {MAX_LINE_BYTES} bytes")
                    continue
                try:
                    row = _split(raw.decode("utf-8", "surrogateescape"), delimiter)
                except csv.Error as exc:
                    rows_read += 1
                    reject(UNREADABLE, line, f"not a readable CSV line: {exc}")
                    continue
                if not any(cell.strip() for cell in row):
                    blank += 1
                    continue
                rows_read += 1
                if len(row) != width and (len(row) < width or any(c.strip() for c in row[width:])):
                    reject(WRONG_COLUMN_COUNT, line, f"{len(row)} cells, the header has {width} columns")
                    continue
                cell = row[ts_col].strip()
                try:
                    ts = parse_ts(cell)
                except OverflowError:
                    reject(TIMESTAMP_OUT_OF_RANGE, line, f"timestamp {_brief(cell)} is out of range")
                    continue
                except (ValueError, TypeError):
                    reject(
                        BAD_TIMESTAMP,
                        line,
                        f"timestamp {_brief(cell)} is not in the format {mapping.timestamp_format!r}"
                        if cell
                        else "no timestamp",
                    )
                    continue
                if not MIN_TS_MS <= ts <= latest_ms:
                    reject(
                        TIMESTAMP_OUT_OF_RANGE,
                        line,
                        f"timestamp {_brief(cell)} ({_iso(ts)}) is before 2000 or more than 24 h in the future",
                    )
                    continue
                if timestamps and ts <= timestamps[-1]:
                    i = bisect_left(timestamps, ts)
                    if timestamps[i] == ts:
                        reject(
                            DUPLICATE_TIMESTAMP,
                            line,
                            f"timestamp {_brief(cell)} is that of line {lines[i]}: it would overwrite its readings",
                        )
                    else:
                        reject(
                            OUT_OF_ORDER,
                            line,
                            f"timestamp {_brief(cell)} is before that of line {lines[-1]} "
                            f"({_iso(timestamps[-1])}); a daylight-saving zone repeats an hour: use an offset",
                        )
                    continue
                values: dict[str, Value] = {}
                for col, target, signal in value_cols:
                    text = row[col]
                    try:
                        number = float(text)
                    except ValueError:
                        reason = EMPTY if not text.strip() else NOT_A_NUMBER
                    else:
                        if not math.isfinite(number):
                            reason = NOT_FINITE
                        else:
                            value = target.convert(number)
                            if signal.low <= value <= signal.high:  # false for inf and nan
                                values[signal.name] = value
                                continue
                            reason = OUT_OF_RANGE
                    dropped[reason] += 1
                    if reason == OUT_OF_RANGE:
                        detail = f"{signal.name} = {value:g} {signal.unit} is outside [{signal.low:g}, {signal.high:g}]"
                    elif reason == NOT_FINITE:
                        detail = f"{signal.name} is not a finite number"
                    else:
                        detail = f"{signal.name} is {'empty' if reason == EMPTY else 'not a number'}"
                    report(reason, f"{source}:{line}", f"{header[col]} {_brief(text)}: {detail}, reading dropped")
                timestamps.append(ts)
                lines.append(line)
                samples.append(values)
                anomalous.append(_flag(row, anomaly_col))
                changepoints.append(_flag(row, changepoint_col))
    except OSError as exc:
        raise ReplayError(f"{source}: cannot read: {exc.strerror or exc}") from None
    if not timestamps:
        if not rows_read:
            raise ReplayError(f"{source}: no rows after the header")
        raise ReplayError(f"{source}: no row can be replayed: {rows_read} rows rejected{_reasons(rejections)}")
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
    return Recording(
        machine,
        source,
        timestamps,
        samples,
        intervals,
        len(timestamps),
        sum(dropped.values()),
        shift,
        ignored,
        rows_read=rows_read,
        blank_lines=blank,
        rejections=rejections,
        dropped_readings=dropped,
    )


def _timestamp_parser(fmt: str, tz: tzinfo) -> Callable[[str], int]:
    """``cell -> ms``; raises ValueError for a cell that does not parse, OverflowError out of range."""

    def to_ms(dt: datetime) -> int:
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=tz)
        return (dt - _EPOCH) // timedelta(milliseconds=1)

    def unix(cell: str, factor: int) -> int:
        number = float(cell)
        if math.isnan(number):
            raise ValueError("not a number")
        return round(number * factor) if factor != 1 else round(number)  # OverflowError for inf

    def from_iso(cell: str) -> int:
        if "\x00" in cell:  # fromisoformat ignores a NUL at the end (CPython 3.11)
            raise ValueError("NUL in the timestamp")
        return to_ms(datetime.fromisoformat(cell))

    if fmt == "iso":
        return from_iso
    if fmt == "unix_s":
        return lambda cell: unix(cell, 1000)
    if fmt == "unix_ms":
        return lambda cell: unix(cell, 1)
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
