"""The alarm lifecycle (ISA-18.2): from the detectors' verdicts to alarms people can work with.

One :class:`Lifecycle` holds every open alarm (at most one per machine and kind, see
:mod:`birlik.alarm`) and turns what it is told into **transitions**:

- :meth:`Lifecycle.observe` — a verdict on one sample of one machine and kind (abnormal or
  not, with a priority and the signals behind it). Hysteresis: an alarm is raised when
  ``raise_after`` of the last ``window`` verdicts are abnormal, so a signal that crosses the
  threshold every few samples raises one alarm rather than none or many; it returns to
  normal after ``clear_after`` normal verdicts in a row. **Cooldown**: an alarm that returns
  and comes back within ``cooldown_s`` is the same alarm, reactivated, not a new one.
  **Priority** only rises while the alarm is active (``severity`` transition).
- :meth:`Lifecycle.machine_state` — the machine's operating state: a trip to ``fault``
  raises a ``trip`` alarm at once (critical); a planned stop (``stopped``, ``changeover``)
  **suppresses** its condition alarms, and none are raised until it runs again. Sensor
  alarms go on: a sensor is judged in every state on its own terms (a stop is when the
  data-quality checks see an offset, and the best time to fix a sensor).
- :meth:`Lifecycle.command` — acknowledge, shelve (until an expiry), unshelve, clear.
- :meth:`Lifecycle.tick` — the clock: shelves expire, unacknowledged alarms **escalate**
  after ``escalate_after_s``.

The lifecycle is pure bookkeeping: it never writes or sends anything. Every transition it
returns must be stored (:mod:`analytics.alarmstore`) before anything is notified; it can be
rebuilt from the store after a restart (:meth:`Lifecycle.restore`), so a restart neither
forgets open alarms nor raises them again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from birlik.alarm import (
    PRIORITIES,
    Alarm,
    AlarmKind,
    AlarmState,
    Command,
    Priority,
    SignalContext,
    Transition,
)
from birlik.topics import MachinePath

log = logging.getLogger("analytics.alarms")

#: Operating states that are planned stops: condition alarms are suppressed.
PLANNED_STOPS = frozenset({"stopped", "changeover"})
#: The priority each kind starts with, unless the verdict says more.
DEFAULT_PRIORITY: dict[AlarmKind, Priority] = {
    "condition": "medium",
    "sensor": "low",
    "trip": "critical",
    "stale": "medium",
}
_RANK = {p: i for i, p in enumerate(PRIORITIES)}
#: What a planned stop suppresses: the machine's condition (a sensor's fault is not the machine's).
_SUPPRESSED_KINDS: tuple[AlarmKind, ...] = ("condition",)


def _worse(a: Priority, b: Priority) -> Priority:
    return a if _RANK[a] >= _RANK[b] else b


@dataclass
class LifecycleSettings:
    #: Abnormal verdicts among the last ``window`` that raise an alarm.
    raise_after: int = 5
    window: int = 10
    #: Normal verdicts in a row that return an active alarm to normal.
    clear_after: int = 20
    #: An alarm that returns and comes back within this is reactivated, not raised anew.
    cooldown_s: float = 600.0
    #: An active alarm nobody acknowledged for this long escalates (once per activation).
    escalate_after_s: float = 1800.0


@dataclass
class Verdict:
    """What a detector says of one sample: abnormal or not, how bad, and why."""

    abnormal: bool
    priority: Priority = "medium"
    title: str = ""
    text: str = ""
    signals: tuple[SignalContext, ...] = ()
    health: float | None = None
    ttf_h: float | None = None
    ttf_low_h: float | None = None
    ttf_high_h: float | None = None


@dataclass
class _Open:
    """An alarm that is not ``normal``, or one that closed within the cooldown."""

    last: Alarm
    active: bool
    #: Device time it last became active (for escalation and cooldown).
    active_since_ms: int
    returned_ms: int | None = None
    escalated: bool = False
    #: The state it had before shelving or suppression.
    shelved_from: AlarmState | None = None


@dataclass
class _Debounce:
    recent: deque[bool] = field(default_factory=deque)
    abnormal: int = 0  # how many of ``recent`` are abnormal
    normal_run: int = 0


Describe = Callable[[MachinePath], tuple[str, str, str]]  # -> machine kind, team, dashboard link


class Lifecycle:
    def __init__(self, settings: LifecycleSettings | None = None, *, describe: Describe | None = None) -> None:
        self.settings = settings or LifecycleSettings()
        self.describe = describe or (lambda path: ("", "", ""))
        self._open: dict[tuple[MachinePath, AlarmKind], _Open] = {}
        self._debounce: defaultdict[tuple[MachinePath, AlarmKind], _Debounce] = defaultdict(_Debounce)
        self._stopped: set[MachinePath] = set()
        #: Device time of each machine's latest transition.
        self._latest: dict[MachinePath, int] = {}
        self.chatter_suppressed = 0

    # --- reading the state ------------------------------------------------------------

    def open_alarms(self, path: MachinePath | None = None) -> list[Alarm]:
        """The latest transition of every open alarm (of one machine, if given)."""
        return [
            o.last
            for (p, _), o in sorted(self._open.items(), key=lambda kv: kv[1].last.alarm_id)
            if o.last.open and (path is None or p == path)
        ]

    def is_active(self, path: MachinePath, kind: AlarmKind) -> bool:
        o = self._open.get((path, kind))
        return o is not None and o.active and o.last.open

    def get(self, alarm_id: str) -> Alarm | None:
        for o in self._open.values():
            if o.last.alarm_id == alarm_id:
                return o.last
        return None

    # --- inputs -----------------------------------------------------------------------

    def observe(self, path: MachinePath, kind: AlarmKind, ts_ms: int, verdict: Verdict) -> list[Alarm]:
        """One verdict on one sample; the transitions it causes."""
        key = (path, kind)
        d = self._debounce[key]
        s = self.settings
        d.recent.append(verdict.abnormal)
        d.abnormal += verdict.abnormal
        while len(d.recent) > s.window:
            d.abnormal -= d.recent.popleft()
        d.normal_run = 0 if verdict.abnormal else d.normal_run + 1
        o = self._open.get(key)
        out: list[Alarm] = []
        if o is not None and ts_ms <= o.last.ts_ms:
            return out  # judged before (samples read again after a restart): the hysteresis only
        if o is not None and o.last.state in ("shelved", "suppressed"):
            # Silenced: keep track of whether it is still active, say nothing.
            if verdict.abnormal and d.abnormal >= s.raise_after:
                o.active = True
            elif d.normal_run >= s.clear_after:
                o.active = False
            return out
        if path in self._stopped and kind in _SUPPRESSED_KINDS:
            return out  # a planned stop: no condition alarms
        if d.abnormal >= s.raise_after and verdict.abnormal:
            out += self._activate(key, ts_ms, verdict)
        elif o is not None and o.active and d.normal_run >= s.clear_after:
            out += self._return(key, ts_ms)
        return out

    def machine_state(self, path: MachinePath, state: str, ts_ms: int) -> list[Alarm]:
        """The machine's operating state on a sample: trips and planned stops."""
        out: list[Alarm] = []
        trip: tuple[MachinePath, AlarmKind] = (path, "trip")
        if self._latest.get(path, ts_ms - 1) >= ts_ms:
            return out  # judged before (read again after a restart)
        if state == "fault":
            o = self._open.get(trip)
            if o is None or not o.active or not o.last.open:
                title = f"{path.machine}: tripped"
                text = f"{path.machine} tripped: its state turned 'fault'; it is not producing"
                out += self._activate(trip, ts_ms, Verdict(True, "critical", title, text), immediate=True)
        elif trip in self._open and self._open[trip].active:
            out += self._return(trip, ts_ms)
        if state in PLANNED_STOPS and path not in self._stopped:
            self._stopped.add(path)
            for kind in _SUPPRESSED_KINDS:
                o = self._open.get((path, kind))
                if o is not None and o.last.open and o.last.state != "suppressed":
                    o.shelved_from = o.last.state
                    out.append(self._emit(o, "suppressed", "suppressed", ts_ms, comment=f"planned stop ({state})"))
                self._debounce.pop((path, kind), None)
        elif state not in PLANNED_STOPS and path in self._stopped:
            self._stopped.discard(path)
            for kind in _SUPPRESSED_KINDS:
                o = self._open.get((path, kind))
                if o is not None and o.last.state == "suppressed":
                    # Judged afresh once running: a fault still there raises again after the hysteresis.
                    out.append(self._emit(o, "cleared", "normal", ts_ms, comment="planned stop ended"))
        return out

    def set_active(self, path: MachinePath, kind: AlarmKind, ts_ms: int, verdict: Verdict | None) -> list[Alarm]:
        """An alarm whose cause is already debounced (a sensor issue): active with ``verdict``,
        returned with None. A new verdict on an active alarm updates its text (and priority)."""
        key = (path, kind)
        o = self._open.get(key)
        if o is not None and ts_ms <= o.last.ts_ms:
            return []
        if verdict is not None:
            if path in self._stopped and kind in _SUPPRESSED_KINDS:
                return []
            if o is not None and o.active and o.last.open:
                if o.last.state in ("shelved", "suppressed"):
                    return []
                o.last = dataclasses.replace(o.last, title=verdict.title, text=verdict.text)
                return []
            return self._activate(key, ts_ms, verdict, immediate=True)
        if o is not None and o.active:
            if o.last.state in ("shelved", "suppressed"):
                o.active = False
                return []
            return self._return(key, ts_ms)
        return []

    def stale(self, path: MachinePath, ts_ms: int, *, silent_s: float | None) -> list[Alarm]:
        """The machine's silence: ``silent_s`` seconds without readings (None: it reports)."""
        key: tuple[MachinePath, AlarmKind] = (path, "stale")
        o = self._open.get(key)
        if silent_s is not None:
            if o is None or not o.active or not o.last.open:
                minutes = silent_s / 60
                verdict = Verdict(
                    True,
                    "medium",
                    f"{path.machine}: no data",
                    f"no readings from {path.machine} for {minutes:.0f} min: the machine, its sensors, its "
                    "gateway or the network may be down",
                )
                return self._activate(key, ts_ms, verdict, immediate=True)
            return []
        if o is not None and o.active:
            return self._return(key, ts_ms)
        return []

    def command(self, cmd: Command, ts_ms: int) -> tuple[list[Alarm], str]:
        """Apply an operator's command; the transitions, and a sentence saying what happened."""
        targets = [
            o
            for (p, k), o in self._open.items()
            if o.last.open
            and (cmd.alarm_id == o.last.alarm_id or (not cmd.alarm_id and str(p) == cmd.machine))
            and (not cmd.kind or cmd.kind == k)
        ]
        if not targets:
            return [], f"{cmd.action}: no open alarm {cmd.alarm_id or cmd.machine}"
        out: list[Alarm] = []
        for o in targets:
            state = o.last.state
            if cmd.action == "acknowledge":
                if state == "unack_active":
                    out.append(self._emit(o, "acknowledged", "ack_active", ts_ms, cmd.user, cmd.comment))
                elif state == "unack_rtn":
                    out.append(self._emit(o, "acknowledged", "normal", ts_ms, cmd.user, cmd.comment))
            elif cmd.action == "shelve":
                if state != "shelved":
                    o.shelved_from = "ack_active" if state == "suppressed" else state
                    until = ts_ms + int(cmd.duration_s * 1000)
                    out.append(
                        self._emit(
                            o, "shelved", "shelved", ts_ms, cmd.user, cmd.comment, shelf=True, shelved_until=until
                        )
                    )
            elif cmd.action == "unshelve":
                if state == "shelved":
                    out.append(self._unshelve(o, ts_ms, cmd.user, cmd.comment))
            elif cmd.action == "clear":
                o.active = False
                out.append(self._emit(o, "cleared", "normal", ts_ms, cmd.user, cmd.comment))
        done = ", ".join(f"{a.alarm_id} {a.transition} -> {a.state}" for a in out) or "nothing to change"
        return out, f"{cmd.action} by {cmd.user or 'someone'}: {done}"

    def tick(self, now_ms: int) -> list[Alarm]:
        """Shelves that expired, escalations due."""
        out: list[Alarm] = []
        for o in list(self._open.values()):
            last = o.last
            if last.state == "shelved" and last.shelved_until_ms is not None and now_ms >= last.shelved_until_ms:
                out.append(self._unshelve(o, now_ms, "", "shelf expired"))
            elif (
                last.state == "unack_active"
                and not o.escalated
                and now_ms - o.active_since_ms >= self.settings.escalate_after_s * 1000
            ):
                o.escalated = True
                out.append(self._emit(o, "escalated", "unack_active", now_ms, comment="not acknowledged in time"))
            elif (
                not last.open and o.returned_ms is not None and now_ms - o.returned_ms > self.settings.cooldown_s * 1000
            ):
                del self._open[(last.path, last.kind)]
        return out

    # --- restoring ----------------------------------------------------------------------

    def restore(self, alarms: Iterable[Alarm]) -> None:
        """Rebuild from the latest stored transition of each alarm (open, or closed recently)."""
        for a in alarms:
            is_active = bool(a.extra.get("active", a.state in ("unack_active", "ack_active")))
            o = _Open(a, is_active, a.ts_ms, returned_ms=None if a.open else a.ts_ms)
            o.escalated = bool(a.extra.get("escalated", False))
            if a.state in ("shelved", "suppressed"):
                o.shelved_from = a.extra.get("shelved_from") or "ack_active"
            self._open[(a.path, a.kind)] = o
            self._latest[a.path] = max(a.ts_ms, self._latest.get(a.path, a.ts_ms))
            if a.state == "suppressed":
                self._stopped.add(a.path)

    # --- transitions ----------------------------------------------------------------------

    def _activate(
        self, key: tuple[MachinePath, AlarmKind], ts_ms: int, v: Verdict, *, immediate: bool = False
    ) -> list[Alarm]:
        path, kind = key
        o = self._open.get(key)
        priority = (
            v.priority if _RANK[v.priority] >= _RANK[DEFAULT_PRIORITY[kind]] or immediate else DEFAULT_PRIORITY[kind]
        )
        if o is not None and o.active and o.last.open:
            if _RANK[priority] > _RANK[o.last.priority]:  # worse than when raised: say so
                return [self._emit(o, "severity", o.last.state, ts_ms, verdict=v, priority=priority)]
            o.last = dataclasses.replace(o.last, signals=v.signals or o.last.signals, health=v.health, ttf_h=v.ttf_h)
            return []
        if o is not None and (
            o.last.open or (o.returned_ms is not None and ts_ms - o.returned_ms <= self.settings.cooldown_s * 1000)
        ):
            # Came back while unacknowledged, or within the cooldown: the same alarm again.
            o.active = True
            o.active_since_ms = ts_ms
            o.escalated = False
            o.returned_ms = None
            if not o.last.open:
                self.chatter_suppressed += 1
            return [
                self._emit(
                    o,
                    "reactivated",
                    "unack_active",
                    ts_ms,
                    verdict=v,
                    priority=_worse(priority, o.last.priority),
                )
            ]
        machine_kind, team, dashboard = self.describe(path)
        alarm_id = f"{path.machine}.{kind}.{ts_ms}"
        first = Alarm(
            path=path,
            alarm_id=alarm_id,
            seq=0,
            kind=kind,
            state="unack_active",
            transition="raised",
            priority=priority,
            ts_ms=ts_ms,
            title=v.title or f"{path.machine}: {kind}",
            text=v.text,
            machine_kind=machine_kind,
            team=team,
            dashboard=dashboard,
        )
        o = _Open(first, True, ts_ms)
        self._open[key] = o
        return [self._emit(o, "raised", "unack_active", ts_ms, verdict=v, priority=priority)]

    def _return(self, key: tuple[MachinePath, AlarmKind], ts_ms: int) -> list[Alarm]:
        o = self._open[key]
        o.active = False
        o.returned_ms = ts_ms
        state: AlarmState = "normal" if o.last.state == "ack_active" else "unack_rtn"
        return [self._emit(o, "returned", state, ts_ms)]

    def _unshelve(self, o: _Open, ts_ms: int, user: str, comment: str) -> Alarm:
        if o.active:
            state: AlarmState = "ack_active" if o.shelved_from == "ack_active" else "unack_active"
        else:
            state = "normal"
        return self._emit(o, "unshelved", state, ts_ms, user, comment)

    def _emit(
        self,
        o: _Open,
        transition: Transition,
        state: AlarmState,
        ts_ms: int,
        user: str = "",
        comment: str = "",
        *,
        verdict: Verdict | None = None,
        priority: Priority | None = None,
        shelf: bool = False,
        shelved_until: int | None = None,
    ) -> Alarm:
        last = o.last
        changes: dict[str, object] = {
            "seq": last.seq + 1,
            "transition": transition,
            "state": state,
            "ts_ms": ts_ms,
            "user": user,
            "comment": comment,
        }
        if priority is not None:
            changes["priority"] = priority
        if verdict is not None:
            changes.update(
                title=verdict.title or last.title,
                text=verdict.text or last.text,
                signals=verdict.signals or last.signals,
                health=verdict.health,
                ttf_h=verdict.ttf_h,
                ttf_low_h=verdict.ttf_low_h,
                ttf_high_h=verdict.ttf_high_h,
            )
        if shelf:
            changes["shelved_until_ms"] = shelved_until
        elif state != "shelved":
            changes["shelved_until_ms"] = None
        changes["extra"] = {**last.extra, "escalated": o.escalated, "shelved_from": o.shelved_from, "active": o.active}
        alarm = dataclasses.replace(last, **changes)  # type: ignore[arg-type]
        o.last = alarm
        self._latest[alarm.path] = max(ts_ms, self._latest.get(alarm.path, ts_ms))
        if not alarm.open and o.returned_ms is None:
            o.returned_ms = ts_ms
        log.info("alarm %s: %s -> %s (%s)", alarm.alarm_id, transition, state, alarm.priority)
        return alarm


