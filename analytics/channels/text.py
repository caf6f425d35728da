"""The words people read, in one place: subject, full text (e-mail, log), compact (phones)."""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from collections.abc import Mapping

from birlik.alarm import Alarm, SignalContext

log = logging.getLogger("analytics.channels")

# --- words -----------------------------------------------------------------------------------

_STATES = {
    "unack_active": "active, not acknowledged",
    "ack_active": "active, acknowledged",
    "unack_rtn": "back to normal, not acknowledged yet",
    "shelved": "shelved (silenced by someone for a while)",
    "suppressed": "suppressed (the machine is in a planned stop)",
    "normal": "closed",
}
_TRANSITIONS = {
    "raised": "raised",
    "severity": "priority changed",
    "escalated": "escalated",
    "acknowledged": "acknowledged",
    "returned": "returned to normal",
    "reactivated": "active again",
    "shelved": "shelved",
    "unshelved": "unshelved",
    "suppressed": "suppressed",
    "cleared": "cleared",
}
_KINDS = {
    "condition": "machine condition",
    "sensor": "sensor fault (the sensor reads wrong: check or replace the sensor)",
    "trip": "machine trip",
    "stale": "no data (the machine or its gateway stopped reporting)",
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SUBJECT_MAX = 200
_TELEGRAM_MAX = 4096


def _one_line(text: str, limit: int | None = None) -> str:
    """``text`` without line breaks or control characters (safe in a mail header), shortened."""
    line = _CONTROL.sub(" ", text).strip()
    if limit is not None and len(line) > limit:
        line = line[: limit - 1].rstrip() + "…"
    return line


def _brief(text: str, limit: int = 200) -> str:
    return _one_line(text, limit)


def _num(x: float | None) -> str:
    """A number as people read it: 71.0, 0.42, 0.0012, 1.23e+09; None is 'unknown'."""
    if x is None:
        return "unknown"
    try:
        x = float(x)
    except (TypeError, ValueError, OverflowError):
        return str(x)
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "infinite" if x > 0 else "-infinite"
    a = abs(x)
    if a == 0:
        return "0"
    if a >= 1e6:
        return f"{x:.3g}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        text = f"{x:.2f}"
        return text[:-1] if text.endswith("0") else text
    if a >= 0.01:
        return f"{x:.2f}"
    return f"{x:.2g}"


def _percent(x: float) -> str:
    if not math.isfinite(x) or abs(x) >= 1e4:
        return _num(x)
    return f"{x * 100:.0f} %"


def _with_unit(x: float | None, unit: str) -> str:
    text = _num(x)
    return f"{text} {_one_line(unit)}" if unit and x is not None else text


def _rate_unit(unit: str) -> str:
    unit = _one_line(unit)
    if unit in ("degC", "°C", "C", "K"):
        return "K/h"
    if not unit:
        return "per hour"
    return f"{unit} per hour" if "/" in unit else f"{unit}/h"


def _trend(rate: float | None, unit: str) -> str:
    if rate is None or math.isnan(rate):
        return ""
    text = _num(abs(rate))
    if text == "0" or text.strip("0.") == "":
        return "steady"
    return f"{'rising' if rate > 0 else 'falling'} {text} {_rate_unit(unit)}"


def format_signal(signal: SignalContext) -> str:
    """``bearing_temp 71.0 degC, normal 53.0 degC, rising 3.0 K/h`` (missing parts left out)."""
    parts = [f"{_one_line(signal.name) or 'signal'} {_with_unit(signal.value, signal.unit)}"]
    if signal.normal is not None:
        parts.append(f"normal {_with_unit(signal.normal, signal.unit)}")
    trend = _trend(signal.rate_per_h, signal.unit)
    if trend:
        parts.append(trend)
    return ", ".join(parts)


def _hours(h: float, scale: float | None = None) -> str:
    """Hours as minutes, hours or days, chosen by ``scale`` (default: ``h`` itself), so the
    numbers of one estimate and its band are in the same unit."""
    if math.isnan(h):
        return "n/a"
    if math.isinf(h):
        return "never" if h > 0 else "overdue"
    a = abs(h if scale is None else scale)
    if a < 1:
        return f"{h * 60:.0f} min"
    if a < 10:
        return f"{h:.1f} h"
    if a < 48:
        return f"{h:.0f} h"
    days = h / 24
    return f"{days:.1f} days" if abs(days) < 1e6 else f"{days:.3g} days"


def format_ttf(alarm: Alarm) -> str:
    """``about 36 h (between 20 h and 60 h)``; empty when no estimate is known."""
    low, high, ttf = alarm.ttf_low_h, alarm.ttf_high_h, alarm.ttf_h
    known = [abs(h) for h in (ttf, high, low) if h is not None and math.isfinite(h)]
    scale = known[0] if known else None  # the estimate's unit, else the band's
    if low is not None and high is not None:
        band = f"between {_hours(low, scale)} and {_hours(high, scale)}"
    elif low is not None:
        band = f"at least {_hours(low, scale)}"
    elif high is not None:
        band = f"at most {_hours(high, scale)}"
    else:
        band = ""
    if ttf is None:
        return band
    return f"about {_hours(ttf, scale)}" + (f" ({band})" if band else "")


def _time(ts_ms: int) -> str:
    try:
        t = dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return f"{ts_ms} ms after 1970-01-01 UTC"
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def _machine(alarm: Alarm) -> str:
    return _one_line(str(alarm.path.machine)) or "machine"


def _title(alarm: Alarm) -> str:
    return _one_line(alarm.title) or f"{_one_line(alarm.kind)} alarm"


def _words(table: Mapping[str, str], value: str) -> str:
    return table.get(value, _one_line(str(value)))


def format_subject(alarm: Alarm) -> str:
    """``[birlik] CRITICAL pump-302: bearing temperature high (raised)``: one line, at most 200
    characters."""
    head = f"[birlik] {_one_line(str(alarm.priority)).upper()} {_machine(alarm)}: "
    tail = f" ({_words(_TRANSITIONS, alarm.transition)})"
    room = max(_SUBJECT_MAX - len(head) - len(tail), 20)
    return _clean(_one_line(head + _one_line(_title(alarm), room) + tail, _SUBJECT_MAX))


def format_text(alarm: Alarm) -> str:
    """The full plain-text message: where, what is wrong, the signals, health, time to failure,
    state, who acknowledged, the dashboard link. Used by e-mail and the log."""
    p = alarm.path
    machine = _machine(alarm) + (f" ({_one_line(alarm.machine_kind)})" if alarm.machine_kind else "")
    lines = [
        f"{_one_line(str(alarm.priority)).upper()} alarm {_words(_TRANSITIONS, alarm.transition)}: {_title(alarm)}",
        "",
        f"Site: {p.site}    Line: {p.line}    Machine: {machine}    (tenant {p.tenant})",
        f"Time: {_time(alarm.ts_ms)}",
        f"Kind: {_words(_KINDS, alarm.kind)}",
        "",
        "What is wrong:",
        f"  {alarm.text.strip() or _title(alarm)}".replace("\n", "\n  "),
    ]
    if alarm.signals:
        lines += ["", "Measured:"]
        lines += [f"  - {format_signal(s)}" for s in alarm.signals]
    lines.append("")
    if alarm.health is not None:
        lines.append(f"Health: {_percent(alarm.health)} (100 % = healthy, 0 % = failed)")
    ttf = format_ttf(alarm)
    if ttf:
        lines.append(f"Estimated time to failure: {ttf}")
    lines.append(
        f"State: {_words(_STATES, alarm.state)}; this message: {_words(_TRANSITIONS, alarm.transition)}"
        f" (change #{alarm.seq})"
    )
    if alarm.user or alarm.comment:
        who = _one_line(alarm.user) or "someone"
        action = alarm.transition if alarm.transition in ("acknowledged", "shelved", "unshelved", "cleared") else "by"
        lines.append(f"{'By' if action == 'by' else action.capitalize() + ' by'}: {who}")
        if alarm.comment:
            lines.append(f"Comment: {alarm.comment.strip()}".replace("\n", "\n  "))
    if alarm.shelved_until_ms is not None and alarm.state == "shelved":
        lines.append(f"Shelved until: {_time(alarm.shelved_until_ms)}")
    if alarm.team:
        lines.append(f"Team: {_one_line(alarm.team)}")
    if alarm.dashboard:
        lines.append(f"Dashboard: {_one_line(alarm.dashboard)}")
    lines.append(f"Alarm key: {_one_line(alarm.key)}")
    return _clean("\n".join(lines) + "\n")


def format_compact(alarm: Alarm) -> str:
    """A short message for phones (Telegram): priority, machine, title, text, signals, link."""
    p = alarm.path
    lines = [
        f"{_one_line(str(alarm.priority)).upper()} {_machine(alarm)}: {_title(alarm)}"
        f" ({_words(_TRANSITIONS, alarm.transition)})",
        f"{p.site} / {p.line} · {_time(alarm.ts_ms)}",
    ]
    if alarm.text.strip():
        lines.append(alarm.text.strip()[:1000])
    lines += [f"• {format_signal(s)}" for s in alarm.signals[:10]]
    ttf = format_ttf(alarm)
    if ttf:
        lines.append(f"Time to failure: {ttf}")
    if alarm.user and alarm.transition in ("acknowledged", "shelved", "unshelved", "cleared"):
        lines.append(f"{alarm.transition.capitalize()} by {_one_line(alarm.user)}")
    if alarm.dashboard:
        lines.append(_one_line(alarm.dashboard))
    lines.append(f"Alarm key: {_one_line(alarm.key)}")  # for 'birlik alarms ack <id>', and to tell repeats
    text = _clean("\n".join(lines))
    if _units(text) > _TELEGRAM_MAX:
        link = f"\n{_clean(_one_line(alarm.dashboard))}" if alarm.dashboard else ""
        room = max(_TELEGRAM_MAX - _units(link) - 1, 0)
        while _units(text) > room:
            text = text[: len(text) - max((_units(text) - room) // 2, 1)]
        text = (text + "…" + link)[:_TELEGRAM_MAX]
    return text


def _units(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def _clean(text: str) -> str:
    """Lone surrogates (possible in decoded JSON) replaced, so the text encodes as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


class LogChannel:
    """Writes every transition to the log (WARNING; INFO when the alarm is closed): no
    configuration, never fails."""

    name = "log"

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or log

    def send(self, alarm: Alarm) -> None:
        level = logging.WARNING if alarm.open else logging.INFO
        self._log.log(level, "%s\n%s", format_subject(alarm), format_text(alarm))

    def close(self) -> None:
        pass
