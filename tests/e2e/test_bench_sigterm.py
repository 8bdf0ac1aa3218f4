"""A load harness ended by SIGTERM stops the server it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):  # the process has just ended
        return found
    for task in tasks:
        try:
            found += [int(x) for x in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):  # a thread that has just ended
            continue
    return found


def _server_of(harness: subprocess.Popen[bytes]) -> int:
    """The pid of the `allocd serve` the harness started, once the harness measures: its
    client processes start only when the server answers."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert harness.poll() is None, "the harness ended before it measured"
        server, clients = 0, 0
        for pid in _children(harness.pid):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            if b"service.cli" in command and b"serve" in command:
                server = pid
            else:
                clients += 1
        if server and clients:
            return server
        time.sleep(0.2)
    raise AssertionError("the harness started no server, or no client")


def _gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":  # (ended; its parent, gone too, has left it to init)
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


@pytest.mark.timeout(300)  # a harness starting a server and clients: slow on a loaded machine
@pytest.mark.parametrize("harness", [
    ["bench.grpc_ratio", "--seconds", "60", "--only", "unary", "--skus", "200",
     "--clients", "1"],
    ["bench.load", "compare", "--only", "allocd", "--allocd-durability", "memory",
     "--skus", "200", "--seconds", "60", "--processes", "1", "--allocd-modes", "unary"],
], ids=["grpc_ratio", "load"])
def test_a_harness_ended_by_sigterm_stops_its_server(harness, tmp_path):
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen([sys.executable, "-m", *harness], cwd=tmp_path,
                               env={**os.environ, "PYTHONPATH": str(root)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = 0
    try:
        server = _server_of(process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) != 0
        assert _gone(server, 30), "the server outlived its harness"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        if server and not _gone(server, 0):
            with contextlib.suppress(ProcessLookupError):
                os.kill(server, signal.SIGKILL)
