"""allocd over gRPC: the server process, loading the catalogue, the call targets (unary,
stream, batch, the OMS call mix, and the echo RPCs of the same server) and the check of
the ledger after a run."""

from __future__ import annotations

import asyncio
import collections
import itertools
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from allocd.v1 import (
    catalog_service_pb2 as cpb,
)
from allocd.v1 import (
    catalog_service_pb2_grpc as cgrpc,
)
from allocd.v1 import (
    diagnostics_service_pb2 as dpb,
)
from allocd.v1 import (
    diagnostics_service_pb2_grpc as dgrpc,
)
from allocd.v1 import (
    inventory_service_pb2 as ipb,
)
from allocd.v1 import (
    inventory_service_pb2_grpc as igrpc,
)
from allocd.v1 import (
    network_service_pb2 as npb,
)
from allocd.v1 import (
    network_service_pb2_grpc as ngrpc,
)
from allocd.v1 import (
    order_service_pb2 as opb,
)
from allocd.v1 import (
    order_service_pb2_grpc as ogrpc,
)
from allocd.v1 import (
    returns_service_pb2 as rpb,
)
from allocd.v1 import (
    returns_service_pb2_grpc as rgrpc,
)
from allocd.v1 import types_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.load.driver import CallResult
from bench.load.workload import (
    CALLS,
    CHANNELS,
    Catalogue,
    OrderBlock,
    WorkloadSpec,
    blocks_for,
    build_catalogue,
    sku_id,
)
from service.codec import channel_to_proto, node_to_proto, sku_to_proto
from service.network_codec import network_to_proto

CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20),
                   ("grpc.max_send_message_length", 64 << 20)]
OK = "OK"
FILLED = opb.OrderStatus.ORDER_STATUS_ALLOCATED
PARTIAL = opb.OrderStatus.ORDER_STATUS_PARTIALLY_ALLOCATED


class AllocdServer:
    """`allocd serve` on a free loopback port, with an empty ledger of its own."""

    def __init__(self, durability: str = "sync", extra: tuple[str, ...] = ()) -> None:
        self.directory = tempfile.TemporaryDirectory(prefix="allocd-load-")
        store = (("--store", "memory") if durability == "memory" else
                 ("--store", "file", "--data-dir", self.directory.name,
                  "--durability", durability))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", "0", "--log-level",
             "WARNING", *store, *extra], stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"allocd did not start: {line!r}")
        self.address = line.split("listening on ")[1].split()[0]
        self.pid = self.process.pid
        with grpc.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 120
            while True:
                try:
                    if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                        break
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("allocd did not report SERVING")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.directory.cleanup()

    def __enter__(self) -> AllocdServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def load_catalogue(address: str, catalogue: Catalogue) -> None:
    """Nodes, channels, SKUs, the cost model and the opening stock, through the API."""
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        catalog = cgrpc.CatalogServiceStub(channel)
        catalog.UpsertNodes(cpb.UpsertNodesRequest(
            request_id="load-nodes", nodes=[node_to_proto(n) for n in catalogue.nodes]))
        catalog.UpsertChannels(cpb.UpsertChannelsRequest(
            request_id="load-channels",
            channels=[channel_to_proto(c) for c in catalogue.channels]))
        for i, chunk in enumerate(_chunks(list(catalogue.skus), 2000)):
            catalog.UpsertSkus(cpb.UpsertSkusRequest(
                request_id=f"load-skus-{i}", skus=[sku_to_proto(s) for s in chunk]))
        ngrpc.NetworkServiceStub(channel).SetNetwork(npb.SetNetworkRequest(
            request_id="load-network", network=network_to_proto(catalogue.network)))
        skus, nodes = np.nonzero(catalogue.stock)
        node_ids = catalogue.node_ids
        lines = [ipb.ReceiptLine(sku_id=sku_id(s), node_id=node_ids[n],
                                 quantity=int(catalogue.stock[s, n]))
                 for s, n in zip(skus.tolist(), nodes.tolist(), strict=True)]
        inventory = igrpc.InventoryServiceStub(channel)
        for i, chunk in enumerate(_chunks(lines, 5000)):
            inventory.ReceiveInventory(ipb.ReceiveInventoryRequest(
                request_id=f"load-stock-{i}", reference="load-opening-stock", lines=chunk))


