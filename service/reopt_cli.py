"""`allocd reopt`: run Reoptimize on a server, with a progress bar and the summary."""

from __future__ import annotations

import argparse
import os
import sys
import uuid

from service.healthcheck import add_tls_arguments, client_channel

BAR = 30


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], env_prefix: str) -> None:
    reopt = sub.add_parser("reopt", help="re-optimise the open orders on a running server")
    reopt.add_argument("--address", default="127.0.0.1:50051")
    reopt.add_argument("--time-limit", type=float, default=30.0, help="seconds")
    reopt.add_argument("--seed", type=int, default=0)
    reopt.add_argument("--max-orders", type=int, default=0)
    reopt.add_argument("--package-penalty", type=float, default=0.0,
                       help="dollars weighed per package beyond an order's first")
    reopt.add_argument("--dry-run", action="store_true", help="report, change nothing")
    reopt.add_argument("--request-id", default="", help="default: a new one")
    reopt.add_argument("--token", default=None, help=f"a bearer token (or {env_prefix}TOKEN)")
    add_tls_arguments(reopt)
    reopt.set_defaults(env_prefix=env_prefix)


def _bar(done: int, total: int) -> str:
    filled = BAR * done // max(total, 1)
    return "[" + "#" * filled + "." * (BAR - filled) + f"] {done}/{total}"


def run(args: argparse.Namespace) -> int:
    import grpc  # noqa: PLC0415 (the command line loads gRPC only when it is used)
    from allocd.v1 import order_service_pb2, order_service_pb2_grpc  # noqa: PLC0415

    token = args.token or os.environ.get(f"{args.env_prefix}TOKEN", "")
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    request = order_service_pb2.ReoptimizeRequest(
        request_id=args.request_id or f"reopt-{uuid.uuid4()}",
        time_limit_seconds=args.time_limit, seed=args.seed, dry_run=args.dry_run,
        max_orders=args.max_orders,
        extra_package_penalty_micros=round(args.package_penalty * 1_000_000))
    tty = sys.stderr.isatty()
    last = None
    try:
        channel = client_channel(args.address, args.ca_file, args.cert_file, args.key_file,
                                 args.allow_plaintext, carries_token=bool(token))
    except (ValueError, OSError) as error:
        print(f"allocd: {error}", file=sys.stderr)
        return 2
    with channel:
        stub = order_service_pb2_grpc.OrderServiceStub(channel)
        try:
            for response in stub.Reoptimize(request, metadata=metadata,
                                            timeout=args.time_limit * 4 + 60):
                last = response
                line = f"{response.phase:<10} {response.detail}"
                if response.total:
                    line += " " + _bar(response.done, response.total)
                if tty:
                    print("\r" + line.ljust(78), end="", file=sys.stderr, flush=True)
                elif not response.total or response.done == response.total:
                    print(line, file=sys.stderr)
        except grpc.RpcError as error:
            print(f"\nallocd: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    if tty:
        print(file=sys.stderr)
    if last is None or not last.HasField("summary"):
        print("allocd: the server sent no summary", file=sys.stderr)
        return 1
    s = last.summary
    print(f"open orders        {s.open_orders}")
    print(f"orders re-planned  {s.orders_changed}"
          + ("" if s.applied else " (dry run: nothing changed)"))
    if s.applied:
        print(f"left as they were  {s.orders_changed_meanwhile} changed meanwhile, "
              f"{s.orders_no_longer_fit} no longer fit")
    print(f"packages           {s.old_packages} -> {s.new_packages}")
    print(f"backordered units  {s.old_backordered_units} -> {s.new_backordered_units}")
    print(f"landed cost        {s.old_cost_micros / 1e6:,.2f} -> {s.new_cost_micros / 1e6:,.2f}")
    print(f"gap to lower bound {s.gap:.2%} ({s.elapsed_seconds:.1f} s)")
    if last.result.replayed:
        print("(the stored answer to an earlier call with this request id)")
    return 0
