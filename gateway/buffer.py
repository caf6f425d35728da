"""The gateway's disk log: store and forward, sequence numbers, boots, gap repair.

Every telemetry message is appended here (topic, encoded payload, boot, sequence number)
*before* it is handed to the broker, in one SQLite transaction per poll batch. A message
is marked acknowledged when the broker's PUBACK arrives, and stays in the log for
``retention_s`` after that, so it can be published again on a repair request. Messages
never acknowledged are the **backlog**: they are sent again (``replay`` in the payload)
after a reconnect or a restart of the gateway.

Durability: SQLite in WAL mode. ``synchronous=NORMAL`` (the default) survives any crash of
the gateway process (SIGKILL included): a committed transaction is in the WAL file, which
the operating system holds; only a power loss or kernel crash can lose the last commits
before the next checkpoint. ``synchronous=FULL`` fsyncs the WAL at every commit (one per
poll batch), which survives power loss too, at a cost measured in docs/gateway.md.

Boots: each :class:`DiskLog` opening (a start of the gateway process) is a new boot,
``b<n>-<start time in ms, hex>`` with ``n`` counting the boots of this log; the boots are
persisted in the ``boots`` table. Each boot numbers its messages from 1 (the ingest tracks
sequences per gateway boot). The counter of a boot is its highest stored number.

Bounds: ``retention_s`` (age, for every message) and ``max_bytes`` (the payloads and topics,
plus :data:`ROW_OVERHEAD` per message). When full, acknowledged messages go first, oldest
first; then the oldest unacknowledged messages are **dropped**: counted in ``dropped`` and
logged (once when it starts, then at most every 10 s).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger("gateway.buffer")

#: Bytes counted per message on top of its payload and topic (row, index entries).
ROW_OVERHEAD = 64
DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_RETENTION_S = 24 * 3600.0
#: How often (at most) age-based pruning runs.
PRUNE_EVERY_S = 5.0

Sync = Literal["normal", "full"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS boots (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    boot TEXT NOT NULL UNIQUE,
    started_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    boot TEXT NOT NULL,
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    readings INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    acked INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_boot_seq ON messages (boot, seq);
CREATE INDEX IF NOT EXISTS messages_unacked ON messages (id) WHERE acked = 0;
"""


@dataclass(frozen=True, slots=True)
class Entry:
    """One logged message."""

    id: int
    boot: str
    seq: int
    topic: str
    payload: bytes
    readings: int


