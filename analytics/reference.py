"""Redundancy across machines: the ambient sensors of a line's machines measure the same air.

One machine's ambient sensor reading low looks, from that machine alone, exactly like the
machine running hot (all its temperatures high against ambient); one reading high, like a
machine running cool. The machines beside it settle the question: their ambient sensors
stand in the same hall. :class:`LineReferences` keeps the line's recent ambient readings
and gives each machine's samples its neighbours' readings at that time (``Reading.refs``);
:class:`ReferenceCheck` (one of the data-quality checks) learns, against each neighbour, how
far this machine's sensor usually sits from it (a sensor near a warm wall, in the sun) and
how much the difference varies, and reports a **drift** when the sensor leaves that band
against most of its neighbours at once (one faulty neighbour is outvoted).

Nothing here knows a unit: a band is ``k`` times the difference's learned robust spread.
At least ``min_others`` neighbours must report within ``max_gap_ms`` of a sample, or it has
no verdict (a line of two machines cannot say which sensor is wrong).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from analytics.quality import (
    Batch,
    Commit,
    Finding,
    Held,
    IssueKind,
    Reading,
    Value,
    _minutes,
    _nothing,
    _robust_spread,
    _with_unit,
)
from birlik.topics import MachinePath

#: The quantities a line's machines measure alike.
SHARED = ("ambient_temp",)


@dataclass(slots=True)
class _Series:
    ts: list[int]
    values: list[float]


class LineReferences:
    """The line's recent readings of :data:`SHARED` signals, per machine, for references.

    The worker adds every batch's samples first (:meth:`add`), then asks each machine's
    references (:meth:`refs`), then forgets what is older than ``max_gap_ms`` behind each
    machine's newest reading (:meth:`prune`). Neighbours beyond the first ``max_others``
    of a line are not consulted (the median of a few is as good, and cheaper)."""

    def __init__(
        self,
        *,
        max_gap_ms: int = 600_000,
        min_others: int = 2,
        max_others: int = 8,
        every_ms: int = 60_000,
        store_every_ms: int = 15_000,
    ) -> None:
        self.max_gap_ms = max_gap_ms
        self.min_others = min_others
        self.max_others = max_others
        #: A machine's samples get references at most this often (the air changes slowly).
        self.every_ms = every_ms
        #: Readings closer than this to the one kept before are not kept.
        self.store_every_ms = store_every_ms
        self._given: dict[MachinePath, int] = {}
        self._lines: dict[tuple[str, str, str], dict[str, dict[str, _Series]]] = {}
        #: Per line: how many series it has had (a new one changes everyone's neighbours).
        self._versions: dict[tuple[str, str, str], int] = {}
        #: Per machine and signal: its line's version when its neighbours were last listed, and them.
        self._neighbours: dict[tuple[MachinePath, str], tuple[int, list[tuple[str, _Series]]]] = {}

    @staticmethod
    def _line(path: MachinePath) -> tuple[str, str, str]:
        return (path.tenant, path.site, path.line)

    def add(self, path: MachinePath, ts: Sequence[int], values: Sequence[Mapping[str, Value]]) -> None:
        """A machine's samples, in its time order (later ones than it had only)."""
        line = self._line(path)
        machines = self._lines.setdefault(line, {})
        mine = machines.setdefault(path.machine, {})
        for name in SHARED:
            series = mine.get(name)
            for t, v in zip(ts, values, strict=False):
                x = v.get(name)
                if type(x) is not float and (type(x) is not int or isinstance(x, bool)):
                    continue
                x = float(x)
                if not math.isfinite(x) or type(t) is not int:
                    continue
                if series is None:
                    series = mine[name] = _Series([], [])
                    self._versions[line] = self._versions.get(line, 0) + 1
                if series.ts and t - series.ts[-1] < max(self.store_every_ms, 1):
                    continue
                series.ts.append(t)
                series.values.append(x)

    def refs(self, path: MachinePath, ts: Sequence[int]) -> list[Mapping[str, float] | None] | None:
        """Per sample time: each neighbour's reading nearest in time within ``max_gap_ms``,
        keyed ``<signal>@<machine>``; None where there is none (None: none at all). A
        machine's samples less than ``every_ms`` after the last one given references get
        none (ask in the machine's time order)."""
        machines = self._lines.get(self._line(path))
        if not machines or len(machines) <= self.min_others:
            return None
        out: list[dict[str, float] | None] = [None] * len(ts)
        found = False
        wanted: list[tuple[int, int]] = []  # (index, time) of the samples given references
        last = self._given.get(path)
        for i, t in enumerate(ts):
            if last is None or t - last >= self.every_ms:
                wanted.append((i, t))
                last = t
        if not wanted:
            return None
        if last is not None:
            self._given[path] = last
        for name in SHARED:
            cached = self._neighbours.get((path, name))
            version = self._versions.get(self._line(path), 0)
            if cached is None or cached[0] != version:
                mine = [(m, s) for m, per in machines.items() if m != path.machine and (s := per.get(name)) is not None]
                cached = self._neighbours[(path, name)] = (version, mine[: self.max_others])
            others = cached[1]
            if len(others) < self.min_others:
                continue
            for m, s in others:
                k = f"{name}@{m}"
                for i, t in wanted:
                    j = bisect_left(s.ts, t)
                    best = None
                    if j < len(s.ts) and s.ts[j] - t <= self.max_gap_ms:
                        best = j
                    if j > 0 and t - s.ts[j - 1] <= self.max_gap_ms and (best is None or t - s.ts[j - 1] < s.ts[j] - t):
                        best = j - 1
                    if best is not None:
                        got = out[i]
                        if got is None:
                            got = out[i] = {}
                        got[k] = s.values[best]
                        found = True
        return list(out) if found else None

    def prune(self) -> None:
        """Forget readings more than ``max_gap_ms`` older than their machine's newest."""
        for machines in self._lines.values():
            for per in machines.values():
                for s in per.values():
                    if len(s.ts) > 1 and s.ts[0] < s.ts[-1] - self.max_gap_ms:
                        k = bisect_left(s.ts, s.ts[-1] - self.max_gap_ms)
                        del s.ts[:k], s.values[:k]


