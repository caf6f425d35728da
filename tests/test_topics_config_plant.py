"""The shared contract's small parts: topic names, configuration and the plant file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from birlik.config import ConfigError, describe, load_config
from birlik.plant import DEFAULT_PLANT, Plant, PlantError, load_plant, parse_duration, parse_plant
from birlik.topics import MachinePath, TopicError, parse_topic, subscription

# --- topics ---------------------------------------------------------------------------


def test_topic_and_parse_topic_round_trip() -> None:
    path = MachinePath("ontustik-textile", "kz-turkestan", "spinning-1", "rs-101")

    assert path.topic() == "birlik/ontustik-textile/kz-turkestan/spinning-1/rs-101/telemetry"
    assert str(path) == "ontustik-textile/kz-turkestan/spinning-1/rs-101"
    for channel in ("telemetry", "alert"):
        assert parse_topic(path.topic(channel)) == (path, channel)


@pytest.mark.parametrize("name", ["a", "0", "pump-101", "rs_1.b", "a" * 64])
def test_valid_names(name: str) -> None:
    assert MachinePath(name, name, name, name).machine == name


@pytest.mark.parametrize("name", ["", "Pump", "pump 1", "pump/1", "-pump", ".x", "_x", "a+", "#", "a" * 65, "ü"])
def test_invalid_names_say_which_level(name: str) -> None:
    with pytest.raises(TopicError, match="line name"):
        MachinePath("t", "s", name, "m")


@pytest.mark.parametrize(
    "topic",
    [
        "birlik/t/s/l/m",
        "birlik/t/s/l/m/telemetry/x",
        "other/t/s/l/m/telemetry",
        "birlik/t/s/l/m/status",
        "birlik/t/s/l/M/telemetry",
        "birlik/t/s//m/telemetry",
    ],
)
def test_parse_topic_rejects(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_topic(topic)


def test_subscription_filters() -> None:
    assert subscription() == "birlik/+/+/+/+/telemetry"
    assert subscription("alert", tenant="turan-build") == "birlik/turan-build/+/+/+/alert"
    assert subscription(share="ingest") == "$share/ingest/birlik/+/+/+/+/telemetry"


# --- configuration --------------------------------------------------------------------


def test_defaults_without_file_or_environment() -> None:
    config = load_config(env={})

    assert config.mqtt.url == "mqtt://127.0.0.1:1883"
    assert (config.mqtt.host, config.mqtt.port) == ("127.0.0.1", 1883)
    assert config.influx.database == "birlik"
    assert config.ingest.batch_size == 5000
    assert config.analytics.detector == "zscore"
    assert set(config.sources.values()) == {"default"}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "birlik.toml"
    path.write_text(text)
    return path


def test_file_then_environment(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[mqtt]\nurl = "mqtt://broker.example:2883"\n[influx]\ndatabase = "plant"\ntimeout_s = 3\n'
        "[ingest]\nbatch_size = 100\n",
    )

    config = load_config(path, env={"BIRLIK_INGEST_BATCH_SIZE": "250", "BIRLIK_ANALYTICS_THRESHOLD": "4.5"})

    assert (config.mqtt.host, config.mqtt.port) == ("broker.example", 2883)
    assert config.influx.database == "plant"
    assert config.influx.timeout_s == 3.0 and isinstance(config.influx.timeout_s, float)
    assert config.ingest.batch_size == 250  # the environment wins over the file
    assert config.analytics.threshold == 4.5
    assert config.sources["influx.database"] == str(path)
    assert config.sources["ingest.batch_size"] == "BIRLIK_INGEST_BATCH_SIZE"
    assert config.sources["ingest.flush_interval_s"] == "default"


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, '[influx]\ndatabase = "from_file"\n')

    assert load_config(env={"BIRLIK_CONFIG": str(path)}).influx.database == "from_file"


@pytest.mark.parametrize(
    ("toml", "env", "expected"),
    [
        ("[kafka]\nurl = 'x'\n", {}, r"birlik\.toml: unknown section \[kafka\]"),
        ("mqtt = 3\n", {}, "mqtt must be a table"),
        ("[mqtt]\nhost = 'x'\n", {}, r"birlik\.toml \[mqtt\] host: unknown setting"),
        ("[ingest]\nbatch_size = 'many'\n", {}, r"birlik\.toml \[ingest\] batch_size must be int"),
        ("[ingest]\nbatch_size = true\n", {}, r"birlik\.toml \[ingest\] batch_size must be int"),
        ("[mqtt]\nurl = 1883\n", {}, r"\[mqtt\] url must be str"),
        (
            "[ingest]\nbatch_size = 0\n",
            {},
            r"ingest\.batch_size must be positive and finite, got 0 \(from .*birlik\.toml\)",
        ),
        ("", {"BIRLIK_ANALYTICS_RAISE_AFTER": "-1"}, r"raise_after must be positive.*BIRLIK_ANALYTICS_RAISE_AFTER"),
        ("", {"BIRLIK_INGEST_FLUSH_INTERVAL_S": "soon"}, "environment variable BIRLIK_INGEST_FLUSH_INTERVAL_S"),
        ("", {"BIRLIK_MQTT_COLOUR": "red"}, "environment variable BIRLIK_MQTT_COLOUR: unknown setting"),
        ("[mqtt\n", {}, "not valid TOML"),
        ("[gateway]\nretention = 'forever'\n", {}, r"gateway\.retention: 'forever' is not a duration.*birlik\.toml"),
        ("[gateway]\nsync = 'sometimes'\n", {}, r"gateway\.sync must be 'normal' or 'full'"),
        ("[gateway]\nprotocol = '4'\n", {}, r"gateway\.protocol must be one of 'auto', '5', '3\.1\.1'"),
        ("", {"BIRLIK_GATEWAY_BUFFER_MAX_MB": "inf"}, r"gateway\.buffer_max_mb must be positive and finite"),
        ("", {"BIRLIK_GATEWAY_DRAIN_RATE": "nan"}, r"gateway\.drain_rate must be positive"),
        ("[repair]\nmax_attempts = 0\n", {}, r"repair\.max_attempts must be positive"),
        ("[repair]\nsettle_s = -1\n", {}, r"repair\.settle_s must be 0 or more"),
        ("[repair]\nclient_id = 'a/b'\n", {}, r"repair\.client_id 'a/b' must be a non-empty name"),
    ],
)
def test_config_errors_name_their_source(tmp_path: Path, toml: str, env: dict[str, str], expected: str) -> None:
    path = _write(tmp_path, toml)

    with pytest.raises(ConfigError, match=expected):
        load_config(path, env=env)


def test_gateway_and_repair_sections_are_read(tmp_path: Path) -> None:
    path = _write(tmp_path, '[gateway]\nstate_dir = "/data/gw"\nretention = "2d"\n[repair]\ninterval_s = 5\n')

    config = load_config(path, env={"BIRLIK_GATEWAY_PROTOCOL": "3.1.1"})

    assert (config.gateway.state_dir, config.gateway.retention, config.gateway.protocol) == ("/data/gw", "2d", "3.1.1")
    assert config.repair.interval_s == 5.0
    assert config.sources["gateway.protocol"] == "BIRLIK_GATEWAY_PROTOCOL"


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("BIRLIK_MQTT_URL", "http://broker:1883"),
        ("BIRLIK_MQTT_URL", "mqtt://"),
        ("BIRLIK_INFLUX_URL", "influxdb:8086"),
        ("BIRLIK_INFLUX_URL", "ftp://influxdb"),
    ],
)
def test_bad_urls_are_rejected(name: str, url: str) -> None:
    with pytest.raises(ConfigError, match="must look like"):
        load_config(env={name: url})


def test_bad_url_error_names_its_source() -> None:
    with pytest.raises(ConfigError, match="BIRLIK_INFLUX_URL"):
        load_config(env={"BIRLIK_INFLUX_URL": "influxdb:8086"})


def test_describe_hides_secrets_and_shows_sources() -> None:
    config = load_config(
        env={"BIRLIK_INFLUX_TOKEN": "s3cr3t-token", "BIRLIK_MQTT_PASSWORD": "hunter2", "BIRLIK_MQTT_USERNAME": "gw"}
    )

    text = describe(config)

    assert "s3cr3t-token" not in text
    assert "hunter2" not in text
    assert "token = ***    # BIRLIK_INFLUX_TOKEN" in text
    assert "password = ***    # BIRLIK_MQTT_PASSWORD" in text
    assert "username = 'gw'    # BIRLIK_MQTT_USERNAME" in text
    assert "password = ''    # default" in text  # an unset secret is shown as empty, not as ***
    for section in ("[mqtt]", "[influx]", "[ingest]", "[analytics]"):
        assert section in text


# --- the plant ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plant() -> Plant:
    return load_plant()


def test_default_plant(plant: Plant) -> None:
    machines = list(plant.machines())

    assert [s.id for s in plant.sites] == ["kz-turkestan", "uz-syrdarya"]
    assert len(machines) >= 20
    assert len({m.kind for m in machines}) >= 4
    assert len({m.path for m in machines}) == len(machines)
    assert plant.sample_interval_s == 5.0
    assert plant.source == str(DEFAULT_PLANT)


def test_registry_maps_every_path_to_its_kind(plant: Plant) -> None:
    registry = plant.registry()

    assert len(registry) == len(list(plant.machines()))
    pump = MachinePath("sirdaryo-agro", "uz-syrdarya", "juice-1", "pump-302")
    assert registry[pump] == "centrifugal_pump"


def test_site_lookup(plant: Plant) -> None:
    site = plant.site("uz-syrdarya")

    assert site.gateway == "gw-uz-syrdarya"
    assert all(m.path.site == "uz-syrdarya" for m in site.machines())
    with pytest.raises(PlantError, match=r"no site 'kz-almaty' in .*central-asia\.yaml.*kz-turkestan, uz-syrdarya"):
        plant.site("kz-almaty")


def _plant_data() -> dict[str, Any]:
    return {
        "name": "tiny",
        "sample_interval": "10s",
        "sites": [
            {
                "id": "s1",
                "lines": [
                    {"id": "l1", "tenant": "t1", "machines": [{"id": "m1", "kind": "centrifugal_pump"}]},
                ],
            }
        ],
    }


def test_parse_plant_defaults() -> None:
    plant = parse_plant(_plant_data(), "tiny.yaml")

    [site] = plant.sites
    assert (plant.name, plant.sample_interval_s) == ("tiny", 10.0)
    assert (site.gateway, site.utc_offset_h, site.ambient_mean_c) == ("gw-s1", 5.0, 15.0)
    [machine] = plant.machines()
    assert machine.path == MachinePath("t1", "s1", "l1", "m1")
    assert (machine.params, machine.faults) == ({}, ())


def _machines(data: dict[str, Any]) -> list[dict[str, Any]]:
    machines: list[dict[str, Any]] = data["sites"][0]["lines"][0]["machines"]
    return machines


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: _machines(d).append({"id": "m1", "kind": "conveyor_drive"}), r"machines\[1\]: .*listed twice"),
        (lambda d: _machines(d).append({"id": "M 2", "kind": "x"}), r"line l1: machines\[1\]: machine name"),
        (lambda d: d["sites"][0].update(id="Site One"), r"sites\[0\]: site name"),
        (lambda d: d["sites"][0]["lines"][0].update(tenant="ACME"), r"lines\[0\]: tenant name"),
        (lambda d: _machines(d)[0].pop("kind"), r"machines\[0\]: missing 'kind'"),
        (lambda d: _machines(d)[0].update(params=[1]), r"'params' has the wrong type"),
        (lambda d: _machines(d)[0].update(faults=["bearing_wear"]), "each fault must be a mapping"),
        (lambda d: d["sites"][0].update(utc_offset_h=True), "'utc_offset_h' has the wrong type"),
        (lambda d: d.update(sites=[]), "no sites"),
        (lambda d: d.update(sample_interval="0s"), "sample_interval must be positive"),
        (lambda d: d.update(sample_interval="soon"), "sample_interval: 'soon' is not a duration"),
    ],
)
def test_plant_errors_say_where(change: Any, expected: str) -> None:
    data = _plant_data()
    change(data)

    with pytest.raises(PlantError, match=r"^tiny\.yaml: .*" + expected):
        parse_plant(data, "tiny.yaml")


def test_load_plant_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sites: [\n  - id: s1\n    lines: {oops\n")
    with pytest.raises(PlantError, match=r"(?s)bad\.yaml is not valid YAML: .*line 2, column 3"):
        load_plant(bad)

    with pytest.raises(PlantError, match=r"cannot read plant file .*missing\.yaml"):
        load_plant(tmp_path / "missing.yaml")

    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(PlantError, match="top level must be a mapping"):
        load_plant(scalar)


def test_load_plant_from_a_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(_plant_data()))

    plant = load_plant(path)

    assert plant.source == str(path)
    assert plant.registry() == {MachinePath("t1", "s1", "l1", "m1"): "centrifugal_pump"}
    assert plant.sample_interval_s == 10.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90.0), (2.5, 2.5), ("90", 90.0), ("90s", 90.0), ("250ms", 0.25), ("15m", 900.0), ("15min", 900.0),
     ("2h", 7200.0), ("1.5h", 5400.0), ("1d", 86400.0), (" 5 s ", 5.0)],
)  # fmt: skip
def test_parse_duration(value: Any, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "5 weeks", "-5s", "1h30m", True, None, [5]])
def test_parse_duration_rejects(value: Any) -> None:
    with pytest.raises(PlantError, match=r"^fault start: .* is not a duration"):
        parse_duration(value, "fault start")
