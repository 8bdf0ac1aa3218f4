"""A short run of the load harness against a real allocd server: it loads the seeded
catalogue through the API, drives unary allocation in a closed loop and an open loop from
a client process, checks the ledger and writes the JSON and the chart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# A harness run takes a while on a loaded machine: more than the e2e tests' 60 s default.
HARNESS_TIMEOUT_S = 300


def _compare(out: Path, *flags: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    """A short `bench.load compare` of allocd alone (memory store, 300 SKUs): the process
    and the JSON it wrote."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.load", "compare", "--only", "allocd",
         "--allocd-durability", "memory", "--skus", "300", "--seconds", "1.5",
         "--warmup", "0.5", "--processes", "1", *flags, "--out", str(out)],
        check=False, capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed, json.loads((out / "load.json").read_text())


@pytest.mark.timeout(HARNESS_TIMEOUT_S)
def test_harness_runs_against_allocd_and_writes_json_and_chart(tmp_path: Path) -> None:
    out = tmp_path / "out"
    completed, document = _compare(out, "--allocd-modes", "unary", "--concurrency", "4",
                                   "--sweep", "0.5", "--sweep-seconds", "1")
    assert "measuring" in completed.stderr  # the progress line
    [row] = document["rows"]
    assert row["target"] == "allocd" and row["mode"] == "unary AllocateOrder"
    result = row["result"]
    assert result["orders"] > 50 and result["errors"] == {}
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"] <= \
        result["latency_ms"]["max"]
    assert result["server"]["cpu_seconds"] > 0 and result["server"]["memory_mib"] > 0
    check = row["check"]
    assert check["oversells"] == 0 and check["allocated_units"] > 0
    assert check["acknowledged_units"] == check["allocated_units"]
    [point] = document["sweeps"]["allocd unary"]
    assert point["offered_per_s"] > 0 and point["calls"] > 0
    assert (out / "load.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| allocd | unary AllocateOrder |" in completed.stdout


@pytest.mark.timeout(HARNESS_TIMEOUT_S)
def test_batches_with_the_basic_view_account_for_every_unit(tmp_path: Path) -> None:
    # The basic view answers without packages: the units each answer placed still add up
    # to what the ledger holds as allocated.
    _, document = _compare(tmp_path / "out", "--allocd-modes", "batch", "--batch", "20",
                           "--view", "basic")
    [row] = document["rows"]
    assert row["mode"] == "AllocateOrders (20/call), basic view"
    result = row["result"]
    assert result["errors"] == {}
    # Every order that got units was answered without its packages.
    assert result["outcome"]["outcome_only"] == result["outcome"]["filled"] + result[
        "outcome"].get("partial", 0) > 0
    check = row["check"]
    assert check["oversells"] == 0 and check["allocated_units"] > 0
    assert check["acknowledged_units"] == check["allocated_units"]


def test_allocd_bench_is_the_harness(capsys) -> None:
    import pytest

    from service.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "run", "--help"])
    assert exit_info.value.code == 0
    assert "--address" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["bench", "compare", "--lines", "2", "--only"])  # --only needs a value
    assert "--only: expected one argument" in capsys.readouterr().err
