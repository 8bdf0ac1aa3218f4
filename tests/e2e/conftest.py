"""End-to-end fixtures: a real AllocdServer on an ephemeral port, driven over gRPC.

Each test module gets its own server (module scope), running `AllocdServer` on its
own asyncio event loop in a background thread. Tests talk to it with ordinary
synchronous `grpc.insecure_channel` stubs, exactly as a client would.

A module can change the server's settings by overriding the `server_settings`
fixture; a test that needs a server of its own calls `server_factory(**overrides)`.
Tests on a shared server keep out of each other's way by naming their SKUs and
nodes with a per-test prefix (see `Api.seed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from allocd.v1 import (
    catalog_service_pb2,
    catalog_service_pb2_grpc,
    diagnostics_service_pb2_grpc,
    inventory_service_pb2,
    inventory_service_pb2_grpc,
    network_service_pb2,
    network_service_pb2_grpc,
    order_service_pb2,
    order_service_pb2_grpc,
    types_pb2,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.codec import node_to_proto
from service.config import Settings
from service.demo import DEMO_NODES
from service.demo_network import demo_network
from service.network_codec import network_to_proto
from service.server import AllocdServer

RPC_TIMEOUT_S = 10.0
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0

#: Limits of the default e2e server, small enough to exceed cheaply.
MAX_LINES = 50
MAX_MESSAGE_BYTES = 64 * 1024


def e2e_settings(**overrides: Any) -> Settings:
    """Settings for a test server: loopback, ephemeral port, no demo data, fast sweeps."""
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "demo": False,
        "sweep_interval_s": 0.2,
        "max_lines_per_request": MAX_LINES,
        "max_message_bytes": MAX_MESSAGE_BYTES,
        "log_level": "WARNING",
        "store": "memory",
    }
    values.update(overrides)
    return Settings(**values)


def rid() -> str:
    """A fresh request id."""
    return f"e2e-{uuid.uuid4()}"


# ---- the server in a background thread ---------------------------------------------
#: The servers running in this process by port (for tests that must reach inside one).
RUNNING: dict[int, AllocdServer] = {}


class ServerThread:
    """Runs one AllocdServer on a private event loop in a daemon thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="allocd-e2e-server", daemon=True)
        self.server: AllocdServer | None = None
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def _start(self) -> int:
        # Built inside the loop: grpc.aio binds the server to the running loop.
        self.server = AllocdServer(self.settings)
        return await self.server.start()

    def start(self) -> int:
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self.loop)
        self.port = future.result(timeout=START_TIMEOUT_S)
        wait_until_serving(f"127.0.0.1:{self.port}")
        assert self.server is not None
        RUNNING[self.port] = self.server
        return self.port

    def stop(self) -> None:
        RUNNING.pop(self.port, None)
        try:
            if self.server is not None:
                future = asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop)
                future.result(timeout=STOP_TIMEOUT_S)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=STOP_TIMEOUT_S)
            assert not self.thread.is_alive(), "the server thread did not stop"
            self.loop.close()


