"""The alarm channels against real local servers: an HTTP server for the webhook and for an
emulated Telegram Bot API, aiosmtpd for e-mail (plain, STARTTLS, TLS, AUTH). Nothing is patched."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import email.utils
import io
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.channels import (
    AlarmChannel,
    ChannelError,
    ChannelRefused,
    EmailChannel,
    LogChannel,
    Security,
    TelegramChannel,
    WebhookChannel,
    alarm_json,
    format_compact,
    format_subject,
    format_text,
    message_id,
    render_chart,
)
from birlik.alarm import Alarm, SignalContext
from birlik.topics import MachinePath
from tests.tls_certs import Certs, make_certs

T0 = 1714564800000  # 2024-05-01 12:00 UTC
TOKEN = "123456789:AAH-secret_token-XYZ"


def make_alarm(**changes: Any) -> Alarm:
    alarm = Alarm(
        path=MachinePath("acme", "plant-a", "line-1", "pump-302"),
        alarm_id="pump-302-condition-17",
        seq=1,
        kind="condition",
        state="unack_active",
        transition="raised",
        priority="critical",
        ts_ms=T0,
        title="bearing temperature high",
        text="The drive-end bearing runs 18 K above its normal at this load and is still rising.",
        machine_kind="centrifugal_pump",
        signals=(
            SignalContext("bearing_temp", 71.0, "degC", 53.0, 3.0),
            SignalContext("vibration_rms", 2.35, "mm/s", 1.8, None),
        ),
        health=0.42,
        ttf_h=36.0,
        ttf_low_h=20.0,
        ttf_high_h=60.0,
        team="mechanical",
        dashboard="https://grafana.example/d/machine?var-machine=pump-302",
    )
    return replace(alarm, **changes)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never says a word."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def server_context(certs: Certs) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    return context


# --- a real HTTP server ----------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Answer = tuple[int, dict[str, str], bytes]


@dataclass
class HttpServer:
    url: str
    requests: list[Request] = field(default_factory=list)
    #: What to answer the next requests (the last one stays).
    answers: list[Answer] = field(default_factory=lambda: [(200, {}, b'{"ok":true,"result":{}}')])

    def answer(self, status: int, body: Any = b"", **headers: str) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.answers = [(status, {k.replace("_", "-"): v for k, v in headers.items()}, data)]


def _serve(context: ssl.SSLContext | None = None) -> Iterator[HttpServer]:
    state = HttpServer("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append(Request("POST", self.path, dict(self.headers.items()), body))
            status, headers, data = state.answers[0] if len(state.answers) == 1 else state.answers.pop(0)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.url = f"{'https' if context else 'http'}://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http() -> Iterator[HttpServer]:
    yield from _serve()


# --- webhook ---------------------------------------------------------------------------------


def test_webhook_posts_the_alarm_as_json_with_its_idempotency_key(http: HttpServer) -> None:
    alarm = make_alarm()
    channel = WebhookChannel(f"{http.url}/hooks/alarms", headers={"Authorization": "Bearer abc"}, timeout_s=2)
    try:
        channel.send(alarm)
        channel.send(alarm)  # a retry: same key, so the receiver can drop it
    finally:
        channel.close()
    assert len(http.requests) == 2
    request = http.requests[0]
    assert request.path == "/hooks/alarms"
    assert request.json() == alarm.as_dict()
    assert request.headers["Idempotency-Key"] == "pump-302-condition-17#1"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == "Bearer abc"
    assert http.requests[1].headers["Idempotency-Key"] == request.headers["Idempotency-Key"]


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [(503, "7", 7.0), (429, "http-date", 30.0), (500, None, None), (408, None, None)],
)
def test_webhook_busy_or_failing_server_is_retryable(
    http: HttpServer, status: int, retry_after: str | None, expected: float | None
) -> None:
    headers = {}
    if retry_after == "http-date":
        headers["Retry-After"] = email.utils.format_datetime(
            dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30), usegmt=True
        )
    elif retry_after is not None:
        headers["Retry-After"] = retry_after
    http.answer(status, b"busy", **headers)
    channel = WebhookChannel(http.url, timeout_s=2)
    with pytest.raises(ChannelError) as info:
        channel.send(make_alarm())
    channel.close()
    assert not isinstance(info.value, ChannelRefused)
    assert str(status) in str(info.value)
    if expected is None:
        assert info.value.retry_after_s is None
    else:
        assert info.value.retry_after_s == pytest.approx(expected, abs=2)


def test_webhook_bad_request_is_refused_without_showing_the_secret_path(http: HttpServer) -> None:
    http.answer(400, {"error": "field 'machine' unknown"})
    channel = WebhookChannel(f"{http.url}/hooks/s3cr3t-path?token=qwerty", timeout_s=2)
    with pytest.raises(ChannelRefused) as info:
        channel.send(make_alarm())
    channel.close()
    message = str(info.value)
    assert "400" in message and "field 'machine' unknown" in message
    assert "s3cr3t" not in message and "qwerty" not in message


def test_webhook_silent_server_times_out(silent_port: int) -> None:
    channel = WebhookChannel(f"http://127.0.0.1:{silent_port}/hook", timeout_s=0.5)
    start = time.monotonic()
    with pytest.raises(ChannelError) as info:
        channel.send(make_alarm())
    channel.close()
    assert time.monotonic() - start < 2.0
    assert not isinstance(info.value, ChannelRefused)
    assert "within 0.5 s" in str(info.value)


def test_webhook_server_down_is_retryable() -> None:
    channel = WebhookChannel(f"http://127.0.0.1:{free_port()}/hook", timeout_s=2)
    with pytest.raises(ChannelError) as info:
        channel.send(make_alarm())
    channel.close()
    assert not isinstance(info.value, ChannelRefused)
    assert "could not connect" in str(info.value)


def test_webhook_https_trusts_the_given_ca_only(certs: Certs) -> None:
    for server in _serve(server_context(certs)):
        good = WebhookChannel(server.url, verify=str(certs.ca), timeout_s=2)
        good.send(make_alarm())
        good.close()
        assert len(server.requests) == 1
        wrong = WebhookChannel(server.url, verify=str(certs.other_ca), timeout_s=2)
        with pytest.raises(ChannelError, match="certificate"):
            wrong.send(make_alarm())
        wrong.close()


def test_webhook_rejects_a_url_that_is_not_http() -> None:
    with pytest.raises(ValueError, match="http"):
        WebhookChannel("ftp://example.org/hook")


def test_alarm_json_turns_non_finite_numbers_into_null() -> None:
    alarm = make_alarm(health=float("nan"), ttf_h=float("inf"))
    decoded = json.loads(alarm_json(alarm))
    assert decoded["health"] is None and decoded["ttf_h"] is None
    assert decoded["key"] == alarm.key


# --- Telegram --------------------------------------------------------------------------------


def test_telegram_sends_a_compact_message(http: HttpServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    alarm = make_alarm()
    channel = TelegramChannel(TOKEN, "-100123", base_url=http.url, timeout_s=2)
    channel.send(alarm)
    channel.close()
    (request,) = http.requests
    assert request.path == f"/bot{TOKEN}/sendMessage"
    sent = request.json()
    assert sent["chat_id"] == "-100123"
    assert sent["disable_web_page_preview"] is True
    text = sent["text"]
    assert text.startswith("CRITICAL pump-302: bearing temperature high (raised)")
    assert "bearing_temp 71.0 degC, normal 53.0 degC, rising 3.0 K/h" in text
    assert alarm.dashboard in text
    assert TOKEN not in caplog.text  # httpx logs every request's URL: the token is masked there
    assert "HTTP Request: POST" in caplog.text


def test_telegram_rate_limit_gives_retry_after(http: HttpServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    http.answer(
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 7",
            "parameters": {"retry_after": 7},
        },
    )
    channel = TelegramChannel(TOKEN, "42", base_url=http.url, timeout_s=2)
    with pytest.raises(ChannelError) as info:
        channel.send(make_alarm())
    channel.close()
    assert not isinstance(info.value, ChannelRefused)
    assert info.value.retry_after_s == 7
    assert "retry after 7" in str(info.value)
    assert TOKEN not in str(info.value) and TOKEN not in repr(info.value) and TOKEN not in repr(channel)
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    ("status", "answer", "hint"),
    [
        (401, {"ok": False, "error_code": 401, "description": "Unauthorized"}, "token"),
        (400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}, "chat not found"),
        (403, {"ok": False, "error_code": 403, "description": "Forbidden: bot was kicked"}, "add it again"),
    ],
)
def test_telegram_wrong_token_or_chat_is_refused(http: HttpServer, status: int, answer: Any, hint: str) -> None:
    http.answer(status, answer)
    channel = TelegramChannel(TOKEN, "42", base_url=http.url, timeout_s=2)
    with pytest.raises(ChannelRefused, match=hint) as info:
        channel.send(make_alarm())
    channel.close()
    assert TOKEN not in str(info.value)


def test_telegram_server_down_or_silent_is_retryable_without_showing_the_token(silent_port: int) -> None:
    for port, timeout in ((free_port(), 2.0), (silent_port, 0.5)):
        channel = TelegramChannel(TOKEN, "42", base_url=f"http://127.0.0.1:{port}", timeout_s=timeout)
        start = time.monotonic()
        with pytest.raises(ChannelError) as info:
            channel.send(make_alarm())
        channel.close()
        assert time.monotonic() - start < timeout + 1.5
        assert not isinstance(info.value, ChannelRefused)
        assert TOKEN not in str(info.value) and "secret" not in str(info.value)


# --- e-mail ----------------------------------------------------------------------------------

SENDER = "birlik@plant.example"


class Mailbox:
    """aiosmtpd handler that keeps what arrives; recipients starting with 'nobody' are unknown."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address.startswith("nobody"):
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted"

    def messages(self) -> list[EmailMessage]:
        out = []
        for e in self.envelopes:
            content = e.content if isinstance(e.content, bytes) else str(e.content).encode()
            message = email.message_from_bytes(content, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            out.append(message)
        return out


def authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == b"alarms" and data.password == b"right"
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., tuple[Mailbox, int]]]:
    controllers: list[Controller] = []

    def start(**kwargs: Any) -> tuple[Mailbox, int]:
        mailbox, port = Mailbox(), free_port()
        controller = Controller(mailbox, hostname="127.0.0.1", port=port, **kwargs)
        controller.start()
        controllers.append(controller)
        return mailbox, port

    yield start
    for controller in controllers:
        controller.stop()


