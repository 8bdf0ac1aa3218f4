"""Load-test allocd over gRPC, and compare it with PostgreSQL and Redis doing the same work.

    python -m bench.load compare [--seconds 20] [--out bench-results/load]
        One command: starts allocd (a fresh server per mode, loaded with the seeded
        catalogue), runs the echo ceiling, unary, streaming, batch and the OMS call mix;
        the PostgreSQL peer (the local server) and the Redis peer (a redis-server of its
        own); an open-loop sweep of each; checks every ledger for oversells; prints the
        side-by-side table and writes load.json and load.png.

    python -m bench.load run --address HOST:PORT [--kind unary] [--loop open --rate 500]
        Drives a running allocd (an operator's own deployment); --load-catalogue first
        loads the seeded catalogue into an empty server.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path
from typing import Any

from allocd.v1 import order_service_pb2 as opb

from bench import stop_on_sigterm
from bench.load import report
from bench.load.allocd_target import AllocdFactory, AllocdServer, check_ledger, load_catalogue
from bench.load.driver import LoadShape, run
from bench.load.peers import PgFactory, PgPeer, RedisFactory, RedisPeer, RedisServer, unique_name
from bench.load.workload import WorkloadSpec, build_catalogue, parse_mix

ALLOCD_KINDS = ("unary", "stream", "batch", "mixed", "echo_unary", "echo_stream", "echo_batch")


def _workload_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("workload")
    defaults = WorkloadSpec()
    group.add_argument("--seed", type=int, default=defaults.seed)
    group.add_argument("--skus", type=int, default=defaults.skus)
    group.add_argument("--nodes", type=int, default=defaults.nodes)
    group.add_argument("--regions", type=int, default=defaults.regions)
    group.add_argument("--zipf", type=float, default=defaults.zipf,
                       help="SKU popularity exponent (default %(default)s)")
    group.add_argument("--lines", default="3", help="lines per order: N or MIN-MAX (default 3)")
    group.add_argument("--max-quantity", type=int, default=defaults.max_quantity)
    group.add_argument("--stock-presence", type=float, default=defaults.stock_presence)
    group.add_argument("--stock-max", type=int, default=defaults.stock_max)
    group.add_argument("--popular-stock-units", type=int, default=2_000_000,
                       help="extra units shared by popularity (default %(default)s)")
    group.add_argument("--node-capacity", type=int, default=0,
                       help="packages per node per day (default 0: unlimited, as the peers)")
    group.add_argument("--sla-mix", default="premium=10,marketplace=20,standard=60,wholesale=10")
    group.add_argument("--channel-mix", default="web=60,marketplace=30,retail=10")
    group.add_argument("--call-mix", default="allocate=55,availability=25,reserve_release=8,"
                                             "cancel=4,ship=6,return=2",
                       help="the OMS call mix of the mixed mode")


def _spec(args: argparse.Namespace, call_mix: bool = False) -> WorkloadSpec:
    low, _, high = args.lines.partition("-")
    return WorkloadSpec(
        seed=args.seed, skus=args.skus, nodes=args.nodes, regions=args.regions, zipf=args.zipf,
        min_lines=int(low), max_lines=int(high or low), max_quantity=args.max_quantity,
        stock_presence=args.stock_presence, stock_max=args.stock_max,
        popular_stock_units=args.popular_stock_units, node_capacity=args.node_capacity,
        sla_mix=parse_mix(args.sla_mix),
        channel_mix=parse_mix(args.channel_mix),
        call_mix=parse_mix(args.call_mix) if call_mix else {"allocate": 1.0})


#: --view: AllocationView by name.
VIEWS = {"full": opb.ALLOCATION_VIEW_FULL, "basic": opb.ALLOCATION_VIEW_BASIC}


def _load_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("load")
    group.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run")
    group.add_argument("--count", type=int, default=0, help="calls per run instead of seconds")
    group.add_argument("--warmup", type=float, default=3.0)
    group.add_argument("--processes", type=int, default=2,
                       help="client processes, so that the client is not the bottleneck")
    group.add_argument("--concurrency", type=int, default=32,
                       help="closed loop: calls in flight, all processes together")
    group.add_argument("--batch", type=int, default=100, help="orders per batch call")
    group.add_argument("--batch-concurrency", type=int, default=4,
                       help="batch and pipelined calls in flight, all processes together")
    group.add_argument("--view", choices=tuple(VIEWS), default="full",
                       help="how much of each allocation allocd's answers carry: full (every "
                            "package) or basic (the outcome only)")
    group.add_argument("--streams", type=int, default=0,
                       help="streams per client process (default: one per caller, since a "
                            "stream carries one order at a time)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    compare = sub.add_parser("compare", help="allocd against the echo ceiling, PostgreSQL "
                                             "and Redis, on the same orders")
    _workload_flags(compare)
    _load_flags(compare)
    compare.add_argument("--allocd-durability", default="sync",
                         choices=("sync", "group", "async-may-lose-1s", "memory"),
                         help="allocd's file store policy, or memory (default sync: answered "
                              "only after fsync, like the peers)")
    compare.add_argument("--pg-dsn", default="host=127.0.0.1 user=postgres dbname=test")
    compare.add_argument("--pg-connections", type=int, default=0,
                         help="PostgreSQL connections, all processes together (default: "
                              "--concurrency, the callers the others get)")
    compare.add_argument("--redis-fsync", default="always", choices=("always", "everysec", "off"),
                         help="the Redis peer's appendfsync (default always, like the others)")
    compare.add_argument("--redis-pipeline", type=int, default=100)
    compare.add_argument("--sweep", default="0.25,0.5,0.75,1.0",
                         help="open-loop rates as fractions of each target's closed-loop "
                              "orders/s ('' for none)")
    compare.add_argument("--sweep-seconds", type=float, default=5.0)
    compare.add_argument("--only", default="echo,allocd,mixed,postgres,redis",
                         help="which targets to run")
    compare.add_argument("--allocd-modes", default="unary,stream,batch",
                         help="allocd's allocation modes to run")
    compare.add_argument("--out", default="bench-results/load",
                         help="folder for load.json and load.png")
    one = sub.add_parser("run", help="drive a running allocd")
    one.add_argument("--address", required=True)
    one.add_argument("--kind", default="unary", choices=ALLOCD_KINDS)
    one.add_argument("--loop", default="closed", choices=("closed", "open"))
    one.add_argument("--rate", type=float, default=0.0, help="open loop: calls per second")
    one.add_argument("--load-catalogue", action="store_true",
                     help="load the seeded catalogue first (into an empty server)")
    one.add_argument("--prefix", default="", help="order id prefix (unique per run)")
    one.add_argument("--server-pid", type=int, default=0,
                     help="read the server's CPU and memory from /proc of this pid")
    one.add_argument("--json", default="", help="write the result here")
    _workload_flags(one)
    _load_flags(one)
    return parser


def _shape(args: argparse.Namespace, loop: str = "closed", rate: float = 0.0,
           seconds: float | None = None, warmup: float | None = None,
           batched: bool = False) -> LoadShape:
    return LoadShape(loop=loop, rate=rate,
                     concurrency=max(args.processes, args.batch_concurrency) if batched
                     else args.concurrency,
                     seconds=args.seconds if seconds is None else seconds,
                     count=args.count if seconds is None else 0,
                     warmup=args.warmup if warmup is None else warmup,
                     processes=args.processes)


def _print_result(label: str, result: dict[str, Any]) -> None:
    lat = result["latency_ms"]
    print(f"  {label}: {result['orders_per_s']:,.0f} orders/s, p50 {lat['p50']:.2f} ms, "
          f"p99 {lat['p99']:.2f} ms, p99.9 {lat['p99.9']:.2f} ms, max {lat['max']:.2f} ms, "
          f"errors {result['errors'] or 0}, server {result.get('server') or '-'}", flush=True)
    for name, op in result.get("latency_by_operation_ms", {}).items():
        print(f"    {name}: {op['count']:,} calls, p50 {op['p50']:.2f} ms, p99 {op['p99']:.2f} ms, "
              f"max {op['max']:.2f} ms", flush=True)


class Comparison:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.spec = _spec(args)
        self.catalogue = build_catalogue(self.spec)
        self.rows: list[dict[str, Any]] = []
        self.sweeps: dict[str, list[dict[str, Any]]] = {}
        self.fractions = [float(f) for f in args.sweep.split(",") if f.strip()]
        self.only = set(args.only.split(","))
        self.streams = args.streams or max(1, args.concurrency // args.processes)
        self.prebuilt = int(min(200_000, 5_000 * (args.seconds + args.warmup))
                            / args.processes)

    def _row(self, target: str, mode: str, result: dict[str, Any],
             check: dict[str, Any] | None = None) -> None:
        self.rows.append({"target": target, "mode": mode, "result": result, "check": check})
        _print_result(f"{target} {mode}", result)
        if check is not None:
            print(f"    check: {check}", flush=True)

    def _sweep(self, name: str, make: Any, best: float, pids: Any) -> list[dict[str, Any]]:
        points = []
        for k, fraction in enumerate(self.fractions):
            rate = max(1.0, best * fraction)
            result = run(make(k), _shape(self.args, "open", rate, self.args.sweep_seconds, 1.0),
                         f"{name} open {rate:,.0f}/s", pids)
            result["offered_per_s"] = rate
            result["fraction"] = fraction
            points.append(result)
            _print_result(f"{name} open loop at {rate:,.0f}/s", result)
        self.sweeps[name] = points
        return points

    def allocd(self) -> None:
        args = self.args
        kinds = []
        if "echo" in self.only:
            kinds.append("echo")
        if "allocd" in self.only:
            kinds += [m for m in ("unary", "stream", "batch")
                      if m in self.args.allocd_modes.split(",")]
        if "mixed" in self.only:
            kinds.append("mixed")
        for kind in kinds:
            with AllocdServer(args.allocd_durability) as server:
                load_catalogue(server.address, self.catalogue)

                def pids(pid: int = server.pid) -> list[int]:
                    return [pid]

                if kind == "echo":
                    for echo in ("echo_unary", "echo_stream", "echo_batch"):
                        result = run(AllocdFactory(server.address, self.spec, echo, args.batch,
                                                   self.streams),
                                     _shape(args, batched=echo == "echo_batch"),
                                     f"echo {echo[5:]}", pids)
                        self._row("echo (gRPC ceiling)", echo[5:], result)
                    continue
                spec = _spec(args, call_mix=True) if kind == "mixed" else self.spec
                factory = AllocdFactory(server.address, spec, kind, args.batch, self.streams,
                                        self.prebuilt if kind != "mixed" else 0, "m",
                                        VIEWS[args.view])
                result = run(factory, _shape(args, batched=kind == "batch"), f"allocd {kind}",
                             pids)
                units = result["outcome"].get("units", 0)
                if kind in ("unary", "stream") and self.fractions:
                    for point in self._sweep(
                            f"allocd {kind}",
                            lambda k, f=factory: dataclasses.replace(
                                f, prefix=f"s{k}", prebuilt=0),
                            result["orders_per_s"], pids):
                        units += point["outcome"].get("units", 0)
                check = check_ledger(server.address, self.catalogue, units,
                                     shipped_possible=kind == "mixed")
                label = {"unary": "unary AllocateOrder", "stream": "AllocateStream",
                         "batch": f"AllocateOrders ({args.batch}/call)",
                         "mixed": "OMS call mix, unary"}[kind]
                if args.view != "full" and kind != "mixed":  # (the mix answers in full)
                    label += f", {args.view} view"
                self._row("allocd", label, result, check)

    def postgres(self) -> None:
        args = self.args
        peer = PgPeer(args.pg_dsn, unique_name("allocd_load"))
        peer.setup(self.catalogue)
        try:
            per_process = max(1, (args.pg_connections or args.concurrency) // args.processes)
            factory = PgFactory(peer, self.spec, per_process)
            shape = dataclasses.replace(_shape(args), concurrency=per_process * args.processes)
            result = run(factory, shape, "PostgreSQL", peer.backend_pids)
            units = result["outcome"].get("units", 0)
            if self.fractions:
                for point in self._sweep(
                        "PostgreSQL", lambda k: dataclasses.replace(factory, prefix=f"s{k}"),
                        result["orders_per_s"], peer.backend_pids):
                    units += point["outcome"].get("units", 0)
            self._row("PostgreSQL peer", f"SELECT FOR UPDATE, {shape.concurrency} connections",
                      result, peer.check(units))
        finally:
            peer.drop()

    def redis(self) -> None:
        args = self.args
        with RedisServer(args.redis_fsync) as server:
            def pids() -> list[int]:
                return [server.pid]

            for pipeline in (1, args.redis_pipeline):
                peer = RedisPeer(server.url, unique_name("load"))
                peer.setup(self.catalogue)
                factory = RedisFactory(peer, self.spec, pipeline,
                                       max(1, args.concurrency // args.processes))
                result = run(factory, _shape(args, batched=pipeline > 1),
                             f"Redis pipeline {pipeline}", pids)
                units = result["outcome"].get("units", 0)
                if pipeline == 1 and self.fractions:
                    for point in self._sweep("Redis", lambda k, f=factory: dataclasses.replace(
                                                 f, prefix=f"s{k}"),
                                             result["orders_per_s"], pids):
                        units += point["outcome"].get("units", 0)
                mode = "Lua, one script a call" if pipeline == 1 else \
                    f"Lua, pipelined {pipeline} a round trip"
                self._row("Redis peer", mode, result, peer.check(self.catalogue, units))

    def run(self) -> int:
        started = time.time()
        if self.only & {"echo", "allocd", "mixed"}:
            self.allocd()
        if "postgres" in self.only:
            self.postgres()
        if "redis" in self.only:
            self.redis()
        out = Path(self.args.out)
        out.mkdir(parents=True, exist_ok=True)
        machine = (f"{platform.node()}: {platform.machine()}, {_cores()} cores, "
                   f"Python {platform.python_version()}")
        title = (f"allocd vs PostgreSQL vs Redis: {self.spec.min_lines}-line orders, "
                 f"{self.spec.skus:,} SKUs, {self.spec.nodes} nodes, Zipf {self.spec.zipf}; "
                 f"{machine}")
        text = report.table(self.rows)
        print()
        print(text)
        print()
        print(_verdict(self.rows))
        report.write_json(out / "load.json", {
            "command": " ".join(sys.argv), "machine": machine,
            "workload": dataclasses.asdict(self.spec), "seconds_total": time.time() - started,
            "rows": self.rows, "sweeps": self.sweeps, "table": text})
        report.chart(out / "load.png", self.rows, self.sweeps, title)
        print(f"\nwrote {out / 'load.json'} and {out / 'load.png'}")
        bad = [row for row in self.rows if row.get("check") and row["check"]["oversells"]]
        return 1 if bad else 0


def _cores() -> int:
    import os

    return os.cpu_count() or 0


def _verdict(rows: list[dict[str, Any]]) -> str:
    """The must-show comparisons, in numbers."""
    def best(predicate: Any) -> dict[str, Any] | None:
        found = [row for row in rows if predicate(row)]
        return max(found, key=lambda r: r["result"]["orders_per_s"]) if found else None

    allocd = best(lambda r: r["target"] == "allocd" and not r["mode"].startswith(("unary",
                                                                                   "OMS")))
    unary = best(lambda r: r["target"] == "allocd" and r["mode"].startswith("unary"))
    pg = best(lambda r: r["target"] == "PostgreSQL peer")
    redis = best(lambda r: r["target"] == "Redis peer" and "pipelined" in r["mode"])
    lines = []
    if allocd and pg:
        ratio = allocd["result"]["orders_per_s"] / pg["result"]["orders_per_s"]
        lines.append(f"allocd best ({allocd['mode']}) / PostgreSQL peer: {ratio:.1f}x "
                     f"(target >= 20x)")
    if allocd and redis:
        ratio = allocd["result"]["orders_per_s"] / redis["result"]["orders_per_s"]
        lines.append(f"allocd best / Redis peer pipelined: {ratio:.2f}x (target >= 1x)")
    if unary and pg:
        lines.append(f"p99 unary allocd {unary['result']['latency_ms']['p99']:.1f} ms vs "
                     f"PostgreSQL peer {pg['result']['latency_ms']['p99']:.1f} ms "
                     "(target: below)")
    oversells = sum(row["check"]["oversells"] for row in rows if row.get("check"))
    lines.append(f"oversells, all targets: {oversells} (target 0)")
    return "\n".join(lines)


def run_one(args: argparse.Namespace) -> int:
    spec = _spec(args, call_mix=args.kind == "mixed")
    if args.load_catalogue:
        load_catalogue(args.address, build_catalogue(spec))
    pids = (lambda: [args.server_pid]) if args.server_pid else None
    streams = args.streams or max(1, args.concurrency // args.processes)
    factory = AllocdFactory(args.address, spec, args.kind, args.batch, streams, 0, args.prefix,
                            VIEWS[args.view])
    result = run(factory, _shape(args, args.loop, args.rate, batched=args.kind.endswith("batch")),
                 f"{args.kind} {args.loop}", pids)
    _print_result(f"{args.kind} {args.loop}", result)
    if args.json:
        report.write_json(Path(args.json), {"command": " ".join(sys.argv),
                                            "workload": dataclasses.asdict(spec),
                                            "result": result})
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop_on_sigterm()
    if args.command == "compare":
        return Comparison(args).run()
    return run_one(args)


if __name__ == "__main__":
    raise SystemExit(main())
