"""Start real servers (Mosquitto, InfluxDB) and platform services as child processes.

Used by ``birlik demo``, ``birlik servers``, the benchmarks and the test fixtures, so the
platform is always exercised over real sockets. Each child gets a free port on 127.0.0.1,
its own data folder under the state directory, a log file, a health check, and a clean
shutdown (SIGTERM, then SIGKILL after a grace period). Children are also asked to die with
their parent, so a killed supervisor leaves nothing running.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class ServerError(RuntimeError):
    """A server could not be started or did not become healthy."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def find_executable(name: str, *extra_dirs: str) -> str:
    found = shutil.which(name) or next((str(Path(d) / name) for d in extra_dirs if (Path(d) / name).is_file()), None)
    if not found:
        raise ServerError(
            f"{name} is not installed; run ./scripts/setup (installs Debian packages mosquitto and influxdb)"
        )
    return found


@dataclass
class Child:
    """A running child process."""

    name: str
    argv: list[str]
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int | None = None

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace_s: float = 10.0, sig: int = signal.SIGTERM) -> int:
        """Ask the process to stop, wait up to ``grace_s``, then kill it. Returns the exit code."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", self.name, grace_s)
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class Supervisor:
    """Owns child processes; stops them all, newest first, when the ``with`` block ends."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.children: list[Child] = []

    def __enter__(self) -> Supervisor:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop_all()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        ready: Callable[[], bool] | None = None,
        timeout_s: float = 30.0,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> Child:
        """Start ``argv``; wait until ``ready()`` is true (if given) or fail with its log."""
        log_dir = self.state_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
        with open(log_path, "ab") as out:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                # Own process group: Ctrl-C reaches the supervisor only, which then stops
                # the children in order (producers first, so nothing in flight is lost).
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        child = Child(name, list(argv), process, log_path, port)
        self.children.append(child)
        if ready is not None:
            deadline = time.monotonic() + timeout_s
            while True:
                if not child.running:
                    raise ServerError(
                        f"{name} exited with code {process.returncode} while starting; its log:\n{child.log_tail()}"
                    )
                with contextlib.suppress(Exception):
                    if ready():
                        break
                if time.monotonic() > deadline:
                    child.stop(2)
                    raise ServerError(
                        f"{name} did not become ready within {timeout_s:.0f} s; its log:\n{child.log_tail()}"
                    )
                time.sleep(0.1)
        log.info("started %s (pid %d%s), log %s", name, process.pid, f", port {port}" if port else "", log_path)
        return child

    def stop(self, child: Child, grace_s: float = 10.0) -> int:
        code = child.stop(grace_s)
        if child in self.children:
            self.children.remove(child)
        log.info("stopped %s (exit code %s)", child.name, code)
        return code

    def stop_all(self) -> None:
        for child in reversed(list(self.children)):
            self.stop(child)

    # --- the two servers --------------------------------------------------------------

    def start_mosquitto(self, *, port: int | None = None, extra: Sequence[str] = ()) -> Mosquitto:
        """Mosquitto with the shipped settings (:func:`mosquitto_config`), its database in
        ``<state dir>/mosquitto``: started again with the same state dir (and ``port``) after a
        stop or a kill, it restores the persistent sessions and their queues."""
        port = port or free_port()
        data = self.state_dir / "mosquitto"
        data.mkdir(parents=True, exist_ok=True)
        conf = data / "mosquitto.conf"
        conf.write_text(mosquitto_config(port, data, extra=extra))
        child = self.start(
            "mosquitto",
            [find_executable("mosquitto", "/usr/sbin"), "-c", str(conf)],
            ready=lambda: _tcp_open(port),
            port=port,
        )
        return Mosquitto(child, "127.0.0.1", port)

    def start_influxdb(self, *, port: int | None = None, auth: bool = False) -> InfluxDB:
        """InfluxDB on ``port``; with ``auth``, HTTP authentication is required (create the first
        admin user without credentials, as InfluxDB 1.x allows)."""
        port = port or free_port()
        data = self.state_dir / "influxdb"
        data.mkdir(parents=True, exist_ok=True)
        conf = data / "influxdb.conf"
        conf.write_text(influxdb_config(data, port, free_port(), auth=auth))
        url = f"http://127.0.0.1:{port}"
        child = self.start(
            "influxdb",
            [find_executable("influxd"), "-config", str(conf)],
            ready=lambda: httpx.get(f"{url}/ping", timeout=1).status_code == 204,
            port=port,
            timeout_s=60,
        )
        return InfluxDB(child, url)