def chart_source(alarm: Alarm, hours: float) -> Mapping[str, Sequence[tuple[int, float]]]:
    start = alarm.ts_ms - int(hours * 3600_000)
    return {
        "bearing_temp": [(start + i * 60_000, 53.0 + i * 0.05) for i in range(int(hours * 60) + 1)],
        "vibration_rms": [(start + i * 60_000, 1.8 + (i % 7) * 0.01) for i in range(int(hours * 60) + 1)],
    }


def test_email_arrives_with_the_facts_and_a_chart(smtp_server: Callable[..., tuple[Mailbox, int]]) -> None:
    mailbox, port = smtp_server()
    asked: list[float] = []

    def source(alarm: Alarm, hours: float) -> Mapping[str, Sequence[tuple[int, float]]]:
        asked.append(hours)
        return chart_source(alarm, hours)

    channel = EmailChannel(
        "127.0.0.1",
        port,
        sender=SENDER,
        recipients=["shift@plant.example"],
        security="none",
        chart=source,
        chart_hours=4,
    )
    alarm = make_alarm()
    channel.send(alarm)
    channel.close()
    assert asked == [4]
    (envelope,) = mailbox.envelopes
    assert envelope.mail_from == SENDER and envelope.rcpt_tos == ["shift@plant.example"]
    (message,) = mailbox.messages()
    assert message["Subject"] == "[birlik] CRITICAL pump-302: bearing temperature high (raised)"
    assert message["Message-ID"] == message_id(alarm.key, SENDER)
    assert message["X-Birlik-Alarm-Key"] == "pump-302-condition-17#1"
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    for expected in (
        "Site: plant-a",
        "Line: line-1",
        "Machine: pump-302",
        alarm.text,
        "bearing_temp 71.0 degC, normal 53.0 degC, rising 3.0 K/h",
        "vibration_rms 2.35 mm/s, normal 1.8 mm/s",
        "Health: 42 %",
        "Estimated time to failure: about 36 h (between 20 h and 60 h)",
        "State: active, not acknowledged",
        "Dashboard: https://grafana.example/d/machine?var-machine=pump-302",
    ):
        assert expected in text, expected
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_content_type() == "image/png"
    png = attachment.get_content()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert image.shape[0] > 200 and image.shape[1] > 400


