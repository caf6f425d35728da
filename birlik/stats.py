"""Services' counters as a small JSON file, rewritten atomically, for the demo and operators.

A service given ``--stats-file`` keeps its latest counters there while it runs and its final
counters when it stops, so a supervisor (or a person with ``cat``) can follow it without
another protocol.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class StatsFile:
    def __init__(self, path: str | Path | None, *, every_s: float = 1.0) -> None:
        self.path = Path(path) if path else None
        self.every_s = every_s
        self._last = 0.0

    def update(self, stats: dict[str, Any], *, force: bool = False) -> None:
        if self.path is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({**stats, "updated_at": time.time()}, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def read_stats(path: str | Path) -> dict[str, Any]:
    """The latest counters, or an empty dict when there are none yet."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
