"""Benchmarks of allocd: pytest-benchmark micro benchmarks and the gRPC load harnesses."""

from __future__ import annotations

import signal
import sys
from types import FrameType


def stop_on_sigterm() -> None:
    """End the harness on SIGTERM (a `kill`, a timeout) as on Ctrl-C: through its `finally`
    blocks and context managers, which stop the servers it started. Without this they
    outlive it, still listening and holding their memory."""

    def leave(signum: int, _frame: FrameType | None) -> None:
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, leave)