def test_email_acknowledgement_names_who_and_threads_with_the_first(
    smtp_server: Callable[..., tuple[Mailbox, int]],
) -> None:
    mailbox, port = smtp_server()
    channel = EmailChannel("127.0.0.1", port, sender=SENDER, recipients=["a@plant.example"], security="none")
    alarm = make_alarm(seq=2, state="ack_active", transition="acknowledged", user="ali", comment="on my way")
    channel.send(alarm)
    (message,) = mailbox.messages()
    assert message["Subject"].endswith("(acknowledged)")
    assert message["In-Reply-To"] == message_id("pump-302-condition-17#1", SENDER)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Acknowledged by: ali" in text and "Comment: on my way" in text
    assert not list(message.iter_attachments())


def test_email_goes_without_chart_when_the_chart_fails(
    smtp_server: Callable[..., tuple[Mailbox, int]], caplog: pytest.LogCaptureFixture
) -> None:
    mailbox, port = smtp_server()

    def broken(alarm: Alarm, hours: float) -> Mapping[str, Sequence[tuple[int, float]]]:
        raise RuntimeError("influx is down")

    channel = EmailChannel(
        "127.0.0.1", port, sender=SENDER, recipients=["a@plant.example"], security="none", chart=broken
    )
    with caplog.at_level(logging.WARNING, logger="analytics.channels"):
        channel.send(make_alarm())
    (message,) = mailbox.messages()
    assert not list(message.iter_attachments())
    assert "without a chart" in caplog.text and "influx is down" in caplog.text


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_email_login_right_and_wrong_password(smtp_server: Callable[..., tuple[Mailbox, int]]) -> None:
    mailbox, port = smtp_server(authenticator=authenticate, auth_required=True, auth_require_tls=False)

    def channel(password: str) -> EmailChannel:
        return EmailChannel(
            "127.0.0.1",
            port,
            sender=SENDER,
            recipients=["a@plant.example"],
            username="alarms",
            password=password,
            security="none",
        )

    channel("right").send(make_alarm())
    assert len(mailbox.envelopes) == 1
    with pytest.raises(ChannelRefused, match="login") as info:
        channel("wrong").send(make_alarm())
    assert "wrong" not in str(info.value).replace("'", " ").split()  # the password is never shown
    # No login configured, server requires one: refused too (needs configuration, not a retry).
    with pytest.raises(ChannelRefused):
        EmailChannel("127.0.0.1", port, sender=SENDER, recipients=["a@plant.example"], security="none").send(
            make_alarm()
        )
    assert len(mailbox.envelopes) == 1


