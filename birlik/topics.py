"""The MQTT topic namespace, ISA-95 style.

    birlik/<tenant>/<site>/<line>/<machine>/<channel>

``tenant`` is the company that owns the machine (several companies share the centre),
``site`` the plant site, ``line`` the production line or area, ``machine`` the asset, and
``channel`` what the message carries: ``telemetry`` (readings, from gateways) or ``alert``
(from analytics). Each level is a lowercase name of letters, digits, ``-``, ``_`` or ``.``, so
a topic level never needs escaping anywhere downstream (MQTT filters, InfluxDB tags, Grafana).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

ROOT = "birlik"
Channel = Literal["telemetry", "alert"]
CHANNELS: tuple[Channel, ...] = ("telemetry", "alert")

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class TopicError(ValueError):
    """A topic or a name for one of its levels is not valid."""


def check_name(level: str, value: str) -> str:
    if not _NAME.fullmatch(value):
        raise TopicError(
            f"{level} name {value!r} is not valid: use 1-64 lowercase letters, digits, "
            "'-', '_' or '.', starting with a letter or digit"
        )
    return value


@dataclass(frozen=True, slots=True)
class MachinePath:
    """Where a machine sits: tenant / site / line / machine."""

    tenant: str
    site: str
    line: str
    machine: str
    #: Computed once: paths key every per-machine table on the hot paths.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for level in ("tenant", "site", "line", "machine"):
            check_name(level, getattr(self, level))
        object.__setattr__(self, "_hash", hash((self.tenant, self.site, self.line, self.machine)))

    def __hash__(self) -> int:
        return self._hash

    def topic(self, channel: Channel = "telemetry") -> str:
        return f"{ROOT}/{self.tenant}/{self.site}/{self.line}/{self.machine}/{channel}"

    def __str__(self) -> str:
        return f"{self.tenant}/{self.site}/{self.line}/{self.machine}"


def parse_topic(topic: str) -> tuple[MachinePath, Channel]:
    """Split a topic into its machine path and channel, or raise :class:`TopicError`."""
    parts = topic.split("/")
    if len(parts) != 6 or parts[0] != ROOT:
        raise TopicError(f"topic {topic!r} is not of the form {ROOT}/<tenant>/<site>/<line>/<machine>/<channel>")
    channel = parts[5]
    if channel not in CHANNELS:
        raise TopicError(f"topic {topic!r}: unknown channel {channel!r} (expected one of {CHANNELS})")
    path = MachinePath(parts[1], parts[2], parts[3], parts[4])
    return path, channel


#: Gateways' own topics, outside the machine namespace: ``birlik/_gateway/<gateway>/<what>``,
#: with ``status`` (retained birth and last-will messages), ``health`` (the gateway's own
#: counters, see :mod:`birlik.health`) and ``repair`` (requests to publish sequence ranges
#: again from the gateway's log).
GATEWAY_LEVEL = "_gateway"


def gateway_topic(gateway: str, what: Literal["status", "health", "repair"]) -> str:
    check_name("gateway", gateway)
    return f"{ROOT}/{GATEWAY_LEVEL}/{gateway}/{what}"


#: Every gateway's health reports.
HEALTH_FILTER = f"{ROOT}/{GATEWAY_LEVEL}/+/health"


def subscription(channel: Channel = "telemetry", *, tenant: str = "+", share: str | None = None) -> str:
    """The topic filter for every machine's ``channel`` (of one tenant, if given).

    ``share`` makes it an MQTT v5 shared subscription (``$share/<group>/...``) so several
    processes split the messages between them.
    """
    topic_filter = f"{ROOT}/{tenant}/+/+/+/{channel}"
    return f"$share/{share}/{topic_filter}" if share else topic_filter
