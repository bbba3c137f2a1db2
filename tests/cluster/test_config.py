"""The `workers` setting: CLI `--workers N|auto`, TOML `workers`."""

from __future__ import annotations

import os

import pytest

from sipim.cli import build_parser, load_config
from sipim.config import Config, ConfigError


def test_default_is_one_process():
    assert Config().worker_count() == 1


def test_auto_means_one_worker_per_cpu(tmp_path):
    config_file = tmp_path / "sipim.toml"
    config_file.write_text('[server]\nworkers = "auto"\n')
    config = Config()
    config.load_toml(config_file)
    assert config.worker_count() == (os.cpu_count() or 1)
    args = build_parser().parse_args(["serve", "--workers", "auto", "--data-dir", str(tmp_path)])
    assert load_config(args).worker_count() == (os.cpu_count() or 1)


def test_a_number_of_workers(tmp_path):
    args = build_parser().parse_args(["serve", "--workers", "3", "--data-dir", str(tmp_path)])
    assert load_config(args).worker_count() == 3


@pytest.mark.parametrize("value", ["many", "-2"])
def test_a_bad_count_is_a_configuration_error(tmp_path, value):
    args = build_parser().parse_args(["serve", "--workers", value, "--data-dir", str(tmp_path)])
    with pytest.raises(ConfigError):
        load_config(args)
