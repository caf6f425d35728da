"""The main job as a user runs it: ``birlik demo --seconds 30``."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from ops.stack import birlik_command
from simulators.fleet import load_ground_truth

pytestmark = pytest.mark.slow


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain ``text``, read from /proc (a minimal
    Debian has no procps, hence no pgrep)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        if cmdline.parent.name == str(os.getpid()):
            continue
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # the process ended meanwhile
            continue
        if text in args:
            found.append(args)
    return found


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
    # The fault is caught before the failure. (How often the detector is right or wrong is
    # measured by ./scripts/bench detection, not asserted here.)
    assert re.search(r"fault\s+pump-302 bearing_wear: onset \S+, first alert \S+, \d+ min before failure", out)
    assert "false alarms on healthy machines:" in out
    for reason in ("not_json", "wrong_unit", "unknown_machine", "unsupported_version", "out_of_range"):
        assert reason in out
    assert "SELECT" in out  # a query to paste
    # Nothing the demo started is left running.
    assert _processes_mentioning(str(state)) == []
    assert (state / "dead-letters.jsonl").stat().st_size > 0
    truth = load_ground_truth(state / "ground-truth.json")
    assert {g.machine.split("/")[-1] for g in truth} >= {"pump-302", "comp-102"}
