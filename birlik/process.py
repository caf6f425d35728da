"""Process helpers every service and tool uses: logging set-up, signal handling, time parsing.

Neutral ground: the stages and the tools above them import this; it imports nothing of theirs.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from datetime import datetime
from types import FrameType

from birlik.plant import parse_duration

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str) -> None:
    """Log lines to stderr as ``HH:MM:SS LEVEL name: message``."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, datefmt="%H:%M:%S", stream=sys.stderr)
    # Per-request lines from the HTTP client drown the service's own log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def terminate_gracefully() -> None:
    """Stop the same way on SIGTERM as on Ctrl-C: both raise KeyboardInterrupt."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    # A process started in the background of a script inherits SIGINT as ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def parse_start(text: str) -> int:
    """Device-clock start in ms: ``now``, ``now-2h``, or an ISO 8601 time (argparse ``type=``)."""
    text = text.strip()
    if text.startswith("now"):
        rest = text[3:].strip()
        offset = 0.0
        if rest:
            if rest[0] not in "+-":
                raise argparse.ArgumentTypeError(f"{text!r}: expected now, now-2h or now+10m")
            offset = parse_duration(rest[1:]) * (-1 if rest[0] == "-" else 1)
        return int((time.time() + offset) * 1000)
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time (examples: now, now-2h, 2026-11-22T08:00:00Z)"
        ) from None
    except (OverflowError, OSError):
        raise argparse.ArgumentTypeError(f"{text!r} is out of the clock's range") from None
