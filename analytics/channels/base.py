"""What every alarm channel is: the interface and the two errors callers retry on or not."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal, Protocol

from birlik.alarm import Alarm

#: For each signal of an alarm, its (ts_ms, value) points over the last ``hours`` hours.
ChartSource = Callable[[Alarm, float], Mapping[str, Sequence[tuple[int, float]]]]
#: How the e-mail channel talks to its SMTP server.
Security = Literal["none", "starttls", "tls"]


class ChannelError(Exception):
    """A delivery failed and may be retried; the message says why in plain words.

    ``retry_after_s``: how long the server asked to wait before the next try, if it said so.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ChannelRefused(ChannelError):
    """The server refused the notification for good (bad address, credentials, request): do not
    retry, log it and fix the configuration."""


class AlarmChannel(Protocol):
    """Where alarms are delivered."""

    name: str

    def send(self, alarm: Alarm) -> None:
        """Deliver one alarm transition, or raise :class:`ChannelError`, within the timeout."""
        ...

    def close(self) -> None:
        """Release connections; the channel is not used afterwards."""
        ...
