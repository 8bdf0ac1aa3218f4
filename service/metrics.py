"""Prometheus metrics on a separate HTTP port: RPC counts and latencies per method and
status, ledger and store gauges read from the engine at scrape time."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from core.model import Bucket
from service.auth import method_key
from service.edge import wrap_handler

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class EngineCollector(Collector):  # type: ignore[misc]
    """Gauges computed from the engine when Prometheus scrapes."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        engine = self.engine
        ledger = engine.ledger
        units = GaugeMetricFamily("allocd_ledger_units", "Units in the ledger by bucket",
                                  labels=["bucket"])
        for bucket, total in zip(
                [b for b in Bucket if b != Bucket.EXTERNAL], ledger.bucket_totals().tolist(),
                strict=True):
            units.add_metric([bucket.name.lower()], total)
        yield units
        yield GaugeMetricFamily("allocd_ledger_last_sequence", "Last event applied",
                                value=ledger.last_seq)
        yield GaugeMetricFamily("allocd_store_lag_events",
                                "Events applied but not yet durable",
                                value=ledger.last_seq - engine.durable_seq)
        yield GaugeMetricFamily("allocd_store_writable", "1 while the store takes writes",
                                value=0 if engine.broken else 1)
        yield GaugeMetricFamily("allocd_events_since_snapshot",
                                "Durable events not yet in a snapshot",
                                value=engine.durable_seq - engine.snapshot_seq)
        orders = GaugeMetricFamily("allocd_orders", "Orders by status", labels=["status"])
        counts: dict[str, int] = {}
        for record in ledger.orders.orders.values():
            counts[record.status.name.lower()] = counts.get(record.status.name.lower(), 0) + 1
        for status, count in sorted(counts.items()):
            orders.add_metric([status], count)
        yield orders
        open_exceptions = GaugeMetricFamily("allocd_open_exceptions",
                                            "Exceptions waiting for a person", labels=["type"])
        by_type: dict[str, int] = {}
        for exception in ledger.exceptions.by_id.values():
            if not exception.resolved:
                name = exception.exception_type.name.lower()
                by_type[name] = by_type.get(name, 0) + 1
        for name, count in sorted(by_type.items()):
            open_exceptions.add_metric([name], count)
        yield open_exceptions


class Metrics:
    def __init__(self, engine: Any) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter("allocd_rpc_requests", "RPCs handled, by method and status",
                             ["method", "code"], registry=self.registry)
        self.latency = Histogram("allocd_rpc_latency_seconds", "RPC latency by method",
                                 ["method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(EngineCollector(engine))
        self._server: Any = None

    def serve(self, host: str, port: int, certfile: str = "", keyfile: str = "",
              client_cafile: str = "") -> int:
        """Start the HTTP endpoint (a thread); returns the port it listens on. With a
        certificate it serves HTTPS; with a client CA as well, scrapers must present a
        certificate that CA signed."""
        self._server, _ = start_http_server(
            port, addr=host, registry=self.registry, certfile=certfile or None,
            keyfile=keyfile or None, client_cafile=client_cafile or None,
            client_auth_required=bool(certfile and client_cafile))
        return int(self._server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc,type-arg]
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or not details.method.startswith("/allocd."):
            return handler
        method = method_key(details.method)
        metrics = self.metrics

        async def observe(context: Any) -> None:
            started = time.perf_counter()

            def done(_: Any) -> None:
                code = context.code()
                name = code.name if isinstance(code, grpc.StatusCode) else "OK"
                metrics.calls.labels(method, name).inc()
                metrics.latency.labels(method).observe(time.perf_counter() - started)

            context.add_done_callback(done)

        return wrap_handler(handler, observe)
