"""The e-mail channel (SMTP), with an optional chart of the signals as a PNG attachment."""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import io
import logging
import math
import re
import smtplib
import socket
import ssl
from collections.abc import Mapping, Sequence
from email.message import EmailMessage

from analytics.channels.base import ChannelError, ChannelRefused, ChartSource, Security
from analytics.channels.text import _CONTROL, _brief, _clean, _one_line, format_subject, format_text
from birlik.alarm import Alarm

log = logging.getLogger("analytics.channels")

# --- e-mail ----------------------------------------------------------------------------------

_ATEXT = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_DOMAIN = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$")


def message_id(key: str, sender: str = "") -> str:
    """The e-mail ``Message-ID`` of one transition: the same key gives the same id, so mail
    servers and clients recognise a notification sent twice."""
    domain = sender.rpartition("@")[2].strip(" >")
    if not _DOMAIN.fullmatch(domain):
        domain = "birlik.alarm"
    readable = _ATEXT.sub("-", key).strip("-")[:60] or "alarm"
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"<{readable}.{digest}@{domain}>"


def render_chart(alarm: Alarm, series: Mapping[str, Sequence[tuple[int, float]]]) -> bytes:
    """A PNG of the signals behind an alarm: one panel per signal (at most 8) over time (UTC),
    its normal level dashed where known, the alarm time marked. Needs matplotlib; raises
    ImportError without it, ValueError when there is nothing to draw."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    names = [name for name, points in series.items() if points][:8]
    if not names:
        raise ValueError("no data points to draw")
    contexts = {s.name: s for s in alarm.signals}
    try:
        alarm_time: dt.datetime | None = dt.datetime.fromtimestamp(alarm.ts_ms / 1000, dt.UTC)
    except (OverflowError, OSError, ValueError):
        alarm_time = None

    fig = Figure(figsize=(8, 1.2 + 2.0 * len(names)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    drawn = 0
    for ax, name in zip(axes, names, strict=True):
        times, values = [], []
        for ts, value in sorted(series[name], key=lambda p: p[0]):
            try:
                t = dt.datetime.fromtimestamp(ts / 1000, dt.UTC)
                v = float(value)
            except (OverflowError, OSError, ValueError, TypeError):
                continue
            if math.isfinite(v):
                times.append(t)
                values.append(v)
        context = contexts.get(name)
        unit = _one_line(context.unit) if context else ""
        if times:
            ax.plot(times, values, color="tab:blue", linewidth=1.2, label=_one_line(name))
            drawn += 1
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")
        if context is not None and context.normal is not None and math.isfinite(context.normal):
            ax.axhline(context.normal, color="tab:green", linestyle="--", linewidth=1.0, label="normal")
        if alarm_time is not None and times and _near(alarm_time, times[0], times[-1]):
            ax.axvline(alarm_time, color="tab:red", linewidth=1.0, label="alarm")
        ax.set_ylabel(f"{_one_line(name, 30)}\n[{unit}]" if unit else _one_line(name, 30))
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", fontsize="small")
    if not drawn:
        raise ValueError("no finite data points to draw")
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator, tz=dt.UTC))  # type: ignore[no-untyped-call]
    axes[-1].set_xlabel("time (UTC)")
    fig.suptitle(_one_line(format_subject(alarm).removeprefix("[birlik] "), 90), fontsize="medium")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _near(t: dt.datetime, first: dt.datetime, last: dt.datetime) -> bool:
    """Whether marking ``t`` keeps the data readable (not far outside its time range)."""
    margin = max(last - first, dt.timedelta(hours=1))
    return first - margin <= t <= last + margin


class EmailChannel:
    """Sends each transition as a plain-text e-mail (with a chart of the signals, optionally).

    Configure: the SMTP server ``host`` and ``port`` (usually 587 with ``security="starttls"``,
    465 with ``"tls"``, 25 with ``"none"`` on a trusted network), the ``sender`` address, the
    ``recipients``, and ``username``/``password`` if the server requires a login.
    ``ssl_context``: to trust a private CA (default: the system's CAs, host name checked).
    ``chart``: a function giving each signal's recent points (see :data:`ChartSource`); the
    chart of the last ``chart_hours`` is attached as PNG. A failing chart is logged and the
    message goes without it. The chart source runs inside ``send``: it must bound its own time
    (e.g. a query timeout of a few seconds).

    The ``Message-ID`` is derived from the alarm key (a retry gives the same id) and the key is
    also in ``X-Birlik-Alarm-Key``; later transitions of one alarm reference its first, so mail
    clients show them as one thread.

    A server down, a timeout or an SMTP 4xx raise :class:`ChannelError`; a refused login or a
    5xx refusal of the sender or of every recipient raise :class:`ChannelRefused`. When only some
    recipients are refused, the others get the message and the refusal is logged.
    """

    name = "email"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        sender: str,
        recipients: Sequence[str],
        username: str = "",
        password: str = "",
        security: Security = "starttls",
        timeout_s: float = 20,
        chart: ChartSource | None = None,
        chart_hours: float = 6,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if isinstance(recipients, str):
            recipients = [recipients]
        if not recipients:
            raise ValueError("the e-mail channel needs at least one recipient")
        for address in (sender, *recipients):
            if not address or _CONTROL.search(address) or "@" not in address:
                raise ValueError(f"not an e-mail address: {address!r}")
        if password and security == "none" and host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("e-mail to %s:%s: the password is sent unencrypted (security='none')", host, port)
        if security not in ("none", "starttls", "tls"):
            raise ValueError(f"security must be 'none', 'starttls' or 'tls', got {security!r}")
        self.host, self.port = host, port
        self.sender = sender
        self.recipients = list(recipients)
        self.username, self._password = username, password
        self.security = security
        self.timeout_s = timeout_s
        self.chart, self.chart_hours = chart, chart_hours
        self._context = ssl_context
        self._where = f"the mail server {host}:{port}"

    def message(self, alarm: Alarm) -> EmailMessage:
        """The e-mail for one transition (chart included when configured and available)."""
        msg = EmailMessage()
        msg["Subject"] = format_subject(alarm)
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = email.utils.formatdate(usegmt=True)
        msg["Message-ID"] = message_id(alarm.key, self.sender)
        if alarm.seq > 1:
            first = message_id(f"{alarm.alarm_id}#1", self.sender)
            msg["In-Reply-To"] = first
            msg["References"] = first
        msg["X-Birlik-Alarm-Key"] = _clean(_one_line(alarm.key, 900))
        if alarm.priority in ("high", "critical") and alarm.open:
            msg["Importance"] = "high"
            msg["X-Priority"] = "1" if alarm.priority == "critical" else "2"
        msg.set_content(format_text(alarm))
        png = self._chart(alarm)
        if png is not None:
            filename = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{alarm.path.machine}-{alarm.alarm_id}").strip("-.")[:80]
            filename = filename or "alarm"
            msg.add_attachment(png, maintype="image", subtype="png", filename=f"{filename}.png")
        return msg

    def _chart(self, alarm: Alarm) -> bytes | None:
        if self.chart is None or not alarm.signals:  # a trip or a stale machine: no signal to draw
            return None
        try:
            return render_chart(alarm, self.chart(alarm, self.chart_hours))
        except ImportError:
            log.warning("alarm %s: e-mail sent without a chart: matplotlib is not installed", alarm.key)
        except Exception as exc:
            log.warning("alarm %s: e-mail sent without a chart: %s: %s", alarm.key, type(exc).__name__, exc)
        return None

    def _connect(self) -> smtplib.SMTP:
        context = self._context or ssl.create_default_context()
        # The host name given at construction is the one TLS checks the certificate against;
        # local_hostname avoids a reverse DNS lookup (socket.getfqdn) that can take long.
        local = socket.gethostname() or "localhost"
        smtp: smtplib.SMTP
        if self.security == "tls":
            smtp = smtplib.SMTP_SSL(self.host, self.port, local_hostname=local, timeout=self.timeout_s, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, local_hostname=local, timeout=self.timeout_s)
        try:
            smtp.ehlo()
            if self.security == "starttls":
                smtp.starttls(context=context)
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self._password)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def send(self, alarm: Alarm) -> None:
        msg = self.message(alarm)
        try:
            smtp = self._connect()
            try:
                refused = smtp.send_message(msg, from_addr=self.sender, to_addrs=self.recipients)
            finally:
                try:
                    smtp.quit()
                except (smtplib.SMTPException, OSError):
                    smtp.close()
        except smtplib.SMTPException as exc:
            raise self._smtp_error(exc) from None
        except TimeoutError:
            raise ChannelError(f"{self._where} did not answer within {self.timeout_s:g} s") from None
        except ssl.SSLError as exc:
            raise ChannelError(f"{self._where}: TLS failed ({_brief(str(exc))})") from None
        except OSError as exc:
            raise ChannelError(
                f"could not connect to {self._where}: the server is down or unreachable ({_brief(str(exc))})"
            ) from None
        if refused:
            log.warning(
                "alarm %s: the mail server refused some recipients: %s",
                alarm.key,
                "; ".join(f"{rcpt} ({code} {_brief(_text(reply))})" for rcpt, (code, reply) in refused.items()),
            )

    def _smtp_error(self, exc: smtplib.SMTPException) -> ChannelError:
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            codes = [code for code, _ in exc.recipients.values()]
            detail = "; ".join(f"{r} ({c} {_brief(_text(m))})" for r, (c, m) in exc.recipients.items())
            if codes and all(code >= 500 for code in codes):
                return ChannelRefused(f"{self._where} refused every recipient: {detail}")
            return ChannelError(f"{self._where} refused the recipients for now: {detail}")
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return ChannelRefused(
                f"{self._where} refused the login of {self.username!r}: {exc.smtp_code} {_brief(_text(exc.smtp_error))}"
            )
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return ChannelRefused(f"{self._where} does not support what is configured: {_brief(str(exc))}")
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            if "timed out" in str(exc):
                return ChannelError(f"{self._where} did not answer within {self.timeout_s:g} s")
            return ChannelError(f"{self._where} closed the connection ({_brief(str(exc)) or 'no reason given'})")
        if isinstance(exc, smtplib.SMTPResponseException):
            reply = f"{exc.smtp_code} {_brief(_text(exc.smtp_error))}"
            said = f"{self._where} answered {reply}"
            if isinstance(exc, smtplib.SMTPSenderRefused):
                said = f"{self._where} refused the sender {self.sender!r}: {reply}"
            return ChannelRefused(said) if 500 <= exc.smtp_code < 600 else ChannelError(said)
        if isinstance(exc, smtplib.SMTPException) and "AUTH" in str(exc):
            return ChannelRefused(f"{self._where}: login failed ({_brief(str(exc))})")
        return ChannelError(f"{self._where}: {type(exc).__name__}: {_brief(str(exc))}")

    def close(self) -> None:
        pass  # one connection per message: nothing stays open

    def __repr__(self) -> str:
        return f"EmailChannel({self.host!r}, {self.port}, recipients={self.recipients!r})"


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
