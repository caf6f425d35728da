"""Gateway health, schema version 1: what a gateway reports about itself, as telemetry.

Every ``gateway.health_interval_s`` a connected gateway publishes (QoS 1, not retained) on
``birlik/_gateway/<gateway>/health``::

    {"v": 1, "gateway": "gw-turkestan-1", "boot": "b-1763799000-4f2a", "ts": 1763800000000,
     "buffer_depth": 0, "buffer_backlog": 0, "buffer_bytes": 52311, "oldest_unsent_s": 0.0,
     "publish_rate": 26.0, "messages": 1200, "readings": 31200, "acked": 1200, "reconnects": 1,
     "replayed": 0, "dropped": 0, "repair_requests": 0, "repaired": 0}

``ts`` is the gateway's wall clock (ms). The numbers are the gateway's own view: messages in
its disk log not yet acknowledged by the broker (``buffer_depth``), of those not in flight
(``buffer_backlog``), the age of the oldest unacknowledged one, the publish rate (messages/s)
and counters since the gateway started. The ingest writes each report as a point of the
``gateway`` measurement (tags ``gateway``, ``boot``), which the platform-health dashboard shows.

Decoding is total, like :mod:`birlik.payload`: any bytes on any topic give a
:class:`GatewayHealth` or a :class:`~birlik.payload.PayloadError` with a reason. Fields a later
gateway adds are ignored; every field listed in :data:`HEALTH_FIELDS` is required.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from birlik.payload import (
    MAX_FUTURE_MS,
    MIN_TS_MS,
    SCHEMA_VERSION,
    PayloadError,
    Reason,
    _brief,
    _json,
    _json_type,
    _name,
    finite_number,
)
from birlik.topics import GATEWAY_LEVEL, ROOT

#: Field -> whether it is a count (integer) rather than a measure (float).
HEALTH_FIELDS: dict[str, bool] = {
    "buffer_depth": True,
    "buffer_backlog": True,
    "buffer_bytes": True,
    "oldest_unsent_s": False,
    "publish_rate": False,
    "messages": True,
    "readings": True,
    "acked": True,
    "reconnects": True,
    "replayed": True,
    "dropped": True,
    "repair_requests": True,
    "repaired": True,
}
MAX_HEALTH_BYTES = 16 * 1024
_INT_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class GatewayHealth:
    gateway: str
    boot: str
    ts_ms: int
    fields: dict[str, int | float]


def health_topic_gateway(topic: str) -> str | None:
    """The gateway named by a health topic, or None if ``topic`` is not one."""
    parts = topic.split("/")
    if len(parts) == 4 and parts[0] == ROOT and parts[1] == GATEWAY_LEVEL and parts[3] == "health":
        return parts[2]
    return None


def encode_health(gateway: str, boot: str, ts_ms: int, values: dict[str, Any]) -> bytes:
    """The health message from a gateway's counters (extra keys in ``values`` are left out)."""
    import json

    body: dict[str, Any] = {"v": SCHEMA_VERSION, "gateway": gateway, "boot": boot, "ts": ts_ms}
    for key, count in HEALTH_FIELDS.items():
        value = values.get(key, 0)
        body[key] = int(value) if count else round(float(value), 3)
    return json.dumps(body, separators=(",", ":")).encode()


def decode_health(topic: str, payload: bytes, *, now_ms: int | None = None) -> GatewayHealth:
    """Validate one health report; raises :class:`PayloadError` and nothing else, for any input."""
    if len(payload) > MAX_HEALTH_BYTES:
        raise PayloadError(Reason.OVERSIZED, f"health report is {len(payload)} bytes, the limit is {MAX_HEALTH_BYTES}")
    if type(topic) is not str or (gateway := health_topic_gateway(topic)) is None:
        raise PayloadError(Reason.BAD_TOPIC, f"{_brief(topic)} is not {ROOT}/{GATEWAY_LEVEL}/<gateway>/health")
    gateway = _name("gateway", gateway, "the gateway of the topic")
    m = _json(payload)
    if type(m) is not dict:
        raise PayloadError(Reason.NOT_OBJECT, f"health report must be a JSON object, got {_json_type(m)}")
    missing = [k for k in ("v", "gateway", "boot", "ts", *HEALTH_FIELDS) if k not in m]
    if missing:
        raise PayloadError(Reason.MISSING_FIELD, f"health report is missing {', '.join(missing)}")
    version = m["v"]
    if type(version) is not int or version != SCHEMA_VERSION:
        raise PayloadError(
            Reason.UNSUPPORTED_VERSION, f"health schema version {_brief(version)} is not supported ({SCHEMA_VERSION})"
        )
    if _name("gateway", m["gateway"], "a name") != gateway:
        raise PayloadError(Reason.BAD_TOPIC, f"health report of gateway {m['gateway']!r} on the topic of {gateway!r}")
    boot = _name("boot", m["boot"], "a name")
    ts = m["ts"]
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if type(ts) is not int or not MIN_TS_MS <= ts <= now_ms + MAX_FUTURE_MS:
        raise PayloadError(
            Reason.BAD_TIMESTAMP, f"health report 'ts' must be ms since 1970 until now, got {_brief(ts)}"
        )
    fields: dict[str, int | float] = {}
    for key, count in HEALTH_FIELDS.items():
        value = m[key]
        if count:
            if type(value) is not int or not 0 <= value <= _INT_MAX:
                raise PayloadError(Reason.WRONG_TYPE, f"health field {key!r} must be a count, got {_brief(value)}")
            fields[key] = value
        else:
            number = finite_number(value)
            if number is None or number < 0:
                raise PayloadError(
                    Reason.WRONG_TYPE, f"health field {key!r} must be a finite number >= 0, got {_brief(value)}"
                )
            fields[key] = number
    return GatewayHealth(gateway, boot, ts, fields)

