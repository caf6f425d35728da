"""What a machine's data-quality checks learned, saved and loaded again (after a restart)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.quality import STATE_FORMAT, DataQualityMonitor
from tests.test_quality import simulated


def test_a_loaded_monitor_judges_as_the_saved_one_would() -> None:
    stuck = {"type": "stuck", "signal": "bearing_temp", "start": "7h", "duration": "1h"}
    samples = simulated([stuck], 8.5, "centrifugal_pump")
    mon = DataQualityMonitor()
    for ts, v in samples[:5000]:
        mon.update(ts, v)
    assert not mon.learning
    loaded = DataQualityMonitor.loads(mon.dumps())
    a = [(i.signal, i.kind, i.state, i.ts_ms) for ts, v in samples[5000:] for i in mon.update(ts, v)]
    b = [(i.signal, i.kind, i.state, i.ts_ms) for ts, v in samples[5000:] for i in loaded.update(ts, v)]
    assert a == b and ("bearing_temp", "stuck", "raised") in [x[:3] for x in a]
    assert len(mon.dumps()) < 60_000  # compressed: tens of kilobytes a machine


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_anything_else_is_refused_with_a_reason(data: bytes, with_header: bool) -> None:
    with pytest.raises(ValueError, match="saved data-quality monitor"):
        DataQualityMonitor.loads(STATE_FORMAT + data if with_header else data)
