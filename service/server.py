"""The allocd gRPC server: services, health, reflection, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from allocd.v1 import (
    access_service_pb2,
    access_service_pb2_grpc,
    catalog_service_pb2,
    catalog_service_pb2_grpc,
    diagnostics_service_pb2,
    diagnostics_service_pb2_grpc,
    finance_service_pb2,
    finance_service_pb2_grpc,
    inventory_service_pb2,
    inventory_service_pb2_grpc,
    network_service_pb2,
    network_service_pb2_grpc,
    operations_service_pb2,
    operations_service_pb2_grpc,
    order_service_pb2,
    order_service_pb2_grpc,
    returns_service_pb2,
    returns_service_pb2_grpc,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

import core
import service
from core.commands import SetNetwork
from core.warmup import warm_kernels
from service import wirecheck
from service.auth import AuthInterceptor
from service.config import Settings
from service.demo import demo_commands
from service.demo_network import demo_network
from service.edge import EdgeInterceptor
from service.engine import Engine, wall_clock_ms
from service.filestore import FileEventStore
from service.healthcheck import is_loopback
from service.limits import RateLimitInterceptor, TokenBucket
from service.metrics import Metrics, MetricsInterceptor
from service.network_file import load_network_file
from service.redisstore import RedisEventStore
from service.servicers.access import AccessServicer
from service.servicers.catalog import CatalogServicer
from service.servicers.diagnostics import DiagnosticsServicer
from service.servicers.finance import FinanceServicer
from service.servicers.inventory import InventoryServicer
from service.servicers.network import NetworkServicer
from service.servicers.operations import OperationsServicer
from service.servicers.orders import OrderServicer
from service.servicers.returns import ReturnsServicer
from service.store import Durability, EventStore, MemoryEventStore

log = logging.getLogger("allocd.server")

#: The collector's thresholds once the state is loaded (see AllocdServer.start). The
#: middle threshold is -1: the count of young collections since the last middle one (0)
#: always exceeds it, so every collection takes the young and middle generations together
#: and what survives goes straight to the oldest (see AllocdServer.start).
SERVER_GC_THRESHOLDS = (25_000, -1, 10_000)

SERVICE_NAMES = (
    inventory_service_pb2.DESCRIPTOR.services_by_name["InventoryService"].full_name,
    catalog_service_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
    diagnostics_service_pb2.DESCRIPTOR.services_by_name["DiagnosticsService"].full_name,
    network_service_pb2.DESCRIPTOR.services_by_name["NetworkService"].full_name,
    order_service_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name,
    finance_service_pb2.DESCRIPTOR.services_by_name["FinanceService"].full_name,
    returns_service_pb2.DESCRIPTOR.services_by_name["ReturnsService"].full_name,
    access_service_pb2.DESCRIPTOR.services_by_name["AccessService"].full_name,
    operations_service_pb2.DESCRIPTOR.services_by_name["OperationsService"].full_name,
)


def auth_secret(settings: Settings) -> bytes:
    secret = settings.auth_secret
    if settings.auth_secret_file:
        secret = Path(settings.auth_secret_file).read_text().strip()
    if len(secret) < 16:
        raise ValueError("auth=token needs auth_secret (or auth_secret_file) of at least 16 "
                         "characters")
    return secret.encode()




def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings; None for plaintext, which is refused off loopback
    unless allow_plaintext says so."""
    if not settings.tls_cert_file:
        if not is_loopback(settings.host) and not settings.allow_plaintext:
            raise ValueError(f"refusing plaintext gRPC on {settings.host}: configure "
                             "tls_cert_file/tls_key_file, or set allow_plaintext")
        return None
    cert = Path(settings.tls_cert_file).read_bytes()
    key = Path(settings.tls_key_file).read_bytes()
    client_ca = (Path(settings.tls_client_ca_file).read_bytes()
                 if settings.tls_client_ca_file else None)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def check_metrics_transport(settings: Settings) -> None:
    """The metrics port follows the gRPC port's rule: plaintext only on loopback unless
    allow_plaintext says so; with TLS configured it serves HTTPS with the same files."""
    if (settings.metrics_port and not settings.tls_cert_file
            and not is_loopback(settings.metrics_host) and not settings.allow_plaintext):
        raise ValueError(f"refusing plaintext metrics on {settings.metrics_host}: configure "
                         "tls_cert_file/tls_key_file, or set allow_plaintext")


def store_from_settings(settings: Settings) -> EventStore:
    url = settings.redis_url or (settings.store if settings.store.startswith(
        ("redis://", "rediss://", "unix://")) else "")
    if url:
        return RedisEventStore(url, settings.partition)
    if settings.store == "memory":
        return MemoryEventStore()
    if settings.store == "file":
        try:
            durability = Durability(settings.durability)
        except ValueError:
            choices = ", ".join(d.value for d in Durability)
            raise ValueError(f"durability must be one of {choices}") from None
        return FileEventStore(Path(settings.data_dir) / settings.partition, durability,
                              settings.group_commit_window_ms, settings.group_commit_max)
    raise ValueError(f"unknown store {settings.store!r} (file, memory or a redis:// URL)")


