"""kill -9 the server in the middle of a load; restart; nothing acknowledged is lost.

Many clients reserve and allocate (sync durability, the default). Every call's fate
is recorded: acknowledged, refused (a definite error) or unknown (the connection
died). After the restart every acknowledged change is there exactly once, nothing
refused is there, retries of the unknown ones settle them exactly once, and the
invariants hold (`allocd verify`).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from allocd.v1 import inventory_service_pb2 as inv
from allocd.v1 import inventory_service_pb2_grpc as inv_grpc
from allocd.v1 import order_service_pb2 as opb
from allocd.v1 import order_service_pb2_grpc as ogrpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.test_cli_process import ALLOCD, LISTENING, ROOT, STARTUP_TIMEOUT_S, read_line

CLIENTS = 8
ACKNOWLEDGED_BEFORE_KILL = 60  # the load runs until this many calls were acknowledged
SKUS = [f"SKU-{i:06d}" for i in range(12)]
DEFINITE = {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS}


def start(data_dir: Path, log_path: Path, *store: str) -> tuple[subprocess.Popen[str], str]:
    executable = ALLOCD if ALLOCD.exists() else Path(sys.executable).with_name("allocd")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLOCD_")}
    env.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
    with log_path.open("a") as log:
        process = subprocess.Popen(
            [str(executable), "serve", "--port", "0", "--demo", "--demo-skus", "50",
             "--data-dir", str(data_dir), "--log-level", "WARNING", *store],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    line = read_line(process, STARTUP_TIMEOUT_S)
    match = LISTENING.match(line)
    assert match, f"unexpected first line {line!r}: {log_path.read_text()}"
    address = f"127.0.0.1:{match.group(1)}"
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == 1:
                    break
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    return process, address


class Load:
    """Clients that reserve and allocate until told to stop, recording every fate."""

    def __init__(self, address: str, give_up_when_unavailable: bool = True) -> None:
        self.address = address
        self.give_up = give_up_when_unavailable
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.calls: list[tuple[str, object, str, object]] = []  # kind, request, fate, answer

    def record(self, kind: str, request: object, fate: str, answer: object) -> None:
        with self.lock:
            self.calls.append((kind, request, fate, answer))

    def fates(self, since: int = 0) -> list[tuple[str, object, str, object]]:
        """The calls recorded from the `since`-th on (a copy)."""
        with self.lock:
            return self.calls[since:]

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        with grpc.insecure_channel(self.address) as channel:
            inventory = inv_grpc.InventoryServiceStub(channel)
            orders = ogrpc.OrderServiceStub(channel)
            n = 0
            while not self.stop.is_set():
                n += 1
                rid = f"c{seed}-{n}"
                if rng.random() < 0.5:
                    kind = "reserve"
                    request = inv.ReserveInventoryRequest(
                        request_id=rid, reservation_id=rid, channel_id="web",
                        ttl_seconds=86_400, lines=[inv.ReservationLine(
                            sku_id=rng.choice(SKUS), node_id="IND1",
                            quantity=rng.randint(1, 30))])
                    call = inventory.ReserveInventory
                else:
                    kind = "allocate"
                    request = opb.AllocateOrderRequest(request_id=rid, order=opb.Order(
                        order_id=rid, channel_id="web", ship_to=opb.ShipTo(postal_code="10001"),
                        lines=[opb.OrderLine(sku_id=s, quantity=rng.randint(1, 3))
                               for s in rng.sample(SKUS, rng.randint(1, 3))]))
                    call = orders.AllocateOrder
                try:
                    answer = call(request, timeout=5)
                except grpc.RpcError as error:
                    fate = "refused" if error.code() in DEFINITE else "unknown"
                    self.record(kind, request, fate, error.code())
                    if fate == "unknown" and self.give_up:
                        return  # the server is gone
                    if fate == "unknown":
                        time.sleep(0.05)
                    continue
                self.record(kind, request, "acknowledged", answer)


def wait_for(condition, seconds: float, message: str) -> None:
    """Poll `condition` until it holds; fail with `message` if it has not in `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


@pytest.fixture(params=["file", "redis"])
def store_args(request, tmp_path):
    if request.param == "file":
        return ()
    server = request.getfixturevalue("redis_server")
    return ("--redis-url", server.url)


def test_kill_9_during_load_loses_nothing_acknowledged(tmp_path, store_args):
    data_dir = tmp_path / "data"
    log_path = tmp_path / "allocd.log"
    process, address = start(data_dir, log_path, *store_args)
    load = Load(address)
    threads = [threading.Thread(target=load.client, args=(i,)) for i in range(CLIENTS)]
    try:
        for thread in threads:
            thread.start()

        # Killed once the load has done enough to prove something, however slow the
        # machine: calls acknowledged, and a reservation refused for too little stock.
        def enough() -> bool:
            fates = [c[2] for c in load.fates()]
            assert process.poll() is None, "the server ended before the kill"
            return (fates.count("acknowledged") >= ACKNOWLEDGED_BEFORE_KILL
                    and "refused" in fates)

        wait_for(enough, 60, "the load did too little in 60 s")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        load.stop.set()
        for thread in threads:
            thread.join(30)
    finally:
        if process.poll() is None:
            process.kill()
    acknowledged = [c for c in load.calls if c[2] == "acknowledged"]
    refused = [c for c in load.calls if c[2] == "refused"]
    print(f"acknowledged {len(acknowledged)}, refused {len(refused)}, "
          f"unknown {len(load.calls) - len(acknowledged) - len(refused)}")
    assert len(acknowledged) > 50, "the load did too little to prove anything"
    assert refused, "some reservations should have found too little stock"

    process, address = start(data_dir, log_path, *store_args)
    try:
        check_after_restart(address, load)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    verify_store(data_dir, *store_args)


def check_after_restart(address: str, load: Load) -> None:
    """Acknowledged: present, once; refused: absent; unknown: settled once by a retry."""
    acknowledged = [c for c in load.calls if c[2] == "acknowledged"]
    refused = [c for c in load.calls if c[2] == "refused"]
    with grpc.insecure_channel(address) as channel:
        inventory = inv_grpc.InventoryServiceStub(channel)
        orders = ogrpc.OrderServiceStub(channel)
        for kind, request, _, answer in acknowledged:
            if kind == "reserve":
                held = inventory.GetReservation(inv.GetReservationRequest(
                    reservation_id=request.reservation_id), timeout=5)
                assert [(x.sku_id, x.quantity) for x in held.lines] == [
                    (x.sku_id, x.quantity) for x in request.lines]
            else:
                order = orders.GetOrder(opb.GetOrderRequest(
                    order_id=request.order.order_id), timeout=5)
                assert [p.package_id for p in order.allocation.packages] == [
                    p.package_id for p in answer.allocation.packages]
            # A retry after the crash returns the first answer and changes nothing.
            retry = (inventory.ReserveInventory if kind == "reserve"
                     else orders.AllocateOrder)(request, timeout=5)
            assert retry.result.replayed
        for kind, request, _, _ in refused:
            if kind == "reserve":
                try:
                    inventory.GetReservation(inv.GetReservationRequest(
                        reservation_id=request.reservation_id), timeout=5)
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.NOT_FOUND
                else:
                    raise AssertionError(f"refused reservation {request.request_id} exists")
        # Calls in flight at the kill: a retry settles each exactly once.
        reserved = sum(request.lines[0].quantity for kind, request, _, _ in acknowledged
                       if kind == "reserve")
        for kind, request, fate, _ in load.calls:
            if fate != "unknown" or kind != "reserve":
                continue
            try:
                inventory.ReserveInventory(request, timeout=5)
                reserved += request.lines[0].quantity
            except grpc.RpcError as error:
                assert error.code() in DEFINITE
        summary = inventory.GetLedgerSummary(inv.GetLedgerSummaryRequest(), timeout=5)
        assert summary.reserved == reserved


def verify_store(data_dir: Path, *store_args: str) -> None:
    verified = subprocess.run(
        [str(ALLOCD if ALLOCD.exists() else Path(sys.executable).with_name("allocd")),
         "verify", "--data-dir", str(data_dir), *store_args],
        check=False, capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "no negative:  ok" in verified.stdout and "conservation: ok" in verified.stdout
    assert "journal sums: ok" in verified.stdout


def test_redis_stopped_and_restarted_during_load_loses_nothing(tmp_path, redis_server):
    """Writes fail with UNAVAILABLE while Redis is away; the server heals by itself when it
    returns; every acknowledged change is there exactly once."""
    log_path = tmp_path / "allocd.log"
    process, address = start(tmp_path / "data", log_path, "--redis-url", redis_server.url)
    load = Load(address, give_up_when_unavailable=False)
    threads = [threading.Thread(target=load.client, args=(i,)) for i in range(4)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        redis_server.stop()
        time.sleep(1.5)
        restarted = len(load.fates())
        redis_server.start()

        # The server reloads and writes resume (its retries back off up to 3.2 s): wait
        # until every client has had a call acknowledged since Redis came back, so that
        # none is still in a call that began before.
        def resumed() -> bool:
            acknowledged = {c[1].request_id.split("-")[0] for c in load.fates(restarted)
                            if c[2] == "acknowledged"}
            return len(acknowledged) == len(threads)

        wait_for(resumed, 30, "writes did not resume within 30 s after Redis came back")
        load.stop.set()
        for thread in threads:
            thread.join(30)
        outage = [c for c in load.calls if c[2] == "unknown"]
        assert outage and all(c[3] == grpc.StatusCode.UNAVAILABLE for c in outage)
        last = load.calls[-1]
        assert last[2] != "unknown", "writes did not resume after Redis came back"
        check_after_restart(address, load)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
