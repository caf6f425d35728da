"""Alarms on disk: every transition, the open alarms, and an outbox of notifications.

**Write, then notify.** :meth:`AlarmStore.commit` stores a batch of transitions and, in the
same SQLite transaction, one outbox entry per transition and channel. Only committed entries
are ever sent (:mod:`analytics.notifier`), and an entry is marked sent only after its channel
accepted it. So a worker killed at any moment (SIGKILL included) neither loses a notification
(the entry is still pending at the next start) nor sends one that was not stored. A kill
between a channel accepting a notification and the entry being marked sent makes it go out
once more with the same key (``Alarm.key``): receivers that keep keys see it is the same one.

SQLite in WAL mode with ``synchronous=NORMAL``: a commit survives the process being killed;
a power loss can lose the last commits (``synchronous=FULL`` in the constructor for that).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from birlik.alarm import Alarm, decode_alarm

log = logging.getLogger("analytics.alarms")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transitions (
    key TEXT PRIMARY KEY,
    alarm_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    extra TEXT NOT NULL,
    stored REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS transitions_alarm ON transitions (alarm_id, seq);
CREATE TABLE IF NOT EXISTS alarms (
    alarm_id TEXT PRIMARY KEY,
    machine TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    last_key TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    channel TEXT NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending',
    error TEXT NOT NULL DEFAULT '',
    sent REAL,
    UNIQUE (key, channel)
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (channel, status, id);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS progress (machine TEXT PRIMARY KEY, cursor INTEGER NOT NULL, model TEXT);
"""


@dataclass(frozen=True)
class Pending:
    """One notification to send: the outbox entry and its transition."""

    id: int
    channel: str
    alarm: Alarm
    attempts: int
    next_try: float
    created: float


