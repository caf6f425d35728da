"""Dead letters: every rejected message or reading, kept with its reason for inspection.

One JSON object per line, e.g.::

    {"time": "2026-11-22T08:00:01.5Z", "reason": "wrong_unit", "detail": "bearing_temp must be
     in degC, got 'degF'", "topic": "birlik/.../telemetry", "gateway": "gw-1", "seq": 17,
     "signal": "bearing_temp", "value": 141.8, "ts": 1763800000000}

Rejected whole messages keep their payload (as text, undecodable bytes escaped), so a
device's bad output can be replayed once fixed.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from birlik.payload import Rejection, Telemetry

log = logging.getLogger(__name__)

KEEP_PAYLOAD_BYTES = 64 * 1024


class DeadLetters:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.messages: Counter[str] = Counter()
        self.readings: Counter[str] = Counter()

    def _write(self, entry: dict[str, Any]) -> None:
        entry = {"time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"), **entry}
        self._file.write(json.dumps(entry, default=repr) + "\n")

    def message(self, topic: str, payload: bytes, reason: str, detail: str) -> None:
        """A whole message was rejected."""
        self.messages[reason] += 1
        self._write(
            {
                "kind": "message",
                "reason": reason,
                "detail": detail,
                "topic": topic,
                "payload_bytes": len(payload),
                "payload": payload[:KEEP_PAYLOAD_BYTES].decode("utf-8", errors="backslashreplace"),
            }
        )

    def readings_of(self, topic: str, telemetry: Telemetry) -> None:
        """Readings of an otherwise accepted message were rejected."""
        for r in telemetry.rejections:
            self.reading(topic, r, gateway=telemetry.gateway, seq=telemetry.seq)

    def reading(self, topic: str, r: Rejection, **context: Any) -> None:
        self.readings[r.reason] += 1
        self._write(
            {
                "kind": "reading",
                "reason": str(r.reason),
                "detail": r.detail,
                "topic": topic,
                **context,
                "signal": r.signal,
                "value": r.value,
                "ts": r.ts_ms,
            }
        )

    def lines(self, lines: list[str], reason: str, detail: str, readings: int) -> None:
        """Line-protocol points the database refused."""
        self.readings[reason] += readings
        self._write({"kind": "points", "reason": reason, "detail": detail, "lines": lines})

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def load(path: str | Path) -> list[dict[str, Any]]:
    """Every entry of a dead-letter file (for tools and tests)."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