def stock_levels(address: str, catalogue: Catalogue) -> dict[str, np.ndarray]:
    """Every bucket of every (SKU, node), as [sku, node] arrays."""
    shape = catalogue.stock.shape
    out = {name: np.zeros(shape, np.int64)
           for name in ("available", "reserved", "allocated", "quarantined", "returned")}
    node_index = {node_id: n for n, node_id in enumerate(catalogue.node_ids)}
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        inventory = igrpc.InventoryServiceStub(channel)
        for start in range(0, shape[0], 1000):
            ids = [sku_id(s) for s in range(start, min(start + 1000, shape[0]))]
            reply = inventory.GetStockLevels(ipb.GetStockLevelsRequest(sku_ids=ids),
                                             timeout=60)
            for level in reply.levels:
                s, n = int(level.sku_id[4:]), node_index[level.node_id]
                for name, array in out.items():
                    array[s, n] = getattr(level, name)
    return out


def check_ledger(address: str, catalogue: Catalogue, acknowledged_units: int,
                 shipped_possible: bool = False) -> dict[str, Any]:
    """Oversells from the final stock: cells with a negative bucket, cells whose units do not
    add up to the opening stock (available + reserved + allocated; less when shipments may
    have taken units out), and the difference between the allocated units the ledger holds
    and the units the answers promised."""
    levels = stock_levels(address, catalogue)
    held = levels["available"] + levels["reserved"] + levels["allocated"]
    negative = int(sum(int((array < 0).sum()) for array in levels.values()))
    if shipped_possible:
        not_conserved = int((held > catalogue.stock).sum())
    else:
        not_conserved = int((held != catalogue.stock).sum())
    allocated = int(levels["allocated"].sum())
    mismatch = 0 if shipped_possible else abs(allocated - acknowledged_units)
    return {"negative_cells": negative, "cells_not_conserved": not_conserved,
            "allocated_units": allocated, "acknowledged_units": acknowledged_units,
            "units_unaccounted": mismatch,
            "oversells": negative + not_conserved + mismatch,
            "units_taken": int(catalogue.stock.sum() - levels["available"].sum())}


# ---- the calls -----------------------------------------------------------------------


class OrderSource:
    """This process's share of the order stream, as protobuf orders. Building protobufs is
    client work: a pool is built before the clock starts."""

    def __init__(self, catalogue: Catalogue, part: int, parts: int, prefix: str = "") -> None:
        self.catalogue = catalogue
        self.prefix = prefix
        self.blocks = blocks_for(catalogue, part, parts)
        self.items: collections.deque[tuple[OrderBlock, int]] = collections.deque()
        self.built: collections.deque[tuple[OrderBlock, int, opb.Order]] = collections.deque()

    def _next_raw(self) -> tuple[OrderBlock, int]:
        if not self.items:
            block = next(self.blocks)
            self.items.extend((block, i) for i in range(len(block)))
        return self.items.popleft()

    def build(self, block: OrderBlock, i: int) -> opb.Order:
        return opb.Order(
            order_id=self.prefix + block.order_id(i), channel_id=CHANNELS[int(block.channel[i])],
            sla_tier=types_pb2.SlaTier.ValueType(int(block.tier[i]) + 1),
            ship_to=opb.ShipTo(postal_code=self.catalogue.postal_codes[int(block.region[i])]),
            lines=[opb.OrderLine(line_id=str(j), sku_id=sku_id(s), quantity=q)
                   for j, (s, q) in enumerate(block.lines(i))])

    def prebuild(self, count: int) -> None:
        for _ in range(count):
            block, i = self._next_raw()
            self.built.append((block, i, self.build(block, i)))

    def next(self) -> tuple[OrderBlock, int, opb.Order]:
        if self.built:
            return self.built.popleft()
        block, i = self._next_raw()
        return block, i, self.build(block, i)