@dataclass(slots=True)
class _Pair:
    """This machine's sensor against one neighbour's: the learned difference and its band."""

    diffs: list[float]
    base: float = 0.0
    limit: float = 0.0  # 0: not judged


def _split(key: str) -> tuple[str, str]:
    name, _, machine = key.partition("@")
    return name, machine


class ReferenceCheck:
    """A :data:`SHARED` sensor that leaves its learned band against most of its neighbours
    (module docs): learned per neighbour (two sensors in a hall can differ by a steady few
    kelvin), judged by majority: off against more than half of the neighbours judged (at
    least ``min_others``), so one faulty neighbour does not make a healthy sensor look off.
    Running samples only (a machine's own heat near its sensor is part of what is learned).
    Raised after ``confirm_s`` of judged samples off in a row (and at least ``min_samples``),
    cleared after ``clear_s`` back."""

    kinds: tuple[IssueKind, ...] = ("drift",)

    def __init__(
        self,
        *,
        k: float = 8.0,
        min_others: int = 2,
        confirm_s: float = 1800.0,
        clear_s: float = 1800.0,
        min_samples: int = 5,
        min_learned: int = 60,
        max_credit_s: float = 600.0,
    ) -> None:
        self.k = k
        self.min_others = min_others
        self.confirm_ms = int(confirm_s * 1000)
        self.clear_ms = int(clear_s * 1000)
        self.min_samples = min_samples
        self.min_learned = min_learned
        self.max_credit_ms = int(max_credit_s * 1000)
        self._pairs: dict[str, _Pair] = {}
        self._counts: dict[str, Held] = {}

    def learn(self, r: Reading) -> None:
        if not r.running or not r.refs:
            return
        for key, ref in r.refs.items():
            x = r.values.get(_split(key)[0])
            if x is None:
                continue
            pair = self._pairs.get(key)
            if pair is None:
                pair = self._pairs[key] = _Pair([])
            if len(pair.diffs) < 50_000:
                pair.diffs.append(x - ref)

    def freeze(self) -> None:
        for key, pair in list(self._pairs.items()):
            if len(pair.diffs) < self.min_learned:
                del self._pairs[key]
                continue
            d = np.asarray(pair.diffs, dtype=np.float64)
            pair.base = float(np.median(d))
            dev = np.abs(d - pair.base)
            spread = _robust_spread(d)
            if spread <= 0:
                nonzero = dev[dev > 0]
                spread = float(nonzero.min()) if nonzero.size else 0.0
            pair.limit = self.k * spread
            pair.diffs = []
            if pair.limit <= 0:
                del self._pairs[key]
        for key in self._pairs:
            self._counts.setdefault(_split(key)[0], Held())

    def _verdicts(self, r: Reading) -> dict[str, tuple[bool, list[tuple[str, float, float]]]]:
        """Per signal with enough neighbours: (off, [(neighbour, its reading, difference)])."""
        seen: dict[str, list[tuple[str, float, float, bool]]] = {}
        for key, ref in r.refs.items():
            pair = self._pairs.get(key)
            if pair is None:
                continue
            name, machine = _split(key)
            x = r.values.get(name)
            if x is None:
                continue
            d = x - ref - pair.base
            seen.setdefault(name, []).append((machine, ref, d, abs(d) > pair.limit))
        out: dict[str, tuple[bool, list[tuple[str, float, float]]]] = {}
        for name, judged in seen.items():
            if len(judged) >= self.min_others:
                off = sum(j[3] for j in judged)
                out[name] = (2 * off > len(judged), [(m, ref, d) for m, ref, d, _ in judged])
        return out

    def plan(self, b: Batch, faulty: frozenset[str] = frozenset()) -> Commit | None:
        """Batch form: in columns while no sample is off and no count is under way."""
        if not self._pairs or b.refs is None:
            return _nothing
        if any(c.bad_n or c.active for c in self._counts.values()):
            return None
        names = {_split(k)[0] for k in self._pairs}
        cols = {n: b.index[n] for n in names if n in b.index and n not in faulty}
        if not cols:
            return _nothing
        last: dict[str, int] = {}
        x = b.x
        for j, refs in enumerate(b.refs):
            if not refs or not b.running[j]:
                continue
            votes: dict[str, list[int]] = {}
            for key, ref in refs.items():
                pair = self._pairs.get(key)
                if pair is None:
                    continue
                name = _split(key)[0]
                i = cols.get(name)
                if i is None:
                    continue
                v = votes.setdefault(name, [0, 0])
                v[0] += 1
                v[1] += abs(x[j, i] - ref - pair.base) > pair.limit
            for name, (n, off) in votes.items():
                if n >= self.min_others:
                    if 2 * off > n:
                        return None
                    last[name] = b.ts_list[j]
        if not last:
            return _nothing

        def commit() -> None:
            for name, ts in last.items():
                self._counts[name].last_ms = ts

        return commit

    def check(self, r: Reading, faulty: frozenset[str]) -> Iterable[Finding]:
        if not r.running or not r.refs or not self._pairs:
            return ()
        out: list[Finding] = []
        for name, (off, judged) in self._verdicts(r).items():
            c = self._counts.get(name)
            if c is None or name in faulty:
                continue
            credit = 0 if c.last_ms is None else min(r.ts_ms - c.last_ms, self.max_credit_ms)
            c.last_ms = r.ts_ms
            changed = c.step(off, credit, self.confirm_ms, self.clear_ms, self.min_samples)
            if changed is False:
                out.append(Finding(name, "drift", False))
            elif changed:
                x = r.values[name]
                theirs = ", ".join(f"{m} {_with_unit(ref, name)}" for m, ref, _ in judged)
                median = float(np.median([d for _, _, d in judged]))
                out.append(
                    Finding(
                        name,
                        "drift",
                        True,
                        f"{name} reads {_with_unit(x, name)}, {median:+.1f} K off from what the line's other "
                        f"ambient sensors read ({theirs}; against each, beyond its learned usual difference) "
                        f"for {_minutes(c.bad_ms)}: the sensor has drifted, not the air: check the sensor",
                    )
                )
        return out