class DiskLog:
    """The durable message log of one gateway (one SQLite file). Not thread-safe: the gateway
    loop is its only user."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        retention_s: float = DEFAULT_RETENTION_S,
        sync: Sync = "normal",
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.retention_s = retention_s
        self.sync = sync
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={sync.upper()}")
        self._db.executescript(_SCHEMA)
        started_ms = int(time.time() * 1000)
        with self._tx():
            cur = self._db.execute("INSERT INTO boots (boot, started_ms) VALUES ('', ?)", (started_ms,))
            n = int(cur.lastrowid or 0)
            self.boot = f"b{n}-{started_ms:x}"
            self._db.execute("UPDATE boots SET boot = ? WHERE n = ?", (self.boot, n))
        self.seq = 0
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(length(payload) + length(topic)), 0) FROM messages"
        ).fetchone()
        self.messages = int(row[0])
        self.bytes = int(row[1]) + ROW_OVERHEAD * self.messages
        self.depth = int(self._db.execute("SELECT COUNT(*) FROM messages WHERE acked = 0").fetchone()[0])
        #: Unacknowledged messages dropped (log full or older than the retention).
        self.dropped = 0
        #: Acknowledged messages removed before their retention ended, to make room.
        self.evicted = 0
        self._last_prune = 0.0
        self._last_drop_log = 0.0
        self._dropped_logged = 0

    # --- writing ------------------------------------------------------------------------

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def append_encoded(self, items: Sequence[tuple[int, str, bytes, int]]) -> list[Entry]:
        """Append ``(seq, topic, payload, readings)`` of this boot in one transaction (one commit)."""
        if not items:
            return []
        now_ms = int(time.time() * 1000)
        entries: list[Entry] = []
        with self._tx():
            for seq, topic, payload, readings in items:
                cur = self._db.execute(
                    "INSERT INTO messages (boot, seq, topic, payload, readings, created_ms) VALUES (?, ?, ?, ?, ?, ?)",
                    (self.boot, seq, topic, payload, readings, now_ms),
                )
                entries.append(Entry(int(cur.lastrowid or 0), self.boot, seq, topic, payload, readings))
                self.bytes += len(payload) + len(topic.encode()) + ROW_OVERHEAD
            self.messages += len(items)
            self.depth += len(items)
            self.seq = max(self.seq, items[-1][0])
            self._enforce_size()
        return entries

    def next_seq(self) -> int:
        """The next sequence number of this boot (not yet used)."""
        self.seq += 1
        return self.seq

    def mark_acked(self, ids: Iterable[int]) -> int:
        """The broker acknowledged these messages; returns how many were still unacknowledged."""
        ids = list(ids)
        if not ids:
            return 0
        changed = 0
        with self._tx():
            for chunk in _chunks(ids, 500):
                cur = self._db.execute(
                    f"UPDATE messages SET acked = 1 WHERE acked = 0 AND id IN ({','.join('?' * len(chunk))})", chunk
                )
                changed += cur.rowcount
        self.depth -= changed
        return changed

    def prune(self, *, force: bool = False) -> None:
        """Remove messages older than the retention (at most every :data:`PRUNE_EVERY_S`)."""
        now = time.monotonic()
        if not force and now - self._last_prune < PRUNE_EVERY_S:
            return
        self._last_prune = now
        cutoff = int((time.time() - self.retention_s) * 1000)
        with self._tx():
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(length(payload) + length(topic)), 0), COALESCE(SUM(1 - acked), 0) "
                "FROM messages WHERE created_ms < ?",
                (cutoff,),
            ).fetchone()
            if not row[0]:
                return
            self._db.execute("DELETE FROM messages WHERE created_ms < ?", (cutoff,))
            self._removed(int(row[0]), int(row[1]), int(row[2]), "older than the retention")

    def _removed(self, count: int, payload_bytes: int, unacked: int, why: str) -> None:
        self.messages -= count
        self.bytes -= payload_bytes + ROW_OVERHEAD * count
        self.depth -= unacked
        if unacked:
            self.dropped += unacked
            now = time.monotonic()
            if self._dropped_logged == 0 or now - self._last_drop_log >= 10:
                log.warning(
                    "disk log: dropped %d unacknowledged message(s) %s (%d dropped in all; limit %.1f MB, "
                    "retention %.0f s)",
                    self.dropped - self._dropped_logged,
                    why,
                    self.dropped,
                    self.max_bytes / 1e6,
                    self.retention_s,
                )
                self._last_drop_log = now
                self._dropped_logged = self.dropped

    def _enforce_size(self) -> None:
        """Inside a transaction: make room, acknowledged messages first, then the oldest."""
        if self.bytes <= self.max_bytes:
            return
        # Free a little more than needed (5 %), so this does not run at every append.
        target = int(self.max_bytes * 0.95)
        for acked_only in (True, False):
            while self.bytes > target:
                where = "WHERE acked = 1" if acked_only else ""
                rows = self._db.execute(
                    f"SELECT id, length(payload) + length(topic), acked FROM messages {where} ORDER BY id LIMIT 1000"
                ).fetchall()
                if not rows:
                    break
                need = self.bytes - target
                take, freed = [], 0
                for rid, size, _ in rows:
                    take.append(rid)
                    freed += size + ROW_OVERHEAD
                    if freed >= need:
                        break
                chosen = rows[: len(take)]
                self._db.execute(
                    f"DELETE FROM messages WHERE id <= ? {'AND acked = 1' if acked_only else ''}", (take[-1],)
                )
                unacked = sum(1 - a for _, _, a in chosen)
                if acked_only:
                    self.evicted += len(take)
                self._removed(len(take), sum(s for _, s, _ in chosen), unacked, "to keep the log within its size")

    # --- reading ------------------------------------------------------------------------

    def backlog(self, after_id: int, limit: int) -> list[Entry]:
        """Unacknowledged messages after ``after_id``, oldest first."""
        rows = self._db.execute(
            "SELECT id, boot, seq, topic, payload, readings FROM messages WHERE acked = 0 AND id > ? "
            "ORDER BY id LIMIT ?",
            (after_id, limit),
        ).fetchall()
        return [Entry(*r) for r in rows]

    def range(self, boot: str, first: int, last: int, limit: int) -> list[Entry]:
        """Messages ``first`` to ``last`` (inclusive) of ``boot`` still in the log, at most ``limit``."""
        rows = self._db.execute(
            "SELECT id, boot, seq, topic, payload, readings FROM messages WHERE boot = ? AND seq BETWEEN ? AND ? "
            "ORDER BY seq LIMIT ?",
            (boot, first, last, limit),
        ).fetchall()
        return [Entry(*r) for r in rows]

    def count_range(self, boot: str, first: int, last: int) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM messages WHERE boot = ? AND seq BETWEEN ? AND ?", (boot, first, last)
        ).fetchone()
        return int(row[0])

    def oldest_unacked_age_s(self) -> float:
        row = self._db.execute("SELECT created_ms FROM messages WHERE acked = 0 ORDER BY id LIMIT 1").fetchone()
        return max(0.0, time.time() - row[0] / 1000) if row else 0.0

    def boots(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT boot FROM boots ORDER BY n")]

    def entries(self) -> list[Entry]:
        """Every message in the log (for tests and tools; reads the whole log)."""
        rows = self._db.execute("SELECT id, boot, seq, topic, payload, readings FROM messages ORDER BY id").fetchall()
        return [Entry(*r) for r in rows]

    def file_bytes(self) -> int:
        """The log's size on disk (database and WAL)."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(f"{self.path}{suffix}")
        return total

    def stats(self) -> dict[str, object]:
        return {
            "buffer_depth": self.depth,
            "buffer_messages": self.messages,
            "buffer_bytes": self.bytes,
            "buffer_oldest_unsent_age_s": round(self.oldest_unacked_age_s(), 3),
            "buffer_dropped": self.dropped,
            "buffer_evicted": self.evicted,
        }

    def close(self) -> None:
        self._db.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, et: object, e: object, tb: object) -> None:
        self.db.execute("COMMIT" if et is None else "ROLLBACK")


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for k in range(0, len(items), size):
        yield items[k : k + size]


def replay_payload(payload: bytes) -> bytes:
    """The same message marked ``replay`` (sent again from the log), encoded by the contract."""
    from birlik.payload import encode_telemetry

    message = json.loads(payload)
    return encode_telemetry(
        gateway=message["gateway"],
        boot=message.get("boot"),
        seq=message["seq"],
        kind=message.get("kind"),
        samples=[(s["ts"], s["values"]) for s in message["samples"]],
        replay=True,
    )


def read_log(path: str | Path) -> list[Entry]:
    """Every message of a disk log, read-only (no new boot): for tests and tools."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT id, boot, seq, topic, payload, readings FROM messages ORDER BY id").fetchall()
    finally:
        db.close()
    return [Entry(*r) for r in rows]