def test_email_unknown_recipients(
    smtp_server: Callable[..., tuple[Mailbox, int]], caplog: pytest.LogCaptureFixture
) -> None:
    mailbox, port = smtp_server()
    with pytest.raises(ChannelRefused, match="no such user"):
        EmailChannel("127.0.0.1", port, sender=SENDER, recipients=["nobody@plant.example"], security="none").send(
            make_alarm()
        )
    both = EmailChannel(
        "127.0.0.1", port, sender=SENDER, recipients=["nobody@plant.example", "a@plant.example"], security="none"
    )
    with caplog.at_level(logging.WARNING, logger="analytics.channels"):
        both.send(make_alarm())  # delivered to the one that exists; the other is logged
    assert [e.rcpt_tos for e in mailbox.envelopes] == [["a@plant.example"]]
    assert "nobody@plant.example" in caplog.text


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_email_over_tls_checks_the_certificate(
    smtp_server: Callable[..., tuple[Mailbox, int]], certs: Certs, security: Security
) -> None:
    if security == "starttls":
        mailbox, port = smtp_server(tls_context=server_context(certs), require_starttls=True)
    else:
        mailbox, port = smtp_server(ssl_context=server_context(certs))
    trusted = ssl.create_default_context(cafile=str(certs.ca))
    EmailChannel(
        "127.0.0.1", port, sender=SENDER, recipients=["a@plant.example"], security=security, ssl_context=trusted
    ).send(make_alarm())
    assert len(mailbox.envelopes) == 1
    untrusted = ssl.create_default_context(cafile=str(certs.other_ca))
    with pytest.raises(ChannelError, match="TLS"):
        EmailChannel(
            "127.0.0.1",
            port,
            sender=SENDER,
            recipients=["a@plant.example"],
            security=security,
            ssl_context=untrusted,
            timeout_s=3,
        ).send(make_alarm())


