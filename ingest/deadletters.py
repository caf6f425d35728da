"""Dead letters: every rejected message or reading, kept with its reason for inspection.

One JSON object per line, e.g.::

    {"time": "2026-11-22T08:00:01.5Z", "reason": "wrong_unit", "detail": "bearing_temp must be
     in degC, got 'degF'", "topic": "birlik/.../telemetry", "gateway": "gw-1", "seq": 17,
     "signal": "bearing_temp", "value": 141.8, "ts": 1763800000000}

Rejected whole messages keep their payload (as text, undecodable bytes escaped), so a
device's bad output can be replayed once fixed.

Bounded on disk: when the file would grow past ``max_bytes`` it is renamed to ``<name>.1``
(older ones shift to ``.2`` ... ``.<keep>``, the oldest is deleted) and a new file is started,
so the dead letters take at most ``(keep + 1) * max_bytes``. Bounded in the log: at most one
WARNING per reason every ``log_interval_s`` ("rejected 1,204 messages for not_json in the
last 10 s, e.g. ...; kept in ..."), however many bad messages arrive.

Every line is valid JSON in ASCII, whatever the input: undecodable payload bytes and lone
surrogates in a topic or detail are written as backslash escapes, non-finite numbers as text.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from birlik.payload import Rejection, Telemetry

log = logging.getLogger(__name__)

KEEP_PAYLOAD_BYTES = 64 * 1024
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
DEFAULT_KEEP = 5
DEFAULT_LOG_INTERVAL_S = 10.0
#: The example detail in a log line is cut to this many characters.
LOG_DETAIL_CHARS = 300


@dataclass
class _Window:
    """Rejections of one reason since its last log line (``None``: none yet, say the next at once)."""

    logged_at: float | None
    messages: int = 0
    readings: int = 0
    example: str = ""


class DeadLetters:
    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        keep: int = DEFAULT_KEEP,
        log_interval_s: float = DEFAULT_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if keep < 0:
            raise ValueError(f"keep must be 0 or more, got {keep}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self.log_interval_s = log_interval_s
        self._clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = self._open()
        self.messages: Counter[str] = Counter()
        self.readings: Counter[str] = Counter()
        #: How many times the file was rotated.
        self.rotations = 0
        self._windows: dict[str, _Window] = {}

    # --- what is rejected ---------------------------------------------------------------

    def message(self, topic: str, payload: bytes, reason: str, detail: str) -> None:
        """A whole message was rejected."""
        reason = str(reason)
        if isinstance(payload, str):  # not what MQTT gives, but never fail on it
            payload = payload.encode("utf-8", errors="surrogatepass")
        kept = bytes(payload[:KEEP_PAYLOAD_BYTES])
        self.messages[reason] += 1
        self._write(
            {
                "kind": "message",
                "reason": reason,
                "detail": detail,
                "topic": topic,
                "payload_bytes": len(payload),
                "payload": kept.decode("utf-8", errors="backslashreplace"),
            }
        )
        self._count(reason, str(detail), messages=1)

    def readings_of(self, topic: str, telemetry: Telemetry) -> None:
        """Readings of an otherwise accepted message were rejected."""
        for r in telemetry.rejections:
            self.reading(topic, r, gateway=telemetry.gateway, seq=telemetry.seq)

    def reading(self, topic: str, r: Rejection, **context: Any) -> None:
        reason = str(r.reason)
        self.readings[reason] += 1
        self._write(
            {
                "kind": "reading",
                "reason": reason,
                "detail": r.detail,
                "topic": topic,
                **context,
                "signal": r.signal,
                "value": r.value,
                "ts": r.ts_ms,
            }
        )
        self._count(reason, str(r.detail), readings=1)

    def lines(self, lines: list[str], reason: str, detail: str, readings: int) -> None:
        """Line-protocol points the database refused."""
        reason = str(reason)
        self.readings[reason] += readings
        self._write({"kind": "points", "reason": reason, "detail": detail, "lines": lines})
        self._count(reason, str(detail), readings=readings)

    # --- the file -----------------------------------------------------------------------

    def flush(self) -> None:
        """Write buffered entries to the file, and log the rejection counts that are due."""
        self._file.flush()
        self._log_due()

    def sync(self) -> None:
        """Flush and fsync: the entries written so far survive a crash or a power cut.

        The ingest calls it before acknowledging messages whose readings went here."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.flush()
        self._log_due(force=True)
        self._file.close()

    def rotated_path(self, n: int) -> Path:
        """The n-th rotated file (1 = the newest)."""
        return self.path.with_name(f"{self.path.name}.{n}")

    def _open(self) -> TextIO:
        file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close() or _rotate()
        self._size = os.fstat(file.fileno()).st_size
        return file

    def _write(self, entry: dict[str, Any]) -> None:
        entry = {"time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"), **entry}
        # ensure_ascii (the default): the line is ASCII, so its length is its size in bytes.
        line = json.dumps(_clean(entry), default=_fallback, allow_nan=False) + "\n"
        if self._size > 0 and self._size + len(line) > self.max_bytes:
            self._rotate()
        self._file.write(line)
        self._size += len(line)

    def _rotate(self) -> None:
        # What was written must be on disk before the file changes name: the ingest may
        # acknowledge messages after the next sync(), which only reaches the new file.
        self.sync()
        self._file.close()
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            self.rotated_path(self.keep).unlink(missing_ok=True)
            for n in range(self.keep - 1, 0, -1):
                older = self.rotated_path(n)
                if older.exists():
                    os.replace(older, self.rotated_path(n + 1))
            os.replace(self.path, self.rotated_path(1))
        self._file = self._open()
        _fsync_dir(self.path.parent)
        self.rotations += 1
        log.info(
            "dead letters rotated: %s reached %d bytes; keeping %d older files (%s.1 is the newest)",
            self.path,
            self.max_bytes,
            self.keep,
            self.path.name,
        )

    # --- the log ------------------------------------------------------------------------

    def _count(self, reason: str, detail: str, *, messages: int = 0, readings: int = 0) -> None:
        now = self._clock()
        window = self._windows.get(reason)
        if window is None:
            # The first of its reason for a while: said at once.
            window = self._windows[reason] = _Window(logged_at=None)
        window.messages += messages
        window.readings += readings
        if not window.example:
            window.example = detail
        self._log_due(now)

    def _log_due(self, now: float | None = None, *, force: bool = False) -> None:
        now = self._clock() if now is None else now
        for reason, window in list(self._windows.items()):
            elapsed = self.log_interval_s if window.logged_at is None else now - window.logged_at
            if elapsed < self.log_interval_s and not force:
                continue
            if not (window.messages or window.readings):
                del self._windows[reason]  # a quiet interval: the next one is said at once
                continue
            counts = []
            if window.messages:
                counts.append(f"{window.messages:,} message{'s' if window.messages != 1 else ''}")
            if window.readings:
                counts.append(f"{window.readings:,} reading{'s' if window.readings != 1 else ''}")
            example = window.example[:LOG_DETAIL_CHARS] + ("..." if len(window.example) > LOG_DETAIL_CHARS else "")
            log.warning(
                "rejected %s for %s in the last %.0f s, e.g. %s; kept in %s",
                " and ".join(counts),
                reason,
                max(elapsed, 1.0),
                _one_line(example),
                self.path,
            )
            self._windows[reason] = _Window(logged_at=now)