class AlarmStore:
    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if synchronous.upper() == 'FULL' else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self.commits = 0
        #: Fault injection for the tests: ``BIRLIK_FAILPOINT=alarms.after_commit:<n>`` kills the
        #: process (SIGKILL) right after its n-th commit, before any notification of it is sent.
        failpoint = os.environ.get("BIRLIK_FAILPOINT", "")
        self._crash_after = int(failpoint.split(":")[1]) if failpoint.startswith("alarms.after_commit:") else 0

    # --- writing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, *, counted: bool = False) -> Iterator[None]:
        """One SQLite transaction, holding the lock until it is committed (or rolled back).
        ``counted``: a commit of transitions, where the fault-injection point sits."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            if counted:
                self.commits += 1
                if self.commits == self._crash_after:  # still holding the lock: the notifier cannot read it
                    os.kill(os.getpid(), signal.SIGKILL)

    def commit(self, alarms: Sequence[Alarm], channels: Iterable[str]) -> None:
        """Store ``alarms`` (transitions) and their outbox entries, in one transaction."""
        if not alarms:
            return
        names = list(channels)
        now = time.time()
        with self._transaction(counted=True):
            for a in alarms:
                self._db.execute(
                    "INSERT OR IGNORE INTO transitions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        a.key,
                        a.alarm_id,
                        a.seq,
                        _topic(a),
                        a.ts_ms,
                        a.encode().decode(),
                        json.dumps(a.extra, default=str),
                        now,
                    ),
                )
                self._db.execute(
                    "INSERT INTO alarms VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (alarm_id) DO UPDATE SET "
                    "state = excluded.state, last_key = excluded.last_key, updated = excluded.updated",
                    (a.alarm_id, str(a.path), a.kind, a.state, a.key, now),
                )
                self._db.executemany(
                    "INSERT OR IGNORE INTO outbox (key, channel, created) VALUES (?, ?, ?)",
                    [(a.key, c, now) for c in names],
                )

    def save_progress(self, cursors: Mapping[str, int], models: Mapping[str, Any]) -> None:
        """How far each of these machines was scored and (for those in ``models``) what its
        detector learned, one row a machine, in one transaction: only the machines that moved
        are written, so a save costs what changed, not the fleet."""
        rows = [(m, ts, json.dumps(models[m]) if m in models else None) for m, ts in cursors.items()]
        if not rows:
            return
        with self._transaction():
            self._db.executemany(
                "INSERT INTO progress VALUES (?, ?, ?) ON CONFLICT (machine) DO UPDATE SET "
                "cursor = excluded.cursor, model = COALESCE(excluded.model, progress.model)",
                rows,
            )

    def progress(self) -> tuple[dict[str, int], dict[str, Any]]:
        """The cursors and detector states of :meth:`save_progress`. A store written by an
        earlier version (one document of all cursors, one of all models) is read as it was."""
        with self._lock:
            rows = self._db.execute("SELECT machine, cursor, model FROM progress").fetchall()
        if not rows:
            cursors = self.get_state("cursor", {})
            models = self.get_state("models", {})
            cursors = cursors if isinstance(cursors, dict) else {}
            models = models if isinstance(models, dict) else {}
            if models and set(models) != set(cursors):
                models = {}  # saved apart from the cursors (an older version still): relearn
            return cursors, models
        out_models: dict[str, Any] = {}
        for machine, _, model in rows:
            if model is not None:
                try:
                    out_models[machine] = json.loads(model)
                except ValueError:
                    log.warning("alarms: the saved detector state of %s cannot be read; it learns again", machine)
        return {machine: int(cursor) for machine, cursor, _ in rows}, out_models

    def set_blob(self, name: str, value: bytes) -> None:
        """A named binary value (what a machine's data-quality checks learned)."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO blobs VALUES (?, ?)", (name, value))

    def get_blob(self, name: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM blobs WHERE name = ?", (name,)).fetchone()
        return bytes(row[0]) if row else None

    def get_state(self, name: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else default

    # --- reading -------------------------------------------------------------------------

    def latest(self, *, closed_since_s: float | None = None) -> list[Alarm]:
        """The latest transition of every open alarm (and of those closed in the last
        ``closed_since_s`` seconds, for the cooldown)."""
        cutoff = time.time() - closed_since_s if closed_since_s is not None else None
        with self._lock:
            rows = self._db.execute(
                "SELECT t.topic, t.body, t.extra FROM alarms a JOIN transitions t ON t.key = a.last_key "
                "WHERE a.state != 'normal' OR (? IS NOT NULL AND a.updated >= ?) ORDER BY a.alarm_id",
                (cutoff, cutoff),
            ).fetchall()
        return [_alarm(*row) for row in rows]

    def transitions(self, alarm_id: str | None = None) -> list[Alarm]:
        with self._lock:
            rows = self._db.execute(
                "SELECT topic, body, extra FROM transitions WHERE ? IS NULL OR alarm_id = ? ORDER BY ts_ms, seq",
                (alarm_id, alarm_id),
            ).fetchall()
        return [_alarm(*row) for row in rows]

    def next_pending(self, channel: str) -> Pending | None:
        """The oldest notification not yet sent on ``channel`` (in order: one at a time)."""
        with self._lock:
            row = self._db.execute(
                "SELECT o.id, o.attempts, o.next_try, o.created, t.topic, t.body, t.extra FROM outbox o "
                "JOIN transitions t ON t.key = o.key WHERE o.channel = ? AND o.status = 'pending' "
                "ORDER BY o.id LIMIT 1",
                (channel,),
            ).fetchone()
        if row is None:
            return None
        return Pending(row[0], channel, _alarm(row[4], row[5], row[6]), row[1], row[2], row[3])

    def sent(self, entry: Pending) -> None:
        with self._lock:
            self._db.execute("UPDATE outbox SET status = 'sent', sent = ? WHERE id = ?", (time.time(), entry.id))

    def retry(self, entry: Pending, error: str, delay_s: float) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_try = ?, error = ? WHERE id = ?",
                (time.time() + delay_s, error[:500], entry.id),
            )

    def failed(self, entry: Pending, error: str) -> None:
        """A permanent refusal: the entry is kept, marked failed, and not tried again."""
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, status = 'failed', error = ? WHERE id = ?",
                (error[:500], entry.id),
            )

    def outbox_counts(self) -> dict[str, dict[str, int]]:
        with self._lock:
            rows = self._db.execute("SELECT channel, status, COUNT(*) FROM outbox GROUP BY channel, status").fetchall()
        out: dict[str, dict[str, int]] = {}
        for channel, status, n in rows:
            out.setdefault(channel, {})[status] = n
        return out

    def delivery_latencies(self) -> list[float]:
        """Seconds from storing to sending, for every sent notification."""
        with self._lock:
            rows = self._db.execute("SELECT sent - created FROM outbox WHERE status = 'sent'").fetchall()
        return [float(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _topic(a: Alarm) -> str:
    p = a.path
    return f"birlik/{p.tenant}/{p.site}/{p.line}/{p.machine}/alarm"


def _alarm(topic: str, body: str, extra: str) -> Alarm:
    alarm = decode_alarm(topic, body.encode())
    alarm.extra.update(json.loads(extra))
    return alarm
