"""InfluxDB line protocol: the one place where points are turned into text.

Escaping follows the InfluxDB 1.x/2.x/3.x reference: measurement names escape commas and
spaces; tag keys, tag values and field keys escape commas, equals signs and spaces; string
field values are double-quoted with backslashes and double quotes escaped. Empty tag values
are left out (InfluxDB rejects them). Floats are written with Python's shortest round-trip
representation so a value read back compares equal to the value written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from birlik.payload import Telemetry, Value
from birlik.topics import MachinePath

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ "})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
# A raw newline is allowed inside a quoted string field; InfluxDB does not unescape "\n".
_STRING = str.maketrans({"\\": "\\\\", '"': '\\"'})


def _check_name(text: str, what: str) -> None:
    # Line protocol cannot carry these in names: a newline ends the point, and a trailing
    # backslash escapes the separator after it. Topic levels and catalogue names never do.
    if "\n" in text or text.endswith("\\") or not text:
        raise ValueError(f"{what} {text!r} cannot be written in line protocol")


def escape_measurement(name: str) -> str:
    _check_name(name, "measurement")
    return name.translate(_MEASUREMENT)


def escape_key(text: str) -> str:
    """Escape a tag key, tag value or field key."""
    _check_name(text, "tag or field name")
    return text.translate(_KEY)


def format_field(value: Value | bool) -> str:
    """A field value: float, ``<n>i`` integer, ``true``/``false``, or a quoted string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"line protocol cannot carry {value}")
        return float.__repr__(value)  # also for float subclasses (numpy's repr is np.float64(...))
    return '"' + value.translate(_STRING) + '"'


def encode_point(
    measurement: str,
    tags: Mapping[str, str | None],
    fields: Mapping[str, Value | bool],
    ts: int | None = None,
) -> str:
    """One line. Tags are sorted by key, as InfluxDB recommends for write performance."""
    if not fields:
        raise ValueError("a point needs at least one field")
    head = escape_measurement(measurement)
    for key in sorted(tags):
        value = tags[key]
        if value:
            head += f",{escape_key(key)}={escape_key(value)}"
    body = ",".join(f"{escape_key(k)}={format_field(v)}" for k, v in fields.items())
    return f"{head} {body}" if ts is None else f"{head} {body} {ts}"


def telemetry_lines(telemetry: Telemetry, measurement: str = "telemetry") -> list[str]:
    """The points of a validated telemetry message, one per sample, timestamps in ms.

    Values are already typed by :func:`birlik.payload.decode_telemetry` (gauges float,
    counters int, states str), which keeps every field's type stable in the database.
    """
    key = (measurement, telemetry.path, telemetry.kind)
    head = _HEADS.get(key)
    if head is None:
        head = _head(*key)
        if len(_HEADS) >= 100_000:
            _HEADS.clear()
        _HEADS[key] = head
    lines = []
    for sample in telemetry.samples:
        # Signal names come from the catalogue and need no escaping; floats are the common case.
        body = ",".join(
            [f"{k}={v!r}" if type(v) is float else f"{k}={format_field(v)}" for k, v in sample.values.items()]
        )
        lines.append(f"{head} {body} {sample.ts_ms}")
    return lines


#: The measurement-and-tags head of each machine's points, built once.
_HEADS: dict[tuple[str, MachinePath, str | None], str] = {}


def _head(measurement: str, path: MachinePath, kind: str | None) -> str:
    return escape_measurement(measurement) + "".join(
        f",{k}={escape_key(v)}"
        for k, v in (
            ("kind", kind),
            ("line", path.line),
            ("machine", path.machine),
            ("site", path.site),
            ("tenant", path.tenant),
        )
        if v
    )
