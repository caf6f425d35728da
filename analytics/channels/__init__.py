"""Delivery channels for alarms: webhook, e-mail and Telegram, behind one interface.

Every channel has a ``name`` and two methods: ``send(alarm)`` delivers one transition of one
alarm (:class:`birlik.alarm.Alarm`) or raises :class:`ChannelError`; ``close()`` releases the
connection. ``send`` never waits longer than the channel's ``timeout_s`` for any one network
step (connecting, sending, each answer from the server), so a dead server never hangs the caller.

How failures are signalled, for the caller that retries:

- :class:`ChannelError`: the delivery failed and may succeed later (server down or unreachable,
  no answer in time, HTTP 5xx, 408 or 429, SMTP 4xx). Retry with a back-off; when the server said
  how long to wait (HTTP ``Retry-After``, Telegram ``retry_after``), ``retry_after_s`` holds it.
- :class:`ChannelRefused` (a :class:`ChannelError`): the server refused the notification and
  will refuse it again (HTTP 4xx, a wrong password, an unknown recipient or chat): do not retry,
  log it and fix the configuration.

Every transition carries ``alarm.key`` (``<id>#<seq>``): the webhook sends it as
``Idempotency-Key``, the e-mail derives its ``Message-ID`` from it, so a receiver can recognise a
notification delivered twice after a retry.

The words people read come from :func:`format_subject`, :func:`format_text` (the full body, for
e-mail and the log) and :func:`format_compact` (a short message for phones), in one place.
Messages of errors never contain passwords or tokens: URLs are shown as scheme and host only,
and the Telegram bot token is masked (also in the ``httpx`` log, which names every URL).
"""

from analytics.channels.base import AlarmChannel, ChannelError, ChannelRefused, ChartSource, Security
from analytics.channels.mail import EmailChannel, message_id, render_chart
from analytics.channels.text import (
    LogChannel,
    format_compact,
    format_signal,
    format_subject,
    format_text,
    format_ttf,
)
from analytics.channels.web import TelegramChannel, WebhookChannel, alarm_json

__all__ = [
    "AlarmChannel",
    "ChannelError",
    "ChannelRefused",
    "ChartSource",
    "EmailChannel",
    "LogChannel",
    "Security",
    "TelegramChannel",
    "WebhookChannel",
    "alarm_json",
    "format_compact",
    "format_signal",
    "format_subject",
    "format_text",
    "format_ttf",
    "message_id",
    "render_chart",
]
