"""The compiled core (scripts/compile_core.py): used when it matches the sources, never when
it does not, and indistinguishable from the interpreted core in what it decides and stores.

`make test` compiles first; run `make compile` before running these directly, or set
ALLOCD_INTERPRETED=1 to test the interpreted core on purpose.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import core
import service
import service.allocation_wire
from bench.grpc_ratio import POSTAL_CODES
from core import commands as c
from core.errors import DomainError
from core.exceptions import Resolution
from core.ledger import Ledger
from core.model import Event
from core.network import SlaTier
from core.operations import execute
from core.orders import OrderLineSpec, OrderSpec, PackageStatus, PaymentStatus
from service import logcodec
from service.demo import demo_commands
from service.demo_network import demo_network

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "core" / "_compiled.json"
INTERPRETED = os.environ.get("ALLOCD_INTERPRETED", "").lower() in ("1", "true", "yes")
N_SKUS = 400
START_MS = 1_795_000_000_000


def _built_modules() -> list[str]:
    if not MANIFEST.exists():
        pytest.fail("the core is not compiled: run `make compile` (make test does), or set "
                    "ALLOCD_INTERPRETED=1 to test it interpreted")
    return sorted(json.loads(MANIFEST.read_text())["modules"])


def test_the_build_is_used_when_it_matches_the_sources():
    modules = _built_modules()
    assert core.COMPILED is not INTERPRETED
    for name in modules:
        path = importlib.import_module(f"core.{name}").__file__
        assert path is not None
        assert path.endswith(".py" if INTERPRETED else ".so"), (name, path)


def test_the_service_build_is_its_own_and_used_the_same_way(tmp_path):
    """The service's compiled module (the allocation's wire encoder) is built apart from
    the core's and guarded the same way: a stale core leaves it compiled, and an edit
    to it runs it from source."""
    manifest = ROOT / "service" / "_compiled.json"
    assert manifest.exists(), "the service is not compiled: run `make compile`"
    assert sorted(json.loads(manifest.read_text())["modules"]) == ["allocation_wire", "order_wire"]
    assert service.COMPILED is not INTERPRETED
    path = service.allocation_wire.__file__
    assert path is not None and path.endswith(".py" if INTERPRETED else ".so")

    for package in ("core", "service"):
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__", "dashboards"))
    script = ("import json, core, service, service.allocation_wire as w; print(json.dumps("
              "[core.COMPILED, service.COMPILED, w.__file__]))")

    def state() -> list[object]:
        done = subprocess.run([sys.executable, "-c", script], check=False, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "ALLOCD_INTERPRETED": "",
                                   "PYTHONPATH": str(tmp_path)})
        assert done.returncode == 0, done.stderr
        result: list[object] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    assert state()[:2] == [True, True]
    with (tmp_path / "core" / "plan.py").open("a") as source:
        source.write("\n# edited after the build\n")
    stale_core = state()
    assert stale_core[:2] == [False, True] and str(stale_core[2]).endswith(".so")
    with (tmp_path / "service" / "allocation_wire.py").open("a") as source:
        source.write("\n# edited after the build\n")
    assert state() == [False, False, str(tmp_path / "service" / "allocation_wire.py")]


def _import_in(root: Path, env: dict[str, str]) -> dict[str, object]:
    """What `core` says of itself, imported from `root` in a fresh interpreter."""
    script = ("import json, core, core.plan, core.order_ops; print(json.dumps({"
              "'compiled': core.COMPILED, 'plan': core.plan.__file__, "
              "'order_ops': core.order_ops.__file__}))")
    done = subprocess.run([sys.executable, "-c", script], check=False, cwd=root,
                          capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, **env, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_an_edited_source_is_never_shadowed_by_an_older_build(tmp_path):
    _built_modules()
    shutil.copytree(ROOT / "core", tmp_path / "core",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {"ALLOCD_INTERPRETED": ""}
    fresh = _import_in(tmp_path, env)
    assert fresh["compiled"] is True
    assert str(fresh["plan"]).startswith(str(tmp_path)) and str(fresh["plan"]).endswith(".so")

    asked = _import_in(tmp_path, {"ALLOCD_INTERPRETED": "1"})
    assert asked["compiled"] is False and str(asked["order_ops"]).endswith("order_ops.py")

    # One source edited: every compiled module runs from its source, not only that one
    # (the compiled ones call each other directly, and would call the old code).
    with (tmp_path / "core" / "plan.py").open("a") as source:
        source.write("\n# edited after the build\n")
    edited = _import_in(tmp_path, env)
    assert edited == {"compiled": False,
                      "plan": str(tmp_path / "core" / "plan.py"),
                      "order_ops": str(tmp_path / "core" / "order_ops.py")}


def test_an_extension_the_build_did_not_make_is_not_used(tmp_path):
    modules = _built_modules()
    shutil.copytree(ROOT / "core", tmp_path / "core",
                    ignore=shutil.ignore_patterns("__pycache__"))
    # As if a module had been compiled once and taken out of the build since.
    built = next((tmp_path / "core").glob(f"{modules[0]}.*.so"))
    shutil.copy(built, built.with_name(built.name.replace(modules[0], "returns", 1)))
    stale = _import_in(tmp_path, {"ALLOCD_INTERPRETED": ""})
    assert stale["compiled"] is False and str(stale["plan"]).endswith("plan.py")


# ---- the same decisions and the same stores, compiled or not -------------------------

def _orders(rng: random.Random, prefix: str, count: int) -> tuple[OrderSpec, ...]:
    specs = []
    for k in range(count):
        skus = rng.sample(range(N_SKUS), rng.randint(1, 5))
        specs.append(OrderSpec(
            f"{prefix}-{k}", rng.choice(("web", "web", "marketplace")),
            SlaTier(rng.randint(0, 3)),
            tuple(OrderLineSpec(str(i + 1), f"SKU-{s:06d}", rng.randint(1, 3))
                  for i, s in enumerate(skus)),
            postal_code=rng.choice(POSTAL_CODES) + "01",
            deliver_by_ms=START_MS + rng.choice((0, 0, 1, 2, 5)) * 86_400_000,
            payment=PaymentStatus.ON_HOLD if rng.random() < 0.03 else PaymentStatus.AUTHORIZED,
            fraud_score=round(rng.random() ** 6, 3), allow_split=rng.random() < 0.8,
            allow_substitution=rng.random() < 0.3))
    return tuple(specs)


def scenario() -> tuple[list[Event], list[str], Ledger]:
    """Every event, every result (or refusal) and the ledger after a seeded mix of calls:
    allocation in commands of 1 to 100 orders, cancels, waves, short picks, packing,
    shipping and releasing held orders."""
    rng = random.Random(7)
    ledger = Ledger()
    events: list[Event] = []
    results: list[str] = []
    now = START_MS

    def run(command: c.Command) -> object:
        nonlocal now
        now += 1_000
        try:
            outcome = execute(ledger, command, now, f"r{len(results)}")
        except DomainError as error:
            results.append(f"{type(error).__name__}: {error}")
            return None
        events.extend(outcome.events)
        results.append(repr(outcome.detail))
        return outcome.detail

    for command in demo_commands(N_SKUS, 3, START_MS):
        run(command)
    run(c.SetNetwork(demo_network()))
    for round_ in range(6):
        for size in (1, 7, 100):
            run(c.AllocateOrders(_orders(rng, f"o{round_}-{size}", size)))
        book = ledger.orders
        for order_id in sorted(book.orders)[round_::9]:
            run(c.CancelOrder(order_id))
        for exception in sorted(ledger.exceptions.by_id.values(),
                                key=lambda e: e.exception_id)[:5]:
            if not exception.resolved:
                run(c.ResolveException(exception.exception_id, rng.choice(
                    (Resolution.RELEASE, Resolution.CANCEL, Resolution.RETRY)),
                    role="operations"))
        for node in ledger.catalog.nodes[:4]:
            run(c.ReleaseWave(node.node_id, 15))
        for package_id in sorted(book.packages):
            state = book.packages[package_id]
            if state.status == PackageStatus.RELEASED:
                short = tuple((line_id, qty - 1) for line_id, qty in
                              sorted(state.quantities.items())[:1] if rng.random() < 0.2)
                run(c.ConfirmPick(package_id, short))
            if state.status == PackageStatus.PICKED:
                scanned = tuple((ledger.catalog.sku_ids[line.sku], state.quantities[line.line_id])
                                for line in state.plan.lines if line.line_id in state.quantities)
                run(c.ConfirmPack(package_id, scanned))
            if state.status == PackageStatus.PACKED:
                run(c.ConfirmShipment(package_id, f"TRACK-{package_id}"))
    return events, results, ledger


def _write_scenario(path: str) -> None:
    events, results, ledger = scenario()
    Path(path).write_bytes(logcodec.dumps((core.COMPILED, events, results, ledger)))


def _in_the_other_mode(*args: str) -> subprocess.CompletedProcess[str]:
    mode = "" if INTERPRETED else "1"
    return subprocess.run([sys.executable, __file__, *args], check=False, cwd=ROOT,
                          capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "ALLOCD_INTERPRETED": mode,
                               "PYTHONPATH": str(ROOT)})


def test_compiled_and_interpreted_cores_decide_alike_and_read_each_others_stores(tmp_path):
    _built_modules()
    theirs_file = tmp_path / "theirs.bin"
    done = _in_the_other_mode("write", str(theirs_file))
    assert done.returncode == 0, done.stderr
    their_mode, their_events, their_results, their_ledger = logcodec.loads(
        theirs_file.read_bytes())
    assert their_mode is INTERPRETED  # (the other mode did run)

    events, results, ledger = scenario()
    assert len(events) > 3_000 and any("ConfirmShipment" in r or "ShipResult" in r
                                       for r in results)
    assert results == their_results
    assert events == their_events
    # A snapshot the other mode wrote reads back here as the same state, and the other
    # way round.
    assert their_ledger.checksum() == ledger.checksum()
    assert their_ledger.orders.orders == ledger.orders.orders
    assert their_ledger.orders.packages == ledger.orders.packages
    ours_file = tmp_path / "ours.bin"
    ours_file.write_bytes(logcodec.dumps(ledger))
    done = _in_the_other_mode("checksum", str(ours_file))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ledger.checksum()


if __name__ == "__main__":
    if sys.argv[1] == "write":
        _write_scenario(sys.argv[2])
    else:
        print(logcodec.loads(Path(sys.argv[2]).read_bytes()).checksum())