def wait_until_serving(target: str, timeout_s: float = 30.0) -> None:
    """Poll grpc.health.v1 Check until the server reports SERVING."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = status
            except grpc.RpcError as error:
                last = error.code()
            time.sleep(0.05)
    raise AssertionError(f"{target} never reported SERVING (last answer: {last})")


@contextlib.contextmanager
def start_server(settings: Settings | None = None) -> Iterator[int]:
    """A server of its own for one test; yields its port."""
    handle = ServerThread(settings or e2e_settings())
    try:
        yield handle.start()
    finally:
        handle.stop()


# ---- the client side ---------------------------------------------------------------------
@dataclass
class Catalogue:
    """What `Api.seed` created: ids unique to one test."""

    prefix: str
    nodes: list[str]
    skus: list[str]
    channels: list[str] = field(default_factory=lambda: ["web", "marketplace"])


@dataclass(frozen=True)
class LedgerState:
    checksum: str
    last_sequence: int


def first_watched(api: Api, kind: int) -> str:
    """The reference of the first event of `kind` on the event stream, from the start."""
    events = api.inventory.WatchInventoryEvents(
        inventory_service_pb2.WatchInventoryEventsRequest(from_sequence=1), timeout=10)
    try:
        for answer in events:
            if answer.event.kind == kind:
                return str(answer.event.reference)
    finally:
        events.cancel()
    raise AssertionError(f"no event of kind {kind} on the stream")


class Api:
    """Stubs for every allocd service on one channel, plus small helpers."""

    rid = staticmethod(rid)

    def __init__(self, target: str, settings: Settings) -> None:
        self.target = target
        self.settings = settings
        self.channel = grpc.insecure_channel(target)
        self.inventory = inventory_service_pb2_grpc.InventoryServiceStub(self.channel)
        self.catalog = catalog_service_pb2_grpc.CatalogServiceStub(self.channel)
        self.diagnostics = diagnostics_service_pb2_grpc.DiagnosticsServiceStub(self.channel)
        self.network = network_service_pb2_grpc.NetworkServiceStub(self.channel)
        self.orders = order_service_pb2_grpc.OrderServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    # -- ledger views
    def summary(self) -> inventory_service_pb2.GetLedgerSummaryResponse:
        return self.inventory.GetLedgerSummary(
            inventory_service_pb2.GetLedgerSummaryRequest(include_checksum=True),
            timeout=RPC_TIMEOUT_S)

    def state(self) -> LedgerState:
        summary = self.summary()
        return LedgerState(summary.checksum, summary.last_sequence)

    def level(self, sku_id: str, node_id: str) -> inventory_service_pb2.StockLevel:
        response = self.inventory.GetStockLevels(
            inventory_service_pb2.GetStockLevelsRequest(sku_ids=[sku_id], node_ids=[node_id]),
            timeout=RPC_TIMEOUT_S)
        assert len(response.levels) == 1
        return response.levels[0]

    def sellable(self, sku_id: str, node_ids: list[str] | None = None,
                 channel_id: str = "") -> int:
        response = self.inventory.GetAvailability(
            inventory_service_pb2.GetAvailabilityRequest(
                sku_ids=[sku_id], node_ids=node_ids or [], channel_id=channel_id),
            timeout=RPC_TIMEOUT_S)
        return response.skus[0].available_to_sell

    # -- mutations
    def seed(self, n_nodes: int = 3, n_skus: int = 3) -> Catalogue:
        """Nodes, the channels "web" and "marketplace" and SKUs, all named for this test."""
        prefix = f"T{uuid.uuid4().hex[:10]}"
        nodes = [f"{prefix}-N{i}" for i in range(1, n_nodes + 1)]
        skus = [f"{prefix}-SKU-{i}" for i in range(1, n_skus + 1)]
        self.catalog.UpsertNodes(catalog_service_pb2.UpsertNodesRequest(
            request_id=rid(),
            nodes=[types_pb2.Node(node_id=n, name=f"node {n}",
                                  type=types_pb2.NODE_TYPE_OWNED_DC,
                                  latitude=40.0 + i, longitude=-75.0 - i,
                                  daily_capacity=1000, enabled=True)
                   for i, n in enumerate(nodes)]), timeout=RPC_TIMEOUT_S)
        self.catalog.UpsertChannels(catalog_service_pb2.UpsertChannelsRequest(
            request_id=rid(),
            channels=[types_pb2.Channel(channel_id="web", name="Web store"),
                      types_pb2.Channel(channel_id="marketplace", name="Marketplace")]),
            timeout=RPC_TIMEOUT_S)
        self.catalog.UpsertSkus(catalog_service_pb2.UpsertSkusRequest(
            request_id=rid(),
            skus=[types_pb2.Sku(sku_id=s, name=f"item {s}", weight_lb=1.5,
                                dimensions=types_pb2.Dimensions(length_in=10, width_in=8,
                                                                height_in=4),
                                unit_cost_micros=2_000_000, price_micros=5_000_000,
                                category="home")
                  for s in skus]), timeout=RPC_TIMEOUT_S)
        return Catalogue(prefix, nodes, skus)

    def receive(self, sku_id: str, node_id: str, quantity: int,
                **line: Any) -> inventory_service_pb2.ReceiveInventoryResponse:
        return self.inventory.ReceiveInventory(inventory_service_pb2.ReceiveInventoryRequest(
            request_id=rid(), reference="e2e-receipt",
            lines=[inventory_service_pb2.ReceiptLine(sku_id=sku_id, node_id=node_id,
                                                     quantity=quantity, **line)]),
            timeout=RPC_TIMEOUT_S)

    def reserve(self, lines: list[tuple[str, str, int]], channel_id: str = "",
                **fields: Any) -> inventory_service_pb2.ReserveInventoryResponse:
        return self.inventory.ReserveInventory(inventory_service_pb2.ReserveInventoryRequest(
            request_id=rid(), channel_id=channel_id,
            lines=[inventory_service_pb2.ReservationLine(sku_id=s, node_id=n, quantity=q)
                   for s, n, q in lines], **fields), timeout=RPC_TIMEOUT_S)

    def rejects(self, code: grpc.StatusCode, call: Callable[..., Any], request: Any,
                details: str | None = None) -> grpc.RpcError:
        """Assert `call(request)` fails with `code` and leaves the ledger as it was."""
        before = self.state()
        with pytest.raises(grpc.RpcError) as caught:
            call(request, timeout=RPC_TIMEOUT_S)
        error = caught.value
        assert error.code() == code, f"expected {code}, got {error.code()}: {error.details()}"
        if details is not None:
            assert details in (error.details() or ""), error.details()
        after = self.state()
        assert after == before, "a rejected call changed the ledger"
        return error


# ---- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server_settings() -> Settings:
    """Override in a module to run that module's server with other settings."""
    return e2e_settings()


