"""Per-gateway sequence tracking: which messages are new, which came again, which are missing.

Every telemetry message carries its gateway's id, the gateway's boot identity (``boot``) and a
sequence number that grows by one per message within a boot. The tracker keeps, per
(gateway, boot), the highest number seen and the numbers below it not seen yet (the gaps), so:

- a message seen before (a broker redelivery after a lost connection or a restart of the
  ingest) is recognised, and the ingest writes it again (idempotent: same series and
  timestamp) without counting its readings twice;
- gaps are counted as a metric. With several ingest processes sharing the stream (``$share``)
  each sees only part of every sequence, so per-process gaps say nothing there: gap repair
  looks at what all of them stored.

Memory is bounded: at most ``max_streams`` (gateway, boot) pairs, least recently seen dropped,
and at most ``max_missing`` remembered gaps per stream (older ones are forgotten: counted as
missing for good).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

#: A gateway without a boot id whose sequence falls back this far restarted.
RESTART_DROP = 1000


@dataclass(slots=True)
class _Stream:
    highest: int
    missing: set[int] = field(default_factory=set)
    #: Gaps forgotten when ``missing`` overflowed (still counted as missing).
    forgotten: int = 0


class SequenceTracker:
    def __init__(self, *, max_streams: int = 10_000, max_missing: int = 100_000) -> None:
        self.max_streams = max_streams
        self.max_missing = max_missing
        self._streams: OrderedDict[tuple[str, str | None], _Stream] = OrderedDict()
        self.repeats = 0
        self.restarts = 0

    def observe(self, gateway: str, boot: str | None, seq: int) -> bool:
        """Record one message; True when it is new, False when it was seen before."""
        key = (gateway, boot)
        stream = self._streams.get(key)
        if stream is None:
            self._streams[key] = _Stream(seq)
            if len(self._streams) > self.max_streams:
                self._streams.popitem(last=False)
            return True
        self._streams.move_to_end(key)
        if seq > stream.highest:
            if seq > stream.highest + 1:
                self._add_missing(stream, stream.highest + 1, seq)
            stream.highest = seq
            return True
        if seq in stream.missing:
            stream.missing.discard(seq)
            return True
        if boot is None and (seq == 0 or stream.highest - seq > RESTART_DROP):
            # An old gateway without a boot id started counting again.
            self.restarts += 1
            self._streams[key] = _Stream(seq)
            return True
        self.repeats += 1
        return False

    def _add_missing(self, stream: _Stream, start: int, end: int) -> None:
        count = end - start
        room = self.max_missing - len(stream.missing)
        if count > room:
            stream.forgotten += count - max(room, 0)
            start = end - max(room, 0)
        stream.missing.update(range(start, end))

    @property
    def missing(self) -> int:
        """Sequence numbers not (yet) received, over every stream."""
        return sum(len(s.missing) + s.forgotten for s in self._streams.values())

    def gaps(self, gateway: str, boot: str | None) -> list[tuple[int, int]]:
        """The missing ranges of one stream, as (first, last) inclusive, oldest first."""
        stream = self._streams.get((gateway, boot))
        if stream is None:
            return []
        ranges: list[tuple[int, int]] = []
        for n in sorted(stream.missing):
            if ranges and ranges[-1][1] == n - 1:
                ranges[-1] = (ranges[-1][0], n)
            else:
                ranges.append((n, n))
        return ranges
