"""Delivering stored notifications: one thread per channel, in order, retried until sent.

Each channel has its own thread reading its outbox (:class:`~analytics.alarmstore.AlarmStore`)
oldest first, so a slow or absent channel (an SMTP server down, a webhook that hangs until
its time-out) delays only itself, never the worker nor the other channels; notifications on
one channel go out in the order they were stored. A failed delivery is retried with a
back-off of 2 s doubling up to ``max_backoff_s`` (or after the channel's ``Retry-After``); a
permanent refusal (``ChannelRefused``: wrong address, wrong credentials) is logged, kept in
the outbox as failed, and the channel goes on with the next one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from analytics.alarmstore import AlarmStore
from birlik.alarm import Alarm

log = logging.getLogger("analytics.notifier")


class Channel(Protocol):
    """A way to reach people (see :mod:`analytics.channels`)."""

    name: str

    def send(self, alarm: Alarm) -> None: ...

    def close(self) -> None: ...


def _retry_after(exc: Exception) -> float | None:
    value = getattr(exc, "retry_after_s", None)
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _refused(exc: Exception) -> bool:
    return any(cls.__name__ == "ChannelRefused" for cls in type(exc).__mro__)


class Notifier:
    def __init__(
        self, store: AlarmStore, channels: Sequence[Channel], *, max_backoff_s: float = 300.0, idle_s: float = 0.2
    ) -> None:
        self.store = store
        self.channels = list(channels)
        self.max_backoff_s = max_backoff_s
        self.idle_s = idle_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self.delivered: dict[str, int] = {c.name: 0 for c in channels}
        self.failures: dict[str, int] = {c.name: 0 for c in channels}

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.channels]

    def start(self) -> None:
        for channel in self.channels:
            t = threading.Thread(target=self._run, args=(channel,), name=f"notify-{channel.name}", daemon=True)
            t.start()
            self._threads.append(t)

    def wake(self) -> None:
        """New entries were committed: look now rather than at the next idle check."""
        self._wake.set()

    def _run(self, channel: Channel) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                entry = self.store.next_pending(channel.name)
            except Exception:  # the store is closing, or a disk error: say so, try again
                log.exception("notifier %s: cannot read the outbox", channel.name)
                self._stop.wait(1.0)
                continue
            if entry is None:
                self._wake.wait(self.idle_s)
                self._wake.clear()
                continue
            wait = entry.next_try - time.time()
            if wait > 0:
                self._stop.wait(min(wait, 1.0))
                continue
            try:
                channel.send(entry.alarm)
            except Exception as exc:
                self.failures[channel.name] += 1
                if _refused(exc):
                    log.error("%s refused %s for good: %s", channel.name, entry.alarm.key, exc)
                    self.store.failed(entry, str(exc))
                    continue
                delay = _retry_after(exc) or min(self.max_backoff_s, 2.0 * 2 ** min(entry.attempts, 16))
                if not failing:
                    log.warning(
                        "%s: cannot deliver %s (%s); retrying every %.0f s at most, in order",
                        channel.name,
                        entry.alarm.key,
                        exc,
                        delay,
                    )
                    failing = True
                self.store.retry(entry, str(exc), delay)
                continue
            self.store.sent(entry)
            self.delivered[channel.name] += 1
            if failing:
                log.info("%s: delivering again (%s)", channel.name, entry.alarm.key)
                failing = False

    def drain(self, timeout_s: float) -> bool:
        """Wait until every channel's outbox is empty of pending entries (or the time-out)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            counts = self.store.outbox_counts()
            if not any(c.get("pending", 0) for c in counts.values()):
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout_s)
        for channel in self.channels:
            try:
                channel.close()
            except Exception:
                log.exception("closing channel %s", channel.name)
