"""Instructions the order path executes, counted by valgrind's callgrind: a figure that,
unlike time, the machine's load does not move (the same code and inputs give the same
count to within a fraction of a percent). For telling a change of a few percent from
noise on a shared machine, where seconds move by 10 to 40% from run to run.

    python -m bench.instructions [--orders 100] [--commands 10] [--view full|basic]

Runs the path of `bench/test_bench_order_path.py` (protobuf in, decide, apply, protobuf
out, on the demo catalogue, with the server's collector settings) in a child process
under callgrind, counting only the measured commands (after a warm-up), and prints the
instructions an order. Run it on the code before and after a change: a lower count is
less work, whatever the clock says. Needs valgrind (`apt-get install valgrind`); a child
under valgrind runs some 50 times slower, so a run takes a minute or two.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

READY, DONE = "ready", "done"


def _child(orders: int, commands: int, warmup: int, full: bool) -> None:
    """Build the ledger and requests, then run the commands between two handshakes."""
    from allocd.v1 import order_service_pb2 as opb

    from bench.grpc_ratio import OrderFactory
    from bench.test_bench_order_path import N_SKUS, loaded_demo_ledger, order_path

    ledger = loaded_demo_ledger()
    factory = OrderFactory(N_SKUS, orders, "I")
    requests = [opb.AllocateOrdersRequest(request_id=f"i{k}",
                                          orders=[factory.order() for _ in range(orders)])
                for k in range(warmup + commands)]
    for request in requests[:warmup]:  # (compiles what the path compiles, fills caches)
        order_path(ledger, request, full)
    print(READY, flush=True)
    sys.stdin.readline()
    for request in requests[warmup:]:
        order_path(ledger, request, full)
    print(DONE, flush=True)
    sys.stdin.readline()


def _control(pid: int, switch: str) -> None:
    subprocess.run(["callgrind_control", "-i", switch, str(pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def count(orders: int, commands: int, warmup: int, view: str) -> int:
    """Instructions the measured commands executed (all orders together)."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is needed: apt-get install valgrind")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = dict(os.environ, PYTHONHASHSEED="1")  # the same dict layouts every run
        child = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={out}", sys.executable, "-m", "bench.instructions",
             "--child", "--orders", str(orders), "--commands", str(commands),
             "--warmup", str(warmup), "--view", view],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, env=env)
        assert child.stdin is not None and child.stdout is not None
        try:
            for expected, switch in ((READY, "on"), (DONE, "off")):
                line = child.stdout.readline().strip()
                if line != expected:
                    raise RuntimeError(f"the measured process said {line!r}, not {expected!r}")
                _control(child.pid, switch)
                child.stdin.write("\n")
                child.stdin.flush()
            if child.wait(600) != 0:
                raise RuntimeError(f"the measured process failed ({child.returncode})")
        finally:
            if child.poll() is None:
                child.kill()
        return _total(out.read_text())


def _total(report: str) -> int:
    """The instruction total of a callgrind output file: its `totals:` line (the header's
    `summary:` is 0 when instrumentation starts off), else its `summary:`."""
    for key in ("totals", "summary"):
        found = re.findall(rf"^{key}:\s*(\d+)", report, re.MULTILINE)
        if found and int(found[-1]):
            return int(found[-1])
    raise RuntimeError("no instruction total in the callgrind output")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=100, help="orders a command")
    parser.add_argument("--commands", type=int, default=10, help="commands counted")
    parser.add_argument("--warmup", type=int, default=5, help="commands run first, uncounted")
    parser.add_argument("--view", choices=("full", "basic"), default="full")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.orders, args.commands, args.warmup, args.view == "full")
        return
    total = count(args.orders, args.commands, args.warmup, args.view)
    per_order = total / (args.orders * args.commands)
    print(f"{args.commands} commands of {args.orders} orders ({args.view} answers): "
          f"{total:,} instructions, {per_order:,.0f} an order")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "orders": args.orders, "commands": args.commands, "view": args.view,
            "instructions": total, "per_order": per_order}, indent=2))


if __name__ == "__main__":
    main()