@dataclass
class AllocdTarget:
    """AllocateOrder (unary), AllocateStream or AllocateOrders (batch) of the order stream;
    or the echo RPC of the same kind with the same bytes (kind echo_*)."""

    setup: AllocdFactory  # address, workload, kind and sizes
    part: int
    parts: int

    async def open(self) -> None:
        self.catalogue = build_catalogue(self.setup.spec)
        self.source = OrderSource(self.catalogue, self.part, self.parts, self.setup.prefix)
        self.source.prebuild(self.setup.prebuilt)
        self.channel = grpc.aio.insecure_channel(self.setup.address, options=CHANNEL_OPTIONS)
        self.orders = ogrpc.OrderServiceStub(self.channel)
        self.echo = dgrpc.DiagnosticsServiceStub(self.channel)
        self.counts: collections.Counter[str] = collections.Counter()
        sample = opb.AllocateOrderRequest(request_id="sample",
                                          order=self.source.build(*self.source._next_raw()))
        self.payload = sample.SerializeToString()
        self.lanes: list[_StreamLane] = []
        self.turn = itertools.count()
        if self.setup.kind in ("stream", "echo_stream"):
            for _ in range(self.setup.streams):
                lane = _StreamLane(self.orders.AllocateStream if self.setup.kind == "stream"
                                   else self.echo.EchoStream)
                self.lanes.append(lane)

    def _count(self, allocation: opb.Allocation) -> None:
        if allocation.error_code:
            self.counts["order_errors"] += 1
            return
        self.counts["filled" if allocation.status == FILLED else
                    "partial" if allocation.status == PARTIAL else "unfilled"] += 1
        self.counts["units"] += allocation.placed_units
        if allocation.placed_units and not allocation.packages:
            self.counts["outcome_only"] += 1  # answered in the basic view

    async def call(self) -> tuple[str, int]:
        kind = self.setup.kind
        try:
            if kind == "unary":
                _, _, order = self.source.next()
                reply = await self.orders.AllocateOrder(opb.AllocateOrderRequest(
                    request_id="r" + order.order_id, order=order, view=self.setup.view))
                self._count(reply.allocation)
                return OK, 1
            if kind == "batch":
                orders = [self.source.next()[2] for _ in range(self.setup.batch)]
                batch_reply = await self.orders.AllocateOrders(opb.AllocateOrdersRequest(
                    request_id="r" + orders[0].order_id, orders=orders, view=self.setup.view))
                for allocation in batch_reply.allocations:
                    self._count(allocation)
                return OK, len(orders)
            if kind == "stream":
                _, _, order = self.source.next()
                lane = self.lanes[next(self.turn) % len(self.lanes)]
                message = await lane.call(opb.AllocateStreamRequest(
                    request_id="r" + order.order_id, order=order, view=self.setup.view))
                if message.error_code:
                    return f"CODE_{message.error_code}", 0
                self._count(message.allocation)
                return OK, 1
            if kind == "echo_unary":
                await self.echo.Echo(dpb.EchoRequest(payload=self.payload))
                return OK, 1
            if kind == "echo_stream":
                lane = self.lanes[next(self.turn) % len(self.lanes)]
                await lane.call(dpb.EchoStreamRequest(payload=self.payload))
                return OK, 1
            if kind == "echo_batch":
                await self.echo.EchoBatch(dpb.EchoBatchRequest(
                    payloads=[self.payload] * self.setup.batch))
                return OK, self.setup.batch
        except grpc.aio.AioRpcError as error:
            return error.code().name, 0
        raise ValueError(f"unknown kind {kind!r}")

    async def close(self) -> None:
        for lane in self.lanes:
            await lane.close()
        await self.channel.close()

    def outcome(self) -> dict[str, int]:
        return dict(self.counts)


