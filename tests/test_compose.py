"""docker-compose.yml, the Dockerfile and the files they mount fit the code (Docker itself is
not needed: the compose file is read as YAML, and checked by ``docker-compose config``, which
needs no daemon)."""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from birlik.config import load_config

REPO = Path(__file__).resolve().parents[1]
BIRLIK_IMAGE = "birlik:latest"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def _birlik_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("image") == BIRLIK_IMAGE or service.get("build") in (".", "./")
    }


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _parser() -> argparse.ArgumentParser:
    try:
        from ops.cli import build_parser

        return build_parser()
    except ImportError as exc:  # a stage's cli module is not written yet
        pytest.skip(f"ops.cli.build_parser cannot be built yet: {exc}")


def test_platform_services_run_the_birlik_image(compose: dict[str, Any]) -> None:
    services = _birlik_services(compose)
    assert set(services) == {"ingest", "analytics", "plant", "repair"}
    for name, service in services.items():
        assert service["build"] == "." and service["image"] == BIRLIK_IMAGE, name
    assert _command(services["ingest"]) == ["ingest"]
    assert _command(services["analytics"]) == ["analytics", "--alarms-store", "/data/analytics/alarms.sqlite"]
    assert _command(services["plant"]) == ["gateway", "--speed", "1", "--state-dir", "/data/gateway"]
    assert _command(services["repair"]) == ["repair"]


def test_commands_are_real_birlik_subcommands(compose: dict[str, Any]) -> None:
    parser = _parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, service in _birlik_services(compose).items():
        command = _command(service)
        assert command[0] in subcommands, f"{name}: 'birlik {command[0]}' does not exist"
        parser.parse_args(command)  # options too: exits (fails the test) on an unknown one


def test_dockerfile_builds_the_birlik_entrypoint() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert (
        dockerfile.splitlines()[[line.startswith("FROM") for line in dockerfile.splitlines()].index(True)]
        == "FROM python:3.11-slim"
    )
    assert "pip install ." in dockerfile
    assert 'ENTRYPOINT ["birlik"]' in dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    # pyproject.toml names README.md as the readme: the build context must keep both.
    assert ".venv" in ignored and ".git" in ignored
    assert "README.md" not in ignored and "pyproject.toml" not in ignored


def test_platform_environment_is_valid_configuration(compose: dict[str, Any]) -> None:
    hosts = set(compose["services"])
    for name, service in _birlik_services(compose).items():
        environment = {k: str(v) for k, v in service["environment"].items()}
        config = load_config(env=environment)  # raises ConfigError for an unknown key or value
        assert urlsplit(config.mqtt.url).hostname == "mosquitto" in hosts, name
        assert urlsplit(config.influx.url).hostname == "influxdb" in hosts, name
        assert config.influx.database == compose["services"]["influxdb"]["environment"]["INFLUXDB_DB"]


def test_mounted_files_exist(compose: dict[str, Any]) -> None:
    mounted = []
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source} is not in the repository"
                mounted.append(source)
            else:
                assert source in compose["volumes"], f"{name}: named volume {source} is not declared"
    assert {"./grafana/provisioning", "./docker/mosquitto/mosquitto.conf"} <= set(mounted)


def test_mosquitto_allows_anonymous_clients_on_1883() -> None:
    lines = [
        line.split()
        for line in (REPO / "docker/mosquitto/mosquitto.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ["allow_anonymous", "true"] in lines
    assert any(words[:2] == ["listener", "1883"] for words in lines)


def test_grafana_reads_the_influxdb_service(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert grafana["depends_on"]["influxdb"]["condition"] == "service_healthy"
    provisioning = REPO / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "birlik-influxdb.yaml").read_text())["datasources"]
    url = urlsplit(source["url"])
    assert url.hostname == "influxdb" and url.hostname in compose["services"]
    assert url.port == 8086 and "8086:8086" in compose["services"]["influxdb"]["ports"]
    assert source["jsonData"]["dbName"] == compose["services"]["influxdb"]["environment"]["INFLUXDB_DB"]
    # The provider's path is inside the mount, and the home dashboard is one of the files.
    [provider] = yaml.safe_load((provisioning / "dashboards" / "birlik.yaml").read_text())["providers"]
    assert provider["options"]["path"] == "/etc/grafana/provisioning/dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (provisioning / Path(home).relative_to("/etc/grafana/provisioning")).is_file()


def test_health_conditions_have_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if rule.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health"


def test_docker_compose_1_29_accepts_the_file() -> None:
    """Debian's docker-compose (1.29) validates the file as Compose v2 would, minus what it lacks
    (a top-level ``name:``). ``config`` reads and checks the file only: no Docker daemon."""
    docker_compose = shutil.which("docker-compose")
    if docker_compose is None:
        pytest.skip("docker-compose is not installed (./scripts/setup installs the Debian package)")
    result = subprocess.run(
        [docker_compose, "-f", "docker-compose.yml", "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"docker-compose config failed ({result.returncode}):\n{result.stderr}"


def test_no_top_level_name_for_docker_compose_1_29(compose: dict[str, Any]) -> None:
    assert "name" not in compose, "docker-compose 1.29 refuses a top-level name:"


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    unit = next(u for u in ("ms", "s", "m", "h") if str(duration).endswith(u))
    return float(str(duration)[: -len(unit)]) * units[unit]


def test_ingest_gets_time_to_stop_cleanly(compose: dict[str, Any]) -> None:
    """Docker kills a container stop_grace_period after SIGTERM (10 s by default); the ingest's
    own stop deadline must end first, so what it holds is written and acknowledged."""
    ingest = compose["services"]["ingest"]
    grace = _seconds(ingest["stop_grace_period"])
    config = load_config(env={k: str(v) for k, v in ingest["environment"].items()})
    stop_timeout = getattr(config.ingest, "stop_timeout_s", 20.0)
    assert grace >= stop_timeout + 5, (grace, stop_timeout)
    # Mosquitto writes its whole database at SIGTERM: more than the default 10 s for a backlog.
    assert _seconds(compose["services"]["mosquitto"]["stop_grace_period"]) > 10
