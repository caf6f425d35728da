"""The commented example configuration stays complete and loadable."""

import dataclasses
import tomllib
from pathlib import Path

from birlik.config import SECTIONS, Config, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "birlik.example.toml"


def test_example_config_lists_every_setting_with_its_default() -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    defaults = Config()
    for section in SECTIONS:
        fields = {
            f.name: getattr(getattr(defaults, section), f.name) for f in dataclasses.fields(getattr(defaults, section))
        }
        assert data[section] == fields, section


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.sources["ingest.batch_size"] == str(EXAMPLE)