@pytest.fixture(scope="module")
def allocd_port(server_settings: Settings) -> Iterator[int]:
    """A real AllocdServer, SERVING, for the whole module; stopped at teardown."""
    with start_server(server_settings) as port:
        yield port


@pytest.fixture(scope="module")
def api(allocd_port: int, server_settings: Settings) -> Iterator[Api]:
    """Stubs and helpers for the module's server."""
    client = Api(f"127.0.0.1:{allocd_port}", server_settings)
    yield client
    client.close()


@pytest.fixture
def server_factory() -> Iterator[Callable[..., Api]]:
    """Start servers of a test's own: `server_factory(sweep_interval_s=3600)` -> Api.
    Every server started is stopped when the test ends."""
    with contextlib.ExitStack() as stack:
        def make(**overrides: Any) -> Api:
            settings = e2e_settings(**overrides)
            port = stack.enter_context(start_server(settings))
            client = Api(f"127.0.0.1:{port}", settings)
            stack.callback(client.close)
            return client

        yield make


@pytest.fixture
def cat(api: Api) -> Catalogue:
    """Three nodes, the two channels and three SKUs of this test's own, no stock yet."""
    return api.seed()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A hung stream or server must fail the test, not the CI job.
    for item in items:
        if "e2e" in item.nodeid.split("/") and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(60))


# ---- orders: demo nodes and the demo cost model ------------------------------------------
#: Demo nodes the order tests use, at their real coordinates. Seen from New York (ZIP
#: 100xx, region "new-york"): AVP3 (Hazleton, PA) is zone 2 and has a contracted lane;
#: STORE-NYC is zone 2 and may not fulfil marketplace orders; IND1 (Whitestown, IN) and
#: ATL6 (East Point, GA) are zone 5.
ORDER_NODES = ("AVP3", "IND1", "ATL6", "STORE-NYC")
NEW_YORK_ZIP = "10001"
DAY_MS = 86_400_000