def test_email_server_down_or_silent_is_retryable(silent_port: int) -> None:
    for port, timeout in ((free_port(), 2.0), (silent_port, 0.5)):
        channel = EmailChannel(
            "127.0.0.1", port, sender=SENDER, recipients=["a@plant.example"], security="none", timeout_s=timeout
        )
        start = time.monotonic()
        with pytest.raises(ChannelError) as info:
            channel.send(make_alarm())
        assert time.monotonic() - start < timeout + 1.5
        assert not isinstance(info.value, ChannelRefused)
        assert ("could not connect" if timeout == 2.0 else "did not answer within 0.5 s") in str(info.value)


def test_configuration_mistakes_are_caught_at_start() -> None:
    with pytest.raises(ValueError) as info:
        TelegramChannel("123:abc/../../x y", "1")
    assert "abc" not in str(info.value)
    with pytest.raises(ValueError, match="recipient"):
        EmailChannel("127.0.0.1", 25, sender=SENDER, recipients=[])
    with pytest.raises(ValueError, match="not an e-mail address"):
        EmailChannel("127.0.0.1", 25, sender=SENDER, recipients=["a@b.example\r\nBcc: x@evil.example"])


def test_render_chart_copes_with_odd_series() -> None:
    alarm = make_alarm()
    png = render_chart(alarm, {"bearing_temp": [(T0, 70.0), (T0 - 60_000, float("nan"))], "vibration_rms": [(T0, 1.0)]})
    assert png[:4] == b"\x89PNG"
    with pytest.raises(ValueError):
        render_chart(alarm, {})
    with pytest.raises(ValueError):
        render_chart(alarm, {"x": [(T0, float("inf"))]})


def test_channels_fit_the_interface(caplog: pytest.LogCaptureFixture) -> None:
    channels: list[AlarmChannel] = [
        LogChannel(),
        WebhookChannel("http://127.0.0.1:9/h"),
        TelegramChannel(TOKEN, "1"),
        EmailChannel("127.0.0.1", 25, sender=SENDER, recipients=["a@plant.example"]),
    ]
    assert [c.name for c in channels] == ["log", "webhook", "telegram", "email"]
    with caplog.at_level(logging.INFO, logger="analytics.channels"):
        channels[0].send(make_alarm())
    assert "[birlik] CRITICAL pump-302" in caplog.text and "rising 3.0 K/h" in caplog.text
    for channel in channels:
        channel.close()


# --- the words never fail --------------------------------------------------------------------

names = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,12}", fullmatch=True)
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)
huge_text = st.text(min_size=1, max_size=8).map(lambda t: t * 800)
numbers = st.none() | st.floats() | st.integers(-(10**30), 10**30).map(float)
signals = st.builds(
    SignalContext,
    name=any_text,
    value=st.floats() | st.integers(-(10**400), 10**400),
    unit=any_text,
    normal=numbers,
    rate_per_h=numbers,
)
alarms = st.builds(
    Alarm,
    path=st.builds(MachinePath, names, names, names, names),
    alarm_id=any_text,
    seq=st.integers(-(2**70), 2**70),
    kind=st.sampled_from(["condition", "sensor", "trip", "stale"]) | any_text,
    state=st.sampled_from(["unack_active", "ack_active", "unack_rtn", "shelved", "suppressed", "normal"]) | any_text,
    transition=st.sampled_from(["raised", "acknowledged", "returned", "cleared", "shelved"]) | any_text,
    priority=st.sampled_from(["low", "medium", "high", "critical"]) | any_text,
    ts_ms=st.integers(-(2**80), 2**80),
    title=any_text | huge_text,
    text=any_text | huge_text,
    machine_kind=any_text,
    signals=st.lists(signals, max_size=4).map(tuple),
    health=numbers,
    ttf_h=numbers,
    ttf_low_h=numbers,
    ttf_high_h=numbers,
    team=any_text,
    dashboard=any_text,
    user=any_text,
    comment=any_text,
    shelved_until_ms=st.none() | st.integers(-(2**70), 2**70),
)
MAIL = EmailChannel("127.0.0.1", 25, sender=SENDER, recipients=["a@plant.example"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alarms)
def test_the_words_never_fail(alarm: Alarm) -> None:
    subject = format_subject(alarm)
    assert "\n" not in subject and "\r" not in subject and 0 < len(subject) <= 200
    text = format_text(alarm)
    assert text.endswith("\n")
    compact = format_compact(alarm)
    assert len(compact.encode("utf-16-le")) // 2 <= 4096
    for words in (subject, text, compact):
        words.encode("utf-8")
    MAIL.message(alarm).as_bytes()  # headers stay valid (no line breaks injected)
    json.loads(alarm_json(alarm))
