"""Channels over HTTP: a webhook, and Telegram's Bot API."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import math
import re
import ssl
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from analytics.channels.base import ChannelError, ChannelRefused
from analytics.channels.text import _brief, format_compact
from birlik.alarm import Alarm


class _Redactor(logging.Filter):
    """Masks secrets (tokens, webhook paths) in what ``httpx`` logs about each request."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: dict[str, tuple[str, int]] = {}  # secret -> (mask, channels using it)
        self._lock = threading.Lock()

    def add(self, secret: str, mask: str) -> None:
        with self._lock:
            self._secrets[secret] = (mask, self._secrets.get(secret, (mask, 0))[1] + 1)

    def discard(self, secret: str) -> None:
        with self._lock:
            mask, users = self._secrets.get(secret, ("", 0))
            if users > 1:
                self._secrets[secret] = (mask, users - 1)
            else:
                self._secrets.pop(secret, None)

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = {secret: mask for secret, (mask, _) in list(self._secrets.items())}
        if secrets:
            message = record.getMessage()
            masked = _mask(message, secrets)
            if masked != message:
                record.msg, record.args = masked, ()
        return True


_REDACTOR = _Redactor()
logging.getLogger("httpx").addFilter(_REDACTOR)


def _mask(text: str, secrets: Mapping[str, str]) -> str:
    for secret, mask in secrets.items():
        if secret:
            text = text.replace(secret, mask)
    return text


def _origin(url: str) -> str:
    """``https://host:port`` of a URL: what error messages show (paths and queries may hold
    secrets)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def _check_url(url: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the {what} URL must be http:// or https:// with a host name, got {_origin(url)!r}")


def _verify(verify: bool | str) -> bool | ssl.SSLContext:
    """``True``: the system's CAs; ``False``: no check (tests only); a path: that CA bundle."""
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return verify