class _StreamLane:
    """One bidirectional stream: requests written in order, answers matched in order."""

    def __init__(self, opener: Any) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.call_ = opener(self._requests())
        self.reader = asyncio.ensure_future(self._read())

    async def _requests(self) -> AsyncIterator[Any]:
        while True:
            item = await self.queue.get()
            if item is None:
                return
            yield item

    async def _read(self) -> None:
        try:
            async for message in self.call_:
                self.waiting.popleft().set_result(message)
        except grpc.aio.AioRpcError as error:
            while self.waiting:
                self.waiting.popleft().set_exception(error)
            raise

    async def call(self, request: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        self.queue.put_nowait(request)
        return await future

    async def close(self) -> None:
        self.queue.put_nowait(None)
        try:
            await asyncio.wait_for(self.reader, 10)
        except (TimeoutError, grpc.aio.AioRpcError, asyncio.CancelledError):
            self.call_.cancel()


@dataclass
class MixedTarget:
    """The OMS call mix, one operation per call: allocate an order; ask availability of its
    SKUs; reserve and release a line; cancel an order allocated earlier; ship one (release a
    wave at its node, pick, pack, ship each package); authorise a return of a shipped one."""

    address: str
    spec: WorkloadSpec
    part: int
    parts: int
    prefix: str = ""

    async def open(self) -> None:
        self.catalogue = build_catalogue(self.spec)
        self.source = OrderSource(self.catalogue, self.part, self.parts, self.prefix)
        self.channel = grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        self.orders = ogrpc.OrderServiceStub(self.channel)
        self.inventory = igrpc.InventoryServiceStub(self.channel)
        self.returns = rgrpc.ReturnsServiceStub(self.channel)
        self.allocated: collections.deque[opb.Allocation] = collections.deque(maxlen=20_000)
        self.shipped: collections.deque[opb.Allocation] = collections.deque(maxlen=20_000)
        self.counts: collections.Counter[str] = collections.Counter()
        self.serial = itertools.count()

    async def call(self) -> CallResult:
        """One operation of the mix, named (its calls are timed apart from the others')."""
        block, i, order = self.source.next()
        op = CALLS[int(block.call[i])]
        if op in ("cancel", "ship") and not self.allocated:
            op = "allocate"
        if op == "return" and not self.shipped:
            op = "allocate"
        self.counts[op] += 1
        try:
            await getattr(self, "_" + op)(block, i, order)
        except grpc.aio.AioRpcError as error:
            self.counts[f"{op}_{error.code().name}"] += 1
            return error.code().name, 0, op
        return OK, 1, op

    async def _allocate(self, block: OrderBlock, i: int, order: opb.Order) -> None:
        reply = await self.orders.AllocateOrder(opb.AllocateOrderRequest(
            request_id="r" + order.order_id, order=order))
        if reply.allocation.packages:
            self.allocated.append(reply.allocation)

    async def _availability(self, block: OrderBlock, i: int, order: opb.Order) -> None:
        await self.inventory.GetAvailability(ipb.GetAvailabilityRequest(
            sku_ids=[line.sku_id for line in order.lines], channel_id=order.channel_id))

    async def _reserve_release(self, block: OrderBlock, i: int, order: opb.Order) -> None:
        s, q = block.lines(i)[0]
        node = int(np.argmax(self.catalogue.stock[s]))
        reservation = f"RES-{order.order_id}"
        try:
            await self.inventory.ReserveInventory(ipb.ReserveInventoryRequest(
                request_id="rr" + order.order_id, reservation_id=reservation,
                channel_id=order.channel_id, ttl_seconds=600, lines=[ipb.ReservationLine(
                    sku_id=sku_id(s), node_id=self.catalogue.node_ids[node], quantity=q)]))
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION:  # sold out is an answer
                raise
            self.counts["reserve_refused"] += 1
            return
        await self.inventory.ReleaseReservation(ipb.ReleaseReservationRequest(
            request_id="rl" + order.order_id, reservation_id=reservation))

    async def _cancel(self, block: OrderBlock, i: int, order: opb.Order) -> None:
        allocation = self.allocated.popleft()
        await self.orders.CancelOrder(opb.CancelOrderRequest(
            request_id="c" + allocation.order_id, order_id=allocation.order_id))

    async def _ship(self, block: OrderBlock, i: int, order: opb.Order) -> None:
        allocation = self.allocated.popleft()
        for package in allocation.packages:
            pid = package.package_id
            await self.orders.ReleaseWave(opb.ReleaseWaveRequest(
                request_id=f"w{pid}", node_id=package.node_id))
            await self.orders.ConfirmPick(opb.ConfirmPickRequest(
                request_id=f"p{pid}", package_id=pid, lines=[
                    opb.PickedLine(line_id=line.line_id, picked_quantity=line.quantity)
                    for line in package.lines]))
            await self.orders.ConfirmPack(opb.ConfirmPackRequest(
                request_id=f"k{pid}", package_id=pid, scanned=[
                    opb.ScannedItem(sku_id=line.sku_id, quantity=line.quantity)
                    for line in package.lines]))
            await self.orders.ConfirmShipment(opb.ConfirmShipmentRequest(
                request_id=f"s{pid}", package_id=pid, tracking_number=f"TRK{pid}"))
        self.shipped.append(allocation)

    async def _return(self, block: OrderBlock, i: int, order: opb.Order) -> None:
        allocation = self.shipped.popleft()
        line = allocation.packages[0].lines[0]
        await self.returns.CreateReturn(rpb.CreateReturnRequest(
            request_id="ra" + allocation.order_id, rma_id="RMA-" + allocation.order_id,
            order_id=allocation.order_id, reason="changed mind",
            lines=[rpb.ReturnLineRequest(line_id=line.line_id, quantity=line.quantity)]))

    async def close(self) -> None:
        await self.channel.close()

    def outcome(self) -> dict[str, int]:
        return dict(self.counts)


@dataclass(frozen=True)
class AllocdFactory:
    """Makes the target in each client process (it must pickle)."""

    address: str
    spec: WorkloadSpec
    kind: str  # unary | stream | batch | echo_unary | echo_stream | echo_batch | mixed
    batch: int = 100
    streams: int = 4
    prebuilt: int = 0
    #: Order ids start with this, so that several runs can share one server.
    prefix: str = ""
    #: How much of each allocation the answers carry (AllocationView).
    view: int = opb.ALLOCATION_VIEW_FULL

    def __call__(self, part: int, parts: int) -> Any:
        if self.kind == "mixed":
            return MixedTarget(self.address, self.spec, part, parts, self.prefix)
        return AllocdTarget(self, part, parts)
