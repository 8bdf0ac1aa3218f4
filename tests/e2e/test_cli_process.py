"""`allocd serve` as a real process: port 0, health, reflection, demo data, SIGTERM."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from allocd.v1 import inventory_service_pb2 as inv
from allocd.v1 import inventory_service_pb2_grpc as inv_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
ALLOCD = ROOT / ".venv" / "bin" / "allocd"
LISTENING = re.compile(r"^allocd listening on 127\.0\.0\.1:(\d+) ")
STARTUP_TIMEOUT_S = 60
SHUTDOWN_TIMEOUT_S = 15


def read_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    """The next stdout line, or fail if none comes within `timeout_s`."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            raise AssertionError(f"allocd printed nothing within {timeout_s} s")
    return process.stdout.readline()


@pytest.fixture
def demo_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    executable = ALLOCD if ALLOCD.exists() else Path(sys.executable).with_name("allocd")
    stderr_path = tmp_path / "allocd.stderr"
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR",
                                                            str(ROOT / ".numba_cache"))}
    env = {k: v for k, v in env.items() if not k.startswith("ALLOCD_")}
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [str(executable), "serve", "--port", "0", "--demo", "--demo-skus", "200",
             "--data-dir", str(tmp_path / "data")],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        first = read_line(process, STARTUP_TIMEOUT_S)
        match = LISTENING.match(first)
        assert match, f"unexpected first line {first!r}; stderr: {stderr_path.read_text()}"
        port = int(match.group(1))
        assert port > 0
        yield process, port, stderr_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def wait_serving(channel: grpc.Channel, timeout_s: float) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("allocd never reported SERVING")
        time.sleep(0.05)


def test_the_cli_serves_the_demo_on_an_ephemeral_port_and_stops_cleanly_on_sigterm(
        demo_process):
    process, port, stderr_path = demo_process
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        wait_serving(channel, STARTUP_TIMEOUT_S)

        # Reflection lists the services, as `buf curl --list-methods` would use it.
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = list(reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
        services = {s.name for s in answers[0].list_services_response.service}
        assert {"allocd.v1.InventoryService", "allocd.v1.CatalogService",
                "allocd.v1.DiagnosticsService", "grpc.health.v1.Health"} <= services

        inventory = inv_grpc.InventoryServiceStub(channel)
        availability = inventory.GetAvailability(inv.GetAvailabilityRequest(
            sku_ids=["SKU-000001"], include_nodes=True), timeout=10)
        (sku,) = availability.skus
        assert sku.sku_id == "SKU-000001"
        assert len(sku.nodes) == 13
        assert sku.available_to_sell > 0
        assert sku.available_to_sell == sum(n.available_to_sell for n in sku.nodes)
        for node in sku.nodes:
            assert node.available_to_sell == max(
                0, node.available - node.safety_stock - node.fenced_for_other_channels)
        summary = inventory.GetLedgerSummary(inv.GetLedgerSummaryRequest(), timeout=10)
        assert (summary.sku_count, summary.node_count) == (200, 13)
        assert availability.as_of_sequence == summary.last_sequence

        watch = inventory.WatchInventoryEvents(inv.WatchInventoryEventsRequest(from_sequence=1),
                                               timeout=60)
        assert next(watch).event.sequence == 1  # the stream is open

        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"allocd still running {SHUTDOWN_TIMEOUT_S} s after SIGTERM")
        took = time.monotonic() - signalled
        assert code == 0, stderr_path.read_text()
        assert process.stdout is not None
        rest = process.stdout.read()
        assert "allocd stopped" in rest, (rest, stderr_path.read_text(), took)

        # The open watch ends (it does not hang) once the server is gone.
        with pytest.raises(grpc.RpcError) as ended:
            for _ in watch:
                pass
        assert ended.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


def test_a_second_server_on_a_data_directory_in_use_exits_saying_so(demo_process, tmp_path):
    """Two servers on one directory would each number their own events, and a restart would
    keep one's acknowledged changes and drop the other's: the second does not start."""
    process, _, _ = demo_process
    executable = ALLOCD if ALLOCD.exists() else Path(sys.executable).with_name("allocd")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLOCD_")}
    second = subprocess.run(
        [str(executable), "serve", "--port", "0", "--data-dir", str(tmp_path / "data")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S,
        check=False)
    assert second.returncode == 1, (second.stdout, second.stderr)
    assert f"in use by another allocd (process {process.pid})" in second.stderr
    assert "Traceback" not in second.stderr
    assert process.poll() is None  # the first serves on
