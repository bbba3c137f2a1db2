"""Young collections on a clock (sipim/app/housekeeping.py, Config.gc_young_interval/gc_middle_interval)."""

from __future__ import annotations

import asyncio

import pytest

from sipim.app import housekeeping
from sipim.config import Config, ConfigError


async def test_young_and_middle_collections_run_on_a_clock(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(housekeeping.gc, "collect", lambda generation=2: calls.append(generation))
    jobs = housekeeping.Housekeeping(Config(domain="example.test", gc_young_interval=0.001, gc_middle_interval=0.003))
    task = asyncio.get_running_loop().create_task(jobs._collect_young())
    try:
        while len(calls) < 6:
            await asyncio.sleep(0.001)
    finally:
        task.cancel()
    assert calls[:6] == [0, 0, 1, 0, 0, 1]  # every third one takes the middle generation too


def test_gc_intervals_are_checked(tmp_path):
    toml = tmp_path / "sipim.toml"
    toml.write_text("gc_young_interval = 5.0\ngc_middle_interval = 1.0\n")
    config = Config(domain="example.test", listen=("udp:127.0.0.1:0",))
    config.load_toml(toml)
    assert (config.gc_young_interval, config.gc_middle_interval) == (5.0, 1.0)
    with pytest.raises(ConfigError, match="gc_young_interval"):
        config.validate()
