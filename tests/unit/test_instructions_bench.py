"""bench.instructions: the callgrind total read back, and the measured process's
handshake (run here without valgrind: the protocol and the path, not the count)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.instructions import DONE, READY, _total


def test_the_total_is_read_from_the_totals_line_else_the_summary():
    # Instrumentation switched on late: the header's summary is 0, the totals count.
    report = "version: 1\nevents: Ir\nsummary: 0\nfl=x\n0 12\ntotals: 625310998\n"
    assert _total(report) == 625_310_998
    assert _total("events: Ir\nsummary: 42\n") == 42
    with pytest.raises(RuntimeError, match="no instruction total"):
        _total("events: Ir\n")


def test_the_measured_process_runs_its_commands_between_the_two_handshakes():
    child = subprocess.run(
        [sys.executable, "-m", "bench.instructions", "--child", "--orders", "3",
         "--commands", "2", "--warmup", "1", "--view", "basic"],
        input="\n\n", capture_output=True, text=True, timeout=300, check=True)
    assert child.stdout.split() == [READY, DONE]
