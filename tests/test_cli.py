"""The ``birlik`` command as a user runs it: help, configuration errors, bad plant files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from birlik.config import Config
from birlik.influx import InfluxClient
from birlik.plant import load_plant
from ops.cli import build_parser
from ops.stack import birlik_command
from tests.helpers import readings_in_db

SUBCOMMANDS = [
    "demo",
    "gateway",
    "ingest",
    "analytics",
    "alarms",
    "simulate",
    "dashboards",
    "repair",
    "servers",
    "bench",
    "config",
]


def birlik(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [*birlik_command(), *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def test_every_subcommand_is_registered() -> None:
    choices = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert sorted(choices) == sorted(SUBCOMMANDS)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_describes_each_subcommand(command: str) -> None:
    result = birlik(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: birlik " + command in result.stdout
    assert "--config" in result.stdout


def test_config_shows_sources_and_hides_secrets(tmp_path: Path) -> None:
    path = tmp_path / "birlik.toml"
    path.write_text('[influx]\nurl = "http://influx.example:8086"\ntoken = "s3cret"\n')
    result = birlik("config", "--config", str(path), env={"BIRLIK_MQTT_URL": "mqtt://broker.example:1884"})
    assert result.returncode == 0, result.stderr
    assert "url = 'http://influx.example:8086'    # " + str(path) in result.stdout
    assert "url = 'mqtt://broker.example:1884'    # BIRLIK_MQTT_URL" in result.stdout
    assert "s3cret" not in result.stdout and "token = ***" in result.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[ingest]\nbatch_size = 'many'\n", "batch_size must be int"),
        ("[ingest\n", "is not valid TOML"),
        ("[ingestion]\n", "unknown section [ingestion]"),
        ("[mqtt]\nurl = 'http://x'\n", "must look like mqtt://host:1883"),
    ],
)
def test_a_broken_config_file_is_a_clear_error_not_a_traceback(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = birlik("ingest", "--config", str(path))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_broken_plant_file_is_a_clear_error(tmp_path: Path) -> None:
    plant = tmp_path / "plant.yaml"
    plant.write_text("sites:\n  - id: Bad Site\n    lines: []\n")
    result = birlik("simulate", "--plant", str(plant))
    assert result.returncode == 2
    assert "site name 'Bad Site' is not valid" in result.stderr
    assert "Traceback" not in result.stderr


def test_simulate_lists_the_centre_and_prints_a_machine() -> None:
    listing = birlik("simulate")
    assert listing.returncode == 0, listing.stderr
    assert "site kz-turkestan" in listing.stdout and "site uz-syrdarya" in listing.stdout
    assert "pump-302" in listing.stdout and "bearing_wear" in listing.stdout
    csv = birlik("simulate", "--machine", "pump-302", "--duration", "10m", "--start", "2026-06-01T12:00:00Z")
    assert csv.returncode == 0, csv.stderr
    lines = csv.stdout.splitlines()
    assert lines[0].startswith("time,state,speed,flow")
    assert len(lines) == 1 + 10 * 60 // 5 + 1


def test_bench_lists_its_benchmarks() -> None:
    result = birlik("bench", "--list")
    assert result.returncode == 0
    assert result.stdout.startswith("pipeline")


def test_simulate_plots_a_machine(tmp_path: Path) -> None:
    png = tmp_path / "pump.png"
    result = birlik("simulate", "--machine", "pump-302", "--duration", "90m", "--start", "now-90m", "--plot", str(png))
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000  # a real figure, not an empty canvas


def test_simulate_backfills_history_into_influxdb(config: Config, influx: InfluxClient) -> None:
    env = {"BIRLIK_INFLUX_URL": config.influx.url, "BIRLIK_INFLUX_DATABASE": config.influx.database}
    result = birlik("simulate", "--backfill", "--duration", "15m", "--start", "now-1h", env=env)
    assert result.returncode == 0, result.stderr
    stored = readings_in_db(influx)
    assert stored > 0
    assert f"backfill done: {stored:,} readings of" in result.stderr
    machines = influx.query('SHOW TAG VALUES FROM "telemetry" WITH KEY = "machine"')
    assert len(machines[0].values) == len(list(load_plant().machines()))


def test_an_unknown_detector_is_a_configuration_error() -> None:
    result = birlik("analytics", "--once", "--no-mqtt", env={"BIRLIK_ANALYTICS_DETECTOR": "crystal-ball"})
    assert result.returncode == 2
    known = "zscore, moving_average, operating_point"
    assert f"analytics.detector 'crystal-ball' is unknown (known: {known})" in result.stderr


def test_a_gateway_without_a_broker_keeps_polling_and_buffers_to_disk(tmp_path: Path) -> None:
    from ops.servers import free_port

    result = birlik(
        "gateway",
        "--seconds",
        "2",
        "--speed",
        "60",
        "--state-dir",
        str(tmp_path),
        env={"BIRLIK_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}"},
    )
    # It does not give up: the readings go to the disk log, kept for the next start.
    assert result.returncode == 1
    assert result.stderr.count("broker unreachable, buffering to disk") == 1
    assert "messages were not acknowledged by the broker; kept in the disk log" in result.stderr
    assert "Traceback" not in result.stderr
    assert any(tmp_path.glob("*.sqlite"))


def test_servers_runs_mosquitto_and_influxdb_until_stopped(tmp_path: Path) -> None:
    import signal
    import socket

    import httpx

    state = tmp_path / "servers"
    process = subprocess.Popen(
        [*birlik_command(), "servers", "--state-dir", str(state)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        urls = dict(process.stdout.readline().removeprefix("export ").strip().split("=", 1) for _ in range(2))
        influx = urls["BIRLIK_INFLUX_URL"]
        assert httpx.get(f"{influx}/ping", timeout=5).status_code == 204
        host, port = urls["BIRLIK_MQTT_URL"].removeprefix("mqtt://").split(":")
        socket.create_connection((host, int(port)), timeout=5).close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{influx}/ping", timeout=2)