def _retry_after(value: str | None) -> float | None:
    """``Retry-After``: seconds, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - dt.datetime.now(dt.UTC)).total_seconds()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _transport_error(exc: httpx.HTTPError, where: str, timeout_s: float) -> ChannelError:
    if isinstance(exc, httpx.TimeoutException):
        kind = "connect" if isinstance(exc, httpx.ConnectTimeout) else "answer"
        return ChannelError(f"{where} did not {kind} within {timeout_s:g} s")
    if isinstance(exc, httpx.ConnectError):
        reason = str(exc)
        if "CERTIFICATE" in reason.upper() or "SSL" in reason.upper():
            return ChannelError(f"{where}: its TLS certificate was not accepted ({_brief(reason)})")
        return ChannelError(f"could not connect to {where}: the server is down or unreachable ({_brief(reason)})")
    return ChannelError(f"{where}: the request failed ({type(exc).__name__}: {_brief(str(exc))})")


def _finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def alarm_json(alarm: Alarm) -> bytes:
    """``alarm.as_dict()`` as JSON (UTF-8), NaN and infinities as null."""
    value = _finite(alarm.as_dict())
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except UnicodeEncodeError:  # lone surrogates: \uXXXX escapes keep them
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


# --- webhook ---------------------------------------------------------------------------------


class WebhookChannel:
    """POSTs each transition as JSON (``alarm.as_dict()``) to a URL.

    Configure: ``url`` (http:// or https://), optional ``headers`` (e.g. ``Authorization``),
    ``timeout_s`` (each network step), ``verify`` (True: system CAs; a path: a CA bundle in
    PEM; False: no certificate check, tests only). Every request carries
    ``Idempotency-Key: <alarm.key>``: a receiver that sees a key twice got a retry.

    A 2xx answer is success. 408, 429 and 5xx raise :class:`ChannelError` (with
    ``retry_after_s`` from ``Retry-After``); other answers (4xx, redirects) raise
    :class:`ChannelRefused`.
    """

    name = "webhook"

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] = {},
        timeout_s: float = 10,
        verify: bool | str = True,
    ) -> None:
        _check_url(url, "webhook")
        self.url = url
        self.timeout_s = timeout_s
        self._where = f"the webhook at {_origin(url)}"
        parts = urlsplit(url)
        self._secret = url[len(_origin(url)) :] if (parts.path not in ("", "/") or parts.query) else ""
        self._masks = {self._secret: "/***"} if self._secret else {}
        if self._secret:
            _REDACTOR.add(self._secret, "/***")
        self._client = httpx.Client(
            headers=dict(headers), timeout=httpx.Timeout(timeout_s), verify=_verify(verify), follow_redirects=False
        )

    def send(self, alarm: Alarm) -> None:
        try:
            response = self._client.post(
                self.url,
                content=alarm_json(alarm),
                headers={"Content-Type": "application/json", "Idempotency-Key": alarm.key},
            )
        except httpx.InvalidURL as exc:
            raise ChannelRefused(
                f"{self._where}: the URL is not valid ({_brief(_mask(str(exc), self._masks))})"
            ) from None
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self._where, self.timeout_s) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        said = f"{self._where} answered {status} {response.reason_phrase}"
        body = _brief(response.text)
        if body:
            said += f": {body}"
        if status in (408, 429) or status >= 500:
            raise ChannelError(said, retry_after_s=_retry_after(response.headers.get("Retry-After")))
        if 300 <= status < 400:
            said += f" (a redirect to {_origin(response.headers.get('Location', ''))}: configure the final URL)"
        raise ChannelRefused(said)

    def close(self) -> None:
        self._client.close()
        if self._secret:
            _REDACTOR.discard(self._secret)
            self._secret = ""

    def __repr__(self) -> str:
        return f"WebhookChannel({_origin(self.url)!r})"


# --- Telegram --------------------------------------------------------------------------------


_TOKEN = re.compile(r"[0-9]{1,20}:[A-Za-z0-9_-]{1,200}")


class TelegramChannel:
    """Sends a short message per transition to a Telegram chat through a bot.

    Configure: the bot's ``token`` (from @BotFather) and the ``chat_id`` of the person, group or
    channel (the bot must be a member of it); ``base_url`` only for a local Bot API server.
    The token is never shown in errors or logs.

    Telegram limits how often a bot may post (about one message per second per chat, 20 per
    minute in a group): then it answers 429 with ``retry_after``, raised as
    :class:`ChannelError` with ``retry_after_s``. A wrong token, an unknown chat or a bot
    removed from the chat raise :class:`ChannelRefused`.
    """

    name = "telegram"

    def __init__(
        self,
        token: str,
        chat_id: str,
        *,
        base_url: str = "https://api.telegram.org",
        timeout_s: float = 10,
    ) -> None:
        if not _TOKEN.fullmatch(token):  # also keeps the token from changing the URL
            raise ValueError("the Telegram bot token must look like 123456789:AAH... (digits, a colon, letters)")
        if not str(chat_id):
            raise ValueError("the Telegram chat_id is empty")
        _check_url(base_url, "Telegram Bot API")
        self.chat_id = str(chat_id)
        self.timeout_s = timeout_s
        self._token = token
        self._url = f"{base_url.rstrip('/')}/bot{token}/sendMessage"
        self._where = f"Telegram ({_origin(base_url)})"
        _REDACTOR.add(token, "<token>")
        self._closed = False
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False)

    def _safe(self, text: str) -> str:
        return _mask(text, {self._token: "<token>"})

    def send(self, alarm: Alarm) -> None:
        payload = {"chat_id": self.chat_id, "text": format_compact(alarm), "disable_web_page_preview": True}
        try:
            response = self._client.post(self._url, json=payload)
        except httpx.HTTPError as exc:
            raise ChannelError(self._safe(str(_transport_error(exc, self._where, self.timeout_s)))) from None
        status = response.status_code
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            answer = {}
        if 200 <= status < 300 and answer.get("ok") is True:
            return
        code = answer.get("error_code")
        code = code if isinstance(code, int) else status
        description = _brief(self._safe(str(answer.get("description") or response.reason_phrase or "")))
        parameters = answer.get("parameters")
        parameters = parameters if isinstance(parameters, dict) else {}
        said = f"{self._where} refused the message: {code} {description}".rstrip()
        retry = parameters.get("retry_after")
        retry_s = float(retry) if isinstance(retry, int | float) and not isinstance(retry, bool) else None
        retry_s = retry_s if retry_s is not None and math.isfinite(retry_s) else None
        if retry_s is None and status in (429, 503):
            retry_s = _retry_after(response.headers.get("Retry-After"))
        if code == 429 or status == 429:
            raise ChannelError(
                f"{self._where} is rate limiting the bot ({description or 'too many requests'})"
                + (f": retry after {retry_s:g} s" if retry_s is not None else ""),
                retry_after_s=retry_s,
            )
        if status >= 500 or code >= 500 or status == 408 or (200 <= status < 300):
            # 2xx without "ok": true is not a Bot API answer (a proxy?): worth another try.
            raise ChannelError(f"{self._where} could not take the message: {code} {description}", retry_after_s=retry_s)
        if "migrate_to_chat_id" in parameters:
            said += f" (the group became a supergroup: use chat_id {parameters['migrate_to_chat_id']})"
        elif code == 401 or code == 404:
            said += " (check the bot token)"
        elif code == 403:
            said += " (the bot was removed from the chat or blocked: add it again)"
        raise ChannelRefused(said)

    def close(self) -> None:
        self._client.close()
        if not self._closed:
            self._closed = True
            _REDACTOR.discard(self._token)

    def __repr__(self) -> str:
        return f"TelegramChannel(chat_id={self.chat_id!r})"