@dataclass
class Mosquitto:
    child: Child
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


@dataclass
class InfluxDB:
    child: Child
    url: str


def _tcp_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


# The broker's settings are those of the shipped docker/mosquitto/mosquitto.conf, so the
# tests, the demo, the benchmarks and Docker run the same limits. Found relative to the
# repository root; when this package is installed without the repository (pip install .
# elsewhere, the Docker image, whose build context leaves docker/ out) the file is absent
# and MOSQUITTO_SETTINGS below is used instead: the same settings, kept equal to the file
# by tests/test_broker_config.py.
SHIPPED_MOSQUITTO_CONF = Path(__file__).resolve().parents[1] / "docker" / "mosquitto" / "mosquitto.conf"

MOSQUITTO_SETTINGS: tuple[tuple[str, str], ...] = (
    ("allow_anonymous", "true"),
    ("persistence", "true"),
    ("autosave_interval", "10"),
    ("max_queued_messages", "1000000"),
    ("max_queued_bytes", "1073741824"),
    ("max_inflight_messages", "20000"),
    ("message_size_limit", "33554432"),
    ("max_packet_size", "67108864"),
    ("persistent_client_expiration", "7d"),
    ("log_type", "error"),
    ("log_type", "warning"),
    ("log_type", "notice"),
)

# Options of the shipped file that name an address or a path of the container: a local
# broker writes its own (listener, persistence_location, log_dest, user) or leaves them out.
# That includes password and ACL files: should the shipped file ever set allow_anonymous
# false, the local broker (whose clients connect anonymously) needs its own answer.
MOSQUITTO_LOCAL_OPTIONS = frozenset(
    {
        "listener",
        "port",
        "bind_address",
        "bind_interface",
        "socket_domain",
        "persistence_location",
        "log_dest",
        "log_file",
        "pid_file",
        "user",
        "include_dir",
        "password_file",
        "acl_file",
        "psk_file",
        "cafile",
        "capath",
        "certfile",
        "keyfile",
        "crlfile",
        "dhparamfile",
    }
)


def parse_mosquitto_conf(text: str) -> list[tuple[str, str]]:
    """The ``option value`` lines of a mosquitto.conf, in order (comments and blank lines skipped).

    An option may appear more than once (``log_type``); the value is the rest of the line.
    """
    settings = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        option, _, value = line.partition(" ")
        settings.append((option, value.strip()))
    return settings


def mosquitto_settings(conf: Path | None = None) -> tuple[list[tuple[str, str]], str]:
    """The broker settings without the local options, and where they came from."""
    path = SHIPPED_MOSQUITTO_CONF if conf is None else conf
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return list(MOSQUITTO_SETTINGS), "the settings built into ops/servers.py (no docker/mosquitto/mosquitto.conf)"
    return [(k, v) for k, v in parse_mosquitto_conf(text) if k not in MOSQUITTO_LOCAL_OPTIONS], str(path)


def mosquitto_config(port: int, data_dir: Path, *, conf: Path | None = None, extra: Sequence[str] = ()) -> str:
    """A mosquitto.conf for a local broker on 127.0.0.1:``port`` keeping its database in ``data_dir``.

    ``extra`` lines come last: options of the listener (``certfile`` ...) or settings that
    override the shipped ones (``allow_anonymous false``), e.g. for the TLS tests."""
    settings, source = mosquitto_settings(conf)
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (some containers): nothing to switch to
        user = ""
    lines = [
        f"# Written by birlik for a local broker: the settings of {source},",
        "# with this listener, database folder and log destination.",
        f"listener {port} 127.0.0.1",
        f"persistence_location {data_dir}/",
        # The supervisor keeps the child's stdout in its log file.
        "log_dest stdout",
    ]
    if user:
        # Started as root, Mosquitto switches to the user "mosquitto", which cannot write the
        # database into this folder: stay the user that started it.
        lines.append(f"user {user}")
    lines += [f"{option} {value}".rstrip() for option, value in settings]
    lines += list(extra)
    return "\n".join(lines) + "\n"


def influxdb_config(data: Path, http_port: int, rpc_port: int, *, auth: bool = False) -> str:
    return f"""# Written by birlik for a local InfluxDB 1.x.
reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{data / "meta"}"

[data]
  dir = "{data / "data"}"
  wal-dir = "{data / "wal"}"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
  auth-enabled = {"true" if auth else "false"}

[continuous_queries]
  enabled = false

[logging]
  level = "warn"
"""