def _bytes_or(serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """A response serializer that sends a response given as bytes as it is."""

    def serializer(response: Any) -> bytes:
        return response if type(response) is bytes else serialize(response)

    return serializer


class Routes(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """Every service's methods in one table, given to the server as its one generic handler.

    The generated `add_*_to_server` functions also register each method with the server
    ("registered methods"). grpc.aio then keeps a pending request per registered method
    and waits on all of them for every call that arrives: with this server's 77 methods
    that is 78 futures set up and torn down per call, a large share of a small call's
    cost. One table looked up once per call does the same routing.
    """

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: object) -> None:
        """The generated code adds each service twice; its registered methods are kept."""

    def add_registered_method_handlers(
            self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]) -> None:
        for name, handler in handlers.items():
            serialize = handler.response_serializer
            # (a response already written as bytes is sent as it is)
            self.handlers[f"/{service}/{name}"] = handler if serialize is None else (
                handler._replace(response_serializer=_bytes_or(serialize)))  # type: ignore[attr-defined]

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        return self.handlers.get(details.method)  # type: ignore[attr-defined]


class AllocdServer:
    """Owns the gRPC server, the engine and the background tasks of one partition."""

    def __init__(self, settings: Settings, store: EventStore | None = None,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        if not 0 <= settings.snapshot_nice <= 19:
            raise ValueError(
                f"snapshot_nice must be between 0 and 19, not {settings.snapshot_nice}")
        if not 0 <= settings.order_retention_days <= 36_500:  # (NaN is refused too)
            raise ValueError("order_retention_days must be between 0 and 36500, not "
                             f"{settings.order_retention_days}")
        if not settings.archive_interval_s >= 0 or math.isinf(settings.archive_interval_s):
            raise ValueError("archive_interval_s must be 0 (never) or a number of seconds, "
                             f"not {settings.archive_interval_s}")
        if not 0 <= settings.journal_retention_days <= 36_500:
            raise ValueError("journal_retention_days must be between 0 and 36500, not "
                             f"{settings.journal_retention_days}")
        if (not settings.journal_close_interval_s >= 0
                or math.isinf(settings.journal_close_interval_s)):
            raise ValueError("journal_close_interval_s must be 0 (never) or a number of "
                             f"seconds, not {settings.journal_close_interval_s}")
        self.settings = settings
        store = store or store_from_settings(settings)
        # The audit log is a file in the partition's data directory whichever store
        # holds the ledger (with the Redis store too); only the memory store, which
        # keeps nothing, keeps it in memory.
        audit_path = None
        if not isinstance(store, MemoryEventStore):
            directory = (store.directory if isinstance(store, FileEventStore)
                         else Path(settings.data_dir) / settings.partition)
            directory.mkdir(parents=True, exist_ok=True)
            audit_path = directory / "audit.log"
        self.engine = Engine(settings, store, clock, audit_path)
        self.health = health_aio.HealthServicer()
        interceptors: list[grpc.aio.ServerInterceptor] = []  # type: ignore[type-arg]
        if settings.auth == "token":
            engine = self.engine
            interceptors.append(AuthInterceptor(
                auth_secret(settings), lambda: engine.ledger.revoked_tokens,
                lambda: engine.clock() // 1000))
        elif settings.auth != "off":
            raise ValueError(f"auth must be off or token, not {settings.auth!r}")
        if settings.rate_limit_per_s > 0:
            interceptors.append(RateLimitInterceptor(
                TokenBucket(settings.rate_limit_per_s, settings.rate_limit_burst)))
        self.metrics = Metrics(self.engine)
        interceptors.insert(0, MetricsInterceptor(self.metrics))  # first: sees every status
        interceptors.append(EdgeInterceptor())  # last: it wraps the servicer itself
        self.server = grpc.aio.server(interceptors=interceptors, options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", 0),
            ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        ])
        self.network_servicer = NetworkServicer(self.engine)
        services: list[tuple[Callable[[Any, Any], None], object]] = [
            (inventory_service_pb2_grpc.add_InventoryServiceServicer_to_server,
             InventoryServicer(self.engine)),
            (catalog_service_pb2_grpc.add_CatalogServiceServicer_to_server,
             CatalogServicer(self.engine)),
            (diagnostics_service_pb2_grpc.add_DiagnosticsServiceServicer_to_server,
             DiagnosticsServicer(settings.max_orders_per_request)),
            (network_service_pb2_grpc.add_NetworkServiceServicer_to_server,
             self.network_servicer),
            (order_service_pb2_grpc.add_OrderServiceServicer_to_server,
             OrderServicer(self.engine)),
            (access_service_pb2_grpc.add_AccessServiceServicer_to_server,
             AccessServicer(self.engine)),
            (finance_service_pb2_grpc.add_FinanceServiceServicer_to_server,
             FinanceServicer(self.engine)),
            (returns_service_pb2_grpc.add_ReturnsServiceServicer_to_server,
             ReturnsServicer(self.engine)),
            (operations_service_pb2_grpc.add_OperationsServiceServicer_to_server,
             OperationsServicer(self.engine)),
            (health_pb2_grpc.add_HealthServicer_to_server, self.health),
            (reflection_pb2_grpc.add_ServerReflectionServicer_to_server,
             reflection.aio.ReflectionServicer((  # type: ignore[attr-defined]
                 *SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                 reflection.SERVICE_NAME))),
        ]
        routes = Routes()
        for add, servicer in services:
            add(servicer, routes)
        self.routes = routes
        self.server.add_generic_rpc_handlers((routes,))
        self.port = 0
        self.metrics_port = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()

    async def _set_health(self, status: int) -> None:
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    async def start(self) -> int:
        """Listen, load state, warm the kernels, then report SERVING. Returns the port."""
        try:
            return await self._start()
        except BaseException:
            await self.server.stop(0)  # a failed start leaves nothing listening
            await self.engine.store.close()
            raise

    async def _start(self) -> int:
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{self.settings.host}:{self.settings.port}"
        credentials = server_credentials(self.settings)
        check_metrics_transport(self.settings)
        if credentials is not None:
            self.port = self.server.add_secure_port(address, credentials)
        else:
            self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.settings.host}:{self.settings.port}")
        await self.server.start()
        warm_kernels()
        wirecheck.warm()
        await self.engine.start()
        if self.settings.demo and self.engine.ledger.catalog.n_skus == 0:
            for i, command in enumerate(demo_commands(
                    self.settings.demo_skus, self.settings.demo_seed, self.engine.clock())):
                await self.engine.mutate_internal(command, f"demo-{i}")
            log.info("loaded the demo catalogue: %d SKUs, %d nodes",
                     self.engine.ledger.catalog.n_skus, self.engine.ledger.catalog.n_nodes)
        if self.settings.network_file:
            spec = load_network_file(self.settings.network_file)
            await self.engine.mutate_internal(SetNetwork(spec), "network-file")
            log.info("loaded the network from %s", self.settings.network_file)
        elif self.settings.demo and not self.engine.ledger.network_spec.services:
            await self.engine.mutate_internal(SetNetwork(demo_network()), "demo-network")
        if self.settings.metrics_port:
            self.metrics.loop = asyncio.get_running_loop()
            self.metrics_port = self.metrics.serve(
                self.settings.metrics_host, self.settings.metrics_port,
                certfile=self.settings.tls_cert_file, keyfile=self.settings.tls_key_file,
                client_cafile=self.settings.tls_client_ca_file)
        self._tasks.append(asyncio.create_task(self.engine.sweep_forever()))
        self._tasks.append(asyncio.create_task(self.engine.archive_forever()))
        self._tasks.append(asyncio.create_task(self.engine.close_journal_forever()))
        self._tasks.append(asyncio.create_task(self.engine.audit_sync_forever()))
        self._tasks.append(asyncio.create_task(self.engine.checkpoint_forever()))
        self._tasks.append(asyncio.create_task(
            self.network_servicer.values.refresh_forever()))
        # The loaded state is long-lived: keep the collector from rescanning it, and
        # collect young objects less often (the request path allocates many). What
        # survives a young collection is nearly all kept for good (the new orders'
        # records), so a middle generation only walked it all a second time: collected
        # every 2 young collections it took ~2/3 of the collector's time, which was ~13%
        # of the order path's. Now every collection takes young and middle together and
        # its survivors go to the oldest generation: each object is walked once, the
        # collector's share fell to ~5-6%, and the longest pause is a young collection's
        # (a few ms) instead of ~21 ms. Cycles that die later are still found by the full
        # collections, as rare as before: every 25,000 x 10,000 allocations at most (and
        # only once the oldest generation has grown by a quarter).
        gc.collect()
        gc.freeze()
        gc.set_threshold(*SERVER_GC_THRESHOLDS)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking calls, let in-flight ones finish (up to `grace` seconds), close."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.metrics.stop()
        await self.health.enter_graceful_shutdown()
        await self.engine.close_streams()
        await self.server.stop(self.settings.shutdown_grace_s if grace is None else grace)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.engine.store.close()
        self.engine.audit.close()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
        await self.server.wait_for_termination()


def _build_state() -> str:
    """Which of the order path's modules run compiled (scripts/compile_core.py)."""
    if core.COMPILED and service.COMPILED:
        return "compiled core"
    if not (core.COMPILED or service.COMPILED):
        return "interpreted core"
    return (f"{'compiled' if core.COMPILED else 'interpreted'} core, "
            f"{'compiled' if service.COMPILED else 'interpreted'} wire encoder")


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    server = AllocdServer(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = await server.start()
    address = f"{settings.host}:{port}"
    print(f"allocd listening on {address} (partition {settings.partition!r}, "
          f"{server.engine.ledger.catalog.n_skus} SKUs, "
          f"{server.engine.ledger.catalog.n_nodes} nodes, "
          f"{_build_state()})", flush=True)
    print("try:  node_modules/.bin/buf curl --protocol grpc --http2-prior-knowledge "
          f"--list-methods http://{address}", flush=True)
    await stop.wait()
    log.info("shutting down: finishing in-flight calls")
    await server.stop()
    print("allocd stopped", flush=True)
