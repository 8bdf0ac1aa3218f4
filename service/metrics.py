"""Prometheus metrics on a separate HTTP port: RPC counts and latencies per method and
status, ledger, store, KPI and alert gauges read from the engine at scrape time. The
same port serves the operations dashboard (service/dashboard.py)."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final, TypeVar
from wsgiref.simple_server import make_server

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import (
    ThreadingWSGIServer,
    _get_best_family,
    _get_ssl_ctx,
    _SilentHandler,
)
from prometheus_client.registry import Collector

from core.model import Bucket
from service.auth import method_key
from service.dashboard import dashboard_app, overview
from service.edge import wrap_handler

T = TypeVar("T")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


#: A client of the HTTPS endpoint has this long to finish its TLS handshake.
HANDSHAKE_TIMEOUT_S: Final = 10.0

class EngineCollector(Collector):  # type: ignore[misc]
    """Gauges computed from the engine when Prometheus scrapes (on the engine's event
    loop, so they see the state between two mutations)."""

    def __init__(self, engine: Any, on_loop: Callable[[Callable[[], Any]], Any]) -> None:
        self.engine = engine
        self.on_loop = on_loop

    def collect(self) -> Iterator[Metric]:
        families: list[Metric] = self.on_loop(lambda: list(self._families()))
        yield from families

    def _families(self) -> Iterator[Metric]:
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
        joined = [
            CounterMetricFamily("allocd_joined_calls",
                                "Single-order allocation calls decided in joined commands, "
                                "by kind (unary AllocateOrder, stream AllocateStream)",
                                labels=["kind"]),
            CounterMetricFamily("allocd_joined_commands",
                                "Joined commands run (calls per command: the ratio), by kind",
                                labels=["kind"]),
            CounterMetricFamily("allocd_joined_waits",
                                "Joined commands whose calls waited for company, by kind",
                                labels=["kind"]),
        ]
        for kind, by_kind in sorted(engine.joined_by.items()):
            for family, value in zip(joined, by_kind, strict=True):
                family.add_metric([kind], value)
        yield from joined
        yield CounterMetricFamily("allocd_backorders_filled",
                                  "Orders allocated because units a call made available "
                                  "served their backorders", value=engine.backorders_filled)
        yield GaugeMetricFamily("allocd_events_since_snapshot",
                                "Durable events not yet in a snapshot",
                                value=engine.durable_seq - engine.snapshot_seq)
        yield GaugeMetricFamily("allocd_last_snapshot_seconds",
                                "How long the last snapshot took, fork to published or "
                                "failed (the next waits checkpoint_rest_factor times as long)",
                                value=engine.snapshot_took_s)
        # (Kept by the books as they change: counting them here walked every order and
        # every exception at each scrape, with the server held up meanwhile.)
        orders = GaugeMetricFamily("allocd_orders", "Orders by status", labels=["status"])
        counts = {status.name.lower(): count
                  for status, count in ledger.orders.status_counts.items() if count}
        for status, count in sorted(counts.items()):
            orders.add_metric([status], count)
        yield orders
        yield GaugeMetricFamily("allocd_orders_archived",
                                "Closed orders archived: their records left memory, their "
                                "ids stay taken (order_retention_days)",
                                value=len(ledger.orders.archived))
        books = ledger.books
        yield GaugeMetricFamily("allocd_journal_entries",
                                "Journal entries kept in memory (those not closed into the "
                                "store)", value=len(books.entries))
        yield GaugeMetricFamily("allocd_journal_entries_closed",
                                "Journal entries closed into the store "
                                "(journal_retention_days), read back from it",
                                value=books.closed_through)
        open_exceptions = GaugeMetricFamily("allocd_open_exceptions",
                                            "Exceptions waiting for a person", labels=["type"])
        by_type: dict[str, int] = {}
        for exception in ledger.exceptions.open_records():
            name = exception.exception_type.name.lower()
            by_type[name] = by_type.get(name, 0) + 1
        for name, count in sorted(by_type.items()):
            open_exceptions.add_metric([name], count)
        yield open_exceptions
        yield from self._operations(ledger, engine.clock())

    @staticmethod
    def _operations(ledger: Any, now_ms: int) -> Iterator[GaugeMetricFamily]:
        kpi = GaugeMetricFamily(
            "allocd_kpi", "KPIs over sliding windows by scope (SKU scope: SKUs with an open "
            "alert)", labels=["name", "window", "scope", "subject"])
        values = ledger.kpis.report(now_ms)
        # (The open alerts, tasks and actions, as the books keep them: walking every one
        # ever made held each scrape for as long as the history was long.)
        flagged = tuple(sorted({subject for _, subject in ledger.ops.open_alert
                                if subject in ledger.catalog.sku_index}))
        if flagged:
            values += ledger.kpis.report(now_ms, scopes=("sku",), subjects=flagged)
        for value in values:
            kpi.add_metric([value.name, value.window, value.scope, value.subject], value.value)
        yield kpi
        ops = ledger.ops
        alerts = GaugeMetricFamily("allocd_alerts_open", "Alerts not yet acknowledged, by rule",
                                   labels=["rule"])
        by_rule: dict[str, int] = dict.fromkeys((r.rule_id for r in ops.rules.rules), 0)
        for rule_id, _ in ops.open_alert:
            by_rule[rule_id] = by_rule.get(rule_id, 0) + 1
        for rule_id, count in sorted(by_rule.items()):
            alerts.add_metric([rule_id], count)
        yield alerts
        tasks = GaugeMetricFamily("allocd_tasks_open", "Open tasks by type", labels=["type"])
        by_task: dict[str, int] = {}
        for task in ops.open_task_records():
            name = task.info.task_type.name.lower()
            by_task[name] = by_task.get(name, 0) + 1
        for name, count in sorted(by_task.items()):
            tasks.add_metric([name], count)
        yield tasks
        actions = GaugeMetricFamily("allocd_actions_active", "Actions in force by type",
                                    labels=["type"])
        by_action: dict[str, int] = {}
        for action in ops.active_action_records():
            name = action.info.spec.action_type.name.lower()
            by_action[name] = by_action.get(name, 0) + 1
        for name, count in sorted(by_action.items()):
            actions.add_metric([name], count)
        yield actions
        yield GaugeMetricFamily("allocd_rules_version", "Version of the rule set in force",
                                value=ops.rules.version)


class Metrics:
    def __init__(self, engine: Any) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter("allocd_rpc_requests", "RPCs handled, by method and status",
                             ["method", "code"], registry=self.registry)
        self.latency = Histogram("allocd_rpc_latency_seconds", "RPC latency by method",
                                 ["method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.engine = engine
        self.loop: asyncio.AbstractEventLoop | None = None  # the engine's, once serving
        self.registry.register(EngineCollector(engine, self.on_loop))
        self._server: Any = None

    def on_loop(self, read: Callable[[], T]) -> T:
        """Run `read` on the engine's event loop (the single writer), from the HTTP
        thread, so it never sees a mutation half done."""
        loop = self.loop
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if loop is None or not loop.is_running() or current is loop:
            return read()

        async def run() -> T:
            return read()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=30)

    def serve(self, host: str, port: int, certfile: str = "", keyfile: str = "",
              client_cafile: str = "") -> int:
        """Start the HTTP endpoint (a thread): /metrics and the dashboard. Returns the port
        it listens on. With a certificate it serves HTTPS; with a client CA as well,
        clients must present a certificate that CA signed."""
        engine = self.engine
        app = dashboard_app(make_wsgi_app(self.registry),
                            lambda: self.on_loop(lambda: overview(engine.ledger, engine.clock())))

        class Server(ThreadingWSGIServer):  # type: ignore[misc]
            def finish_request(self, request: Any, client_address: Any) -> None:
                """The TLS handshake, in the connection's own thread: done on accept, one
                client that connected and sent nothing held every scrape behind it."""
                if isinstance(request, ssl.SSLSocket):
                    request.settimeout(HANDSHAKE_TIMEOUT_S)
                    try:
                        request.do_handshake()
                    except (OSError, ValueError):
                        return  # (the server closes the connection)
                    request.settimeout(None)
                super().finish_request(request, client_address)

        Server.address_family, addr = _get_best_family(host, port)  # type: ignore[no-untyped-call]
        httpd = make_server(addr, port, app, Server, handler_class=_SilentHandler)
        if certfile and keyfile:
            context = _get_ssl_ctx(certfile, keyfile, ssl.PROTOCOL_TLS_SERVER,
                                   client_cafile or None, None,
                                   bool(certfile and client_cafile))
            httpd.socket = context.wrap_socket(httpd.socket, server_side=True,
                                               do_handshake_on_connect=False)
        threading.Thread(target=httpd.serve_forever, name="allocd-metrics",
                         daemon=True).start()
        self._server = httpd
        return int(httpd.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc,type-arg]
    """The outermost interceptor. A method's handler, wrapped by every interceptor, is
    the same for every call (each wrapper reads the call's own context when it runs), so
    it is built once per method and kept."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._handlers: dict[str, Any] = {}

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: Any) -> Any:
        handler = self._handlers.get(details.method)
        if handler is None:
            handler = await continuation(details)
            if handler is not None:
                if details.method.startswith("/allocd."):
                    handler = self._observed(handler, method_key(details.method))
                self._handlers[details.method] = handler
        return handler

    def _observed(self, handler: Any, method: str) -> Any:
        metrics = self.metrics
        latency = metrics.latency.labels(method)
        by_code: dict[str, Any] = {}

        async def observe(context: Any) -> None:
            started = time.perf_counter()

            def done(_: Any) -> None:
                code = context.code()
                name = code.name if isinstance(code, grpc.StatusCode) else "OK"
                counter = by_code.get(name)
                if counter is None:
                    counter = by_code[name] = metrics.calls.labels(method, name)
                counter.inc()
                latency.observe(time.perf_counter() - started)

            context.add_done_callback(done)

        return wrap_handler(handler, observe)
