"""A picture of one machine's simulated signals, with its faults marked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from birlik.payload import Value
from birlik.plant import Machine
from birlik.signals import SIGNALS


def plot_machine(
    machine: Machine,
    signals: Sequence[str],
    rows: Sequence[tuple[int, dict[str, Value]]],
    faults: Sequence[Any],
    path: str,
) -> None:
    """Draw every numeric signal against simulated hours; shade the time the machine is not
    running; mark each fault's onset, detectable point, failure and repair."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("plotting needs matplotlib: pip install 'birlik[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numeric = [s for s in signals if s in SIGNALS and SIGNALS[s].is_numeric]
    start = rows[0][0] if rows else 0
    hours = [(ts - start) / 3_600_000 for ts, _ in rows]
    fig, axes = plt.subplots(len(numeric), 1, sharex=True, figsize=(11, 1.5 * len(numeric) + 1), squeeze=False)
    for ax, name in zip(axes[:, 0], numeric, strict=True):
        values = [v.get(name) for _, v in rows]
        ax.plot(hours, [float(x) if isinstance(x, int | float) else float("nan") for x in values], lw=0.8)
        ax.set_ylabel(f"{name}\n[{SIGNALS[name].unit}]", fontsize=7, rotation=0, ha="right", va="center")
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        _shade_states(ax, hours, [v.get("state") for _, v in rows])
        for fault in faults:
            marks = [(fault.onset_ms, ":", "onset"), (fault.detectable_ms, "--", "detectable")]
            repaired = getattr(fault, "repaired_ms", None)
            if repaired is None or fault.failure_ms < repaired:
                marks.append((fault.failure_ms, "-", "failure"))
            if repaired is not None:
                marks.append((repaired, "-.", "repaired"))
            for at, style, label in marks:
                ax.axvline((at - start) / 3_600_000, color="tab:red", ls=style, lw=0.8, label=label)
    axes[-1, 0].set_xlabel("simulated hours")
    title = f"{machine.path} ({machine.kind})"
    if faults:
        title += ": " + ", ".join(f.fault for f in faults)
        axes[0, 0].legend(fontsize=6, loc="upper left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _shade_states(ax: Any, hours: Sequence[float], states: Sequence[Any]) -> None:
    begin = None
    for h, state in zip(hours, states, strict=True):
        if state != "running" and begin is None:
            begin = h
        elif state == "running" and begin is not None:
            ax.axvspan(begin, h, color="grey", alpha=0.15, lw=0)
            begin = None
    if begin is not None and hours:
        ax.axvspan(begin, hours[-1], color="grey", alpha=0.15, lw=0)
