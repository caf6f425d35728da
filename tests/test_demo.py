"""The main job as a user runs it: ``birlik demo --seconds 30``."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from birlik.stack import birlik_command

pytestmark = pytest.mark.slow


def test_demo_runs_the_plant_through_everything_and_summarises(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    result = subprocess.run(
        [*birlik_command(), "demo", "--seconds", "30", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    last = out.strip().splitlines()[-1]
    m = re.fullmatch(r"SUMMARY published=(\d+) written=(\d+) rejected=(\d+) anomalies=(\d+) alerts=(\d+)", last)
    assert m, last
    published, written, rejected, anomalies, alerts = map(int, m.groups())
    assert published > 100_000 and written == published
    assert rejected >= 5  # the misconfigured device's messages, kept
    assert anomalies > 0 and alerts >= 1
    assert "ALERT raised" in out and "pump-302" in out
    assert re.search(r"fault\s+pump-302 bearing_wear: onset \S+, first alert", out)
    assert "false alarms on healthy machines: 0" in out
    for reason in ("not_json", "wrong_unit", "unknown_machine", "unsupported_version", "out_of_range"):
        assert reason in out
    assert "SELECT" in out  # a query to paste
    # Nothing the demo started is left running.
    leftovers = subprocess.run(["pgrep", "-f", str(state)], capture_output=True, text=True)
    assert leftovers.stdout == "", leftovers.stdout
    assert (state / "dead-letters.jsonl").stat().st_size > 0