def alarm_rate(
    transitions: Sequence[Alarm], *, flood_count: int = 10, flood_window_s: float = 600.0
) -> dict[str, float]:
    """EEMUA 191 figures over stored transitions: alarms raised per hour per team, the peak in
    any 10 minutes, and floods (more than ``flood_count`` raised within ``flood_window_s``)."""
    raised = sorted((a for a in transitions if a.transition == "raised"), key=lambda a: a.ts_ms)
    if not raised:
        return {"alarms": 0, "per_hour": 0.0, "peak_10min": 0, "floods": 0}
    span_h = max((raised[-1].ts_ms - raised[0].ts_ms) / 3.6e6, 1.0)
    teams = {a.team for a in raised}
    window_ms = flood_window_s * 1000
    peak = floods = 0
    j = 0
    in_flood = False
    for i, a in enumerate(raised):
        while a.ts_ms - raised[j].ts_ms > window_ms:
            j += 1
        n = i - j + 1
        peak = max(peak, n)
        if n > flood_count and not in_flood:
            floods += 1
            in_flood = True
        elif n <= flood_count:
            in_flood = False
    return {
        "alarms": len(raised),
        "per_hour": round(len(raised) / span_h, 3),
        "per_hour_per_team": round(len(raised) / span_h / max(len(teams), 1), 3),
        "peak_10min": peak,
        "floods": floods,
    }
