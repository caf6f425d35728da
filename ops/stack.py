"""The whole platform on one machine: servers and services as supervised child processes.

Used by ``birlik demo`` and the benchmarks: Mosquitto and InfluxDB on free ports, a config
file for the services, and ``birlik ingest`` / ``analytics`` / ``gateway`` processes that
report their counters through stats files.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from birlik.stats import read_stats
from ops.servers import Child, InfluxDB, Mosquitto, ServerError, Supervisor


def birlik_command() -> list[str]:
    """How to run ``birlik`` with this interpreter (the venv's console script if present)."""
    script = Path(sys.executable).parent / "birlik"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ops.cli"]


class Stack:
    def __init__(self, supervisor: Supervisor, *, fresh: bool = True) -> None:
        self.supervisor = supervisor
        self.dir = supervisor.state_dir
        if fresh:
            for sub in ("influxdb", "mosquitto", "logs", "stats"):
                shutil.rmtree(self.dir / sub, ignore_errors=True)
            (self.dir / "dead-letters.jsonl").unlink(missing_ok=True)
        (self.dir / "stats").mkdir(parents=True, exist_ok=True)
        self.broker: Mosquitto | None = None
        self.influx: InfluxDB | None = None
        self.config_path = self.dir / "birlik.toml"

    def start_servers(self, *, database: str = "birlik", **settings: dict[str, Any]) -> None:
        self.broker = self.supervisor.start_mosquitto()
        self.influx = self.supervisor.start_influxdb()
        sections: dict[str, dict[str, Any]] = {
            "mqtt": {"url": self.broker.url},
            "influx": {"url": self.influx.url, "database": database},
            "ingest": {"dead_letters": str(self.dir / "dead-letters.jsonl")},
            "alarms": {"store": str(self.dir / "alarms.sqlite")},
        }
        for section, values in settings.items():
            sections.setdefault(section, {}).update(values)
        text = "# Written by birlik for this run.\n"
        for section, values in sections.items():
            text += f"\n[{section}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in values.items())
        self.config_path.write_text(text)

    def stats_path(self, name: str) -> Path:
        return self.dir / "stats" / f"{name}.json"

    def stats(self, name: str) -> dict[str, Any]:
        return read_stats(self.stats_path(name))

    def start_service(
        self,
        name: str,
        args: Sequence[str],
        *,
        ready: Callable[[], bool] | None = None,
        timeout_s: float = 30,
    ) -> Child:
        argv = [*birlik_command(), *args, "--config", str(self.config_path), "--stats-file", str(self.stats_path(name))]
        return self.supervisor.start(
            name, argv, ready=ready, timeout_s=timeout_s, env={"PYTHONUNBUFFERED": "1", "BIRLIK_CONFIG": ""}
        )

    def start_ingest(self, *args: str) -> Child:
        return self.start_service(
            "ingest", ["ingest", *args], ready=lambda: bool(self.stats("ingest").get("subscribed"))
        )


def wait_until(condition: Callable[[], bool], timeout_s: float, *, every_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every_s)
    return condition()


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


__all__ = ["ServerError", "Stack", "birlik_command", "wait_until"]