def _clean(value: Any) -> Any:
    """``value`` with every string encodable as UTF-8 and every float finite (valid JSON)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates, e.g. from a decoder's surrogateescape
            return value.encode("utf-8", errors="backslashreplace").decode("utf-8")
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {str(_clean(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _one_line(text: str) -> str:
    """``text`` fit for one log line: no line breaks, no lone surrogates."""
    cleaned: str = _clean(text.replace("\r", "\\r").replace("\n", "\\n"))
    return cleaned


def _fallback(value: Any) -> str:
    """How an object JSON has no form for is written: its repr, or at least its type."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    cleaned: str = _clean(text)
    return cleaned


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def rotated_files(path: str | Path) -> list[Path]:
    """The rotated files of a dead-letter file, oldest first (``<name>.5`` ... ``<name>.1``)."""
    p = Path(path)
    found = []
    for candidate in p.parent.glob(f"{glob.escape(p.name)}.*") if p.parent.is_dir() else []:
        suffix = candidate.name[len(p.name) + 1 :]
        if suffix.isdigit() and candidate.is_file():
            found.append((int(suffix), candidate))
    return [c for _, c in sorted(found, reverse=True)]


def load(path: str | Path, *, include_rotated: bool = False) -> list[dict[str, Any]]:
    """Every entry of a dead-letter file (for tools and tests); with ``include_rotated``, those
    of its rotated files first, oldest first, so the entries are in the order they were written."""
    p = Path(path)
    files = [*rotated_files(p), p] if include_rotated else [p]
    entries: list[dict[str, Any]] = []
    for f in files:
        if f.exists():
            entries += [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    return entries