def demo_network_proto(node_ids: tuple[str, ...] | list[str]) -> network_service_pb2.Network:
    """`service.demo_network.demo_network()` as a proto, restricted to `node_ids`: the
    lanes and node costs of other nodes are dropped (they would name unknown nodes)."""
    msg = network_to_proto(demo_network())
    keep = set(node_ids)
    lanes = [lane for lane in msg.lanes if lane.node_id in keep]
    costs = [costs for costs in msg.node_costs if costs.node_id in keep]
    del msg.lanes[:]
    msg.lanes.extend(lanes)
    del msg.node_costs[:]
    msg.node_costs.extend(costs)
    return msg


@dataclass
class OrderWorld:
    """The demo nodes and network on a server; SKUs, groups and orders made per test."""

    api: Api
    nodes: tuple[str, ...]

    @staticmethod
    def unique(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"

    def sku(self, *, weight_lb: float = 1.0, dims: tuple[float, float, float] = (6, 4, 2),
            price_micros: int = 10_000_000, unit_cost_micros: int = 4_000_000,
            group: str = "") -> str:
        """A SKU of this test's own (6x4x2 in, 1 lb: billable 1 lb by default)."""
        sku_id = self.unique("OSKU")
        length, width, height = dims
        self.api.catalog.UpsertSkus(catalog_service_pb2.UpsertSkusRequest(
            request_id=rid(), skus=[types_pb2.Sku(
                sku_id=sku_id, name=f"item {sku_id}", weight_lb=weight_lb,
                dimensions=types_pb2.Dimensions(length_in=length, width_in=width,
                                                height_in=height),
                unit_cost_micros=unit_cost_micros, price_micros=price_micros,
                category="home", substitution_group=group)]), timeout=RPC_TIMEOUT_S)
        return sku_id

    def stock(self, sku_id: str, node_id: str, quantity: int) -> None:
        self.api.receive(sku_id, node_id, quantity)

    def order(self, *lines: tuple[str, int], order_id: str = "",
              postal_code: str = NEW_YORK_ZIP, **fields: Any) -> order_service_pb2.Order:
        """A web order to New York; line ids left empty (they default to "1", "2", ...)."""
        fields.setdefault("channel_id", "web")
        return order_service_pb2.Order(
            order_id=order_id or self.unique("ORD"),
            ship_to=order_service_pb2.ShipTo(postal_code=postal_code),
            lines=[order_service_pb2.OrderLine(sku_id=sku_id, quantity=qty)
                   for sku_id, qty in lines], **fields)

    def allocate(self, order: order_service_pb2.Order, *, explain: bool = False,
                 request_id: str = "") -> order_service_pb2.AllocateOrderResponse:
        return self.api.orders.AllocateOrder(order_service_pb2.AllocateOrderRequest(
            request_id=request_id or rid(), order=order, explain=explain),
            timeout=RPC_TIMEOUT_S)

    def get(self, order_id: str) -> order_service_pb2.GetOrderResponse:
        return self.api.orders.GetOrder(order_service_pb2.GetOrderRequest(order_id=order_id),
                                        timeout=RPC_TIMEOUT_S)

    def levels(self, sku_id: str, node_id: str) -> tuple[int, int]:
        """(AVAILABLE, ALLOCATED) of a SKU at a node."""
        level = self.api.level(sku_id, node_id)
        return level.available, level.allocated

    def exceptions(self, order_id: str, include_resolved: bool = False,
                   **fields: Any) -> list[order_service_pb2.OrderException]:
        return list(self.api.orders.ListExceptions(order_service_pb2.ListExceptionsRequest(
            order_id=order_id, include_resolved=include_resolved, **fields),
            timeout=RPC_TIMEOUT_S).exceptions)

    def resolve(self, exception_id: str, resolution: int, note: str = "",
                role: str = "operations") -> order_service_pb2.ResolveExceptionResponse:
        """As someone with `role` (each exception type is resolved by its owner role, or
        by operations or admin; with authentication off the metadata says who calls)."""
        return self.api.orders.ResolveException(order_service_pb2.ResolveExceptionRequest(
            request_id=rid(), exception_id=exception_id, resolution=resolution, note=note),
            metadata=(("x-allocd-actor", "e2e"), ("x-allocd-role", role)),
            timeout=RPC_TIMEOUT_S)

    def release(self, node_id: str) -> order_service_pb2.ReleaseWaveResponse:
        return self.api.orders.ReleaseWave(order_service_pb2.ReleaseWaveRequest(
            request_id=rid(), node_id=node_id), timeout=RPC_TIMEOUT_S)

    def pick(self, package_id: str, picked: dict[str, int]
             ) -> order_service_pb2.ConfirmPickResponse:
        return self.api.orders.ConfirmPick(order_service_pb2.ConfirmPickRequest(
            request_id=rid(), package_id=package_id,
            lines=[order_service_pb2.PickedLine(line_id=line_id, picked_quantity=qty)
                   for line_id, qty in picked.items()]), timeout=RPC_TIMEOUT_S)

    def pack(self, package_id: str, scanned: dict[str, int]
             ) -> order_service_pb2.ConfirmPackResponse:
        return self.api.orders.ConfirmPack(order_service_pb2.ConfirmPackRequest(
            request_id=rid(), package_id=package_id,
            scanned=[order_service_pb2.ScannedItem(sku_id=sku_id, quantity=qty)
                     for sku_id, qty in scanned.items()]), timeout=RPC_TIMEOUT_S)

    def ship(self, package_id: str, tracking_number: str = ""
             ) -> order_service_pb2.ConfirmShipmentResponse:
        return self.api.orders.ConfirmShipment(order_service_pb2.ConfirmShipmentRequest(
            request_id=rid(), package_id=package_id,
            tracking_number=tracking_number or self.unique("1Z")), timeout=RPC_TIMEOUT_S)

    def fulfil(self, package: order_service_pb2.Package
               ) -> order_service_pb2.ConfirmShipmentResponse:
        """Wave, full pick, matching pack and shipment of an ALLOCATED package."""
        wave = self.release(package.node_id)
        assert package.package_id in wave.package_ids
        picked = self.pick(package.package_id, {line.line_id: line.quantity
                                                for line in package.lines})
        assert picked.short_quantity == 0
        scanned: dict[str, int] = {}
        for line in package.lines:
            scanned[line.sku_id] = scanned.get(line.sku_id, 0) + line.quantity
        packed = self.pack(package.package_id, scanned)
        assert packed.matched and not packed.exception_id
        return self.ship(package.package_id)


@pytest.fixture(scope="module")
def demo_world(api: Api) -> OrderWorld:
    """The module's server with the demo nodes of ORDER_NODES (real coordinates), the
    channels "web" and "marketplace", and the demo network restricted to those nodes."""
    return order_world(api)


def order_world(api: Api) -> OrderWorld:
    """`api`'s server given the demo nodes of ORDER_NODES, the channels "web" and
    "marketplace", and the demo network restricted to those nodes."""
    api.catalog.UpsertNodes(catalog_service_pb2.UpsertNodesRequest(
        request_id=rid(),
        nodes=[node_to_proto(n) for n in DEMO_NODES if n.node_id in ORDER_NODES]),
        timeout=RPC_TIMEOUT_S)
    api.catalog.UpsertChannels(catalog_service_pb2.UpsertChannelsRequest(
        request_id=rid(),
        channels=[types_pb2.Channel(channel_id="web", name="Web store"),
                  types_pb2.Channel(channel_id="marketplace", name="Marketplace")]),
        timeout=RPC_TIMEOUT_S)
    api.network.SetNetwork(network_service_pb2.SetNetworkRequest(
        request_id=rid(), network=demo_network_proto(ORDER_NODES)), timeout=RPC_TIMEOUT_S)
    return OrderWorld(api, ORDER_NODES)
