"""Single-order allocations answered together: calls that arrive while the server is busy
are decided as one command and written in one commit, yet each keeps its own answer,
its own events, its own refusal and its own idempotency record."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest
from allocd.v1 import order_service_pb2 as opb

from core.errors import NotFound
from core.model import EventKind
from core.network import SlaTier
from core.operations import Outcome
from core.order_ops import AllocateResult
from core.orders import OrderLineSpec, OrderSpec
from service import engine as engine_module
from service.config import Settings
from service.engine import Engine
from service.filestore import FileEventStore
from service.servicers.inventory import mutation_result
from service.servicers.orders import OrderServicer
from service.store import MemoryEventStore
from tests.unit.shop import shop

WINDOW_MS = 50.0  # long enough for every call of a test to arrive inside it


def _spec(order_id: str, sku: str = "shirt", qty: int = 1) -> OrderSpec:
    return OrderSpec(order_id, "web", SlaTier.STANDARD, (OrderLineSpec("1", sku, qty),),
                     postal_code="10001")


def _request(request_id: str, order_id: str, sku: str = "shirt",
             qty: int = 1) -> opb.AllocateOrderRequest:
    return opb.AllocateOrderRequest(request_id=request_id, order=opb.Order(
        order_id=order_id, channel_id="web", ship_to=opb.ShipTo(postal_code="10001"),
        lines=[opb.OrderLine(line_id="1", sku_id=sku, quantity=qty)]))


def _respond(o: Outcome) -> opb.AllocateOrderResponse:
    response = opb.AllocateOrderResponse(result=mutation_result(o))
    if isinstance(o.detail, AllocateResult):
        (outcome,) = o.detail.outcomes
        response.allocation.order_id = outcome.order_id
    return response


async def _engine(store=None, window_ms: float = WINDOW_MS,
                  stream_window_ms: float = WINDOW_MS,
                  quiet_ms: float = Settings().join_quiet_ms) -> tuple[Engine, OrderServicer]:
    engine = Engine(Settings(store="memory", join_window_ms=window_ms,
                             stream_join_window_ms=stream_window_ms, join_quiet_ms=quiet_ms),
                    store or MemoryEventStore())
    await engine.start()
    if engine.ledger.catalog.n_skus == 0:
        for i, command in enumerate(shop({("shirt", "n0"): 10, ("mug", "n0"): 10})):
            await engine.mutate_internal(command, f"setup-{i}")
    return engine, OrderServicer(engine)


def _call(engine: Engine, servicer: OrderServicer, request: opb.AllocateOrderRequest,
          spec: OrderSpec) -> asyncio.Future[opb.AllocateOrderResponse]:
    return asyncio.ensure_future(engine.mutate_joined(
        "AllocateOrder", request, lambda: spec, _respond, servicer.joiner))


async def _busy(engine: Engine, servicer: OrderServicer, calls: int = 3) -> None:
    """Calls answered together, so the next ones find the server busy and wait for as
    many to come (or the window to end)."""
    await asyncio.gather(*(_call(engine, servicer, _request(f"warm{i}", f"warm{i}"),
                                 _spec(f"warm{i}")) for i in range(calls)))


def test_calls_arriving_together_share_a_command_and_keep_their_own_answers():
    async def go():
        engine, servicer = await _engine()
        await _busy(engine, servicer)
        commands_before = engine.joined_commands
        calls = [_call(engine, servicer, _request(f"r{i}", f"o{i}"), _spec(f"o{i}"))
                 for i in range(6)]
        answers = await asyncio.gather(*calls)
        assert engine.joined_commands == commands_before + 1  # one command for all six
        assert engine.durable_seq == engine.ledger.last_seq
        events = {e.seq: e for e in engine._recent}
        seen: set[int] = set()
        for i, answer in enumerate(answers):
            assert answer.allocation.order_id == f"o{i}"
            result = answer.result
            own = [events[s] for s in range(result.first_sequence, result.last_sequence + 1)]
            assert len(own) == result.event_count  # contiguous, and nobody else's
            assert {e.request_id for e in own} == {f"r{i}"}
            assert own[0].kind == EventKind.ORDER_RECEIVED and own[0].reference == f"o{i}"
            assert any(e.kind == EventKind.ORDER_UNITS_ALLOCATED for e in own)
            assert not seen & {e.seq for e in own}
            seen |= {e.seq for e in own}
        assert sorted(engine.ledger.orders.orders) == sorted(
            [*(f"warm{i}" for i in range(3)), *(f"o{i}" for i in range(6))])

    asyncio.run(go())


def test_a_refused_call_is_refused_alone_and_records_nothing():
    async def go():
        engine, servicer = await _engine()
        await _busy(engine, servicer)
        good = [_call(engine, servicer, _request(f"r{i}", f"o{i}"), _spec(f"o{i}"))
                for i in range(3)]
        bad = _call(engine, servicer, _request("bad", "o-bad", "nope"), _spec("o-bad", "nope"))
        more = _call(engine, servicer, _request("r3", "o3"), _spec("o3"))
        with pytest.raises(NotFound) as refused:
            await bad
        assert refused.value.field == "order.lines[0].sku_id"  # named as its own call
        answers = await asyncio.gather(*good, more)
        assert [a.allocation.order_id for a in answers] == ["o0", "o1", "o2", "o3"]
        assert "o-bad" not in engine.ledger.orders.orders
        assert ("AllocateOrder", "bad") not in engine._answers  # a retry runs afresh
        assert not any(e.request_id == "bad" for e in engine._recent)

    asyncio.run(go())


def test_a_retry_while_joined_and_after_a_restart_gets_the_first_answer(tmp_path: Path):
    async def go():
        store = FileEventStore(tmp_path)
        engine, servicer = await _engine(store)
        await _busy(engine, servicer)
        first = _call(engine, servicer, _request("r1", "o1"), _spec("o1"))
        again = _call(engine, servicer, _request("r1", "o1"), _spec("o1"))  # same id, queued
        other = _call(engine, servicer, _request("r2", "o2"), _spec("o2"))
        a, b, c = await asyncio.gather(first, again, other)
        assert not a.result.replayed and b.result.replayed
        assert b.allocation.order_id == "o1" and b.result.last_sequence == a.result.last_sequence
        allocated = engine.ledger.checksum()
        await store.close()

        store = FileEventStore(tmp_path)
        engine, servicer = await _engine(store)  # recovered from the log: one commit, two answers
        assert engine.ledger.checksum() == allocated
        for request_id, order_id, answer in (("r1", "o1", a), ("r2", "o2", c)):
            retry = await _call(engine, servicer, _request(request_id, order_id),
                                _spec(order_id))
            assert retry.result.replayed
            assert retry.result.first_sequence == answer.result.first_sequence
            assert retry.result.last_sequence == answer.result.last_sequence
        assert engine.ledger.checksum() == allocated
        await store.close()

    asyncio.run(go())


def test_a_joined_command_that_fails_as_a_whole_runs_each_call_alone(monkeypatch):
    executed: list[int] = []
    real_execute = engine_module.execute

    def execute(ledger, command, now_ms, request_id=""):
        orders = getattr(command, "orders", ())
        executed.append(len(orders))
        if len(orders) > 1 or any(o.order_id == "o-boom" for o in orders):
            raise RuntimeError("boom")  # a fault no single good order causes
        return real_execute(ledger, command, now_ms, request_id)

    async def go():
        engine, servicer = await _engine()
        await _busy(engine, servicer)
        monkeypatch.setattr(engine_module, "execute", execute)
        calls = [_call(engine, servicer, _request(f"r{i}", f"o{i}"), _spec(f"o{i}"))
                 for i in range(3)]
        boom = _call(engine, servicer, _request("rb", "o-boom"), _spec("o-boom"))
        answers = await asyncio.gather(*calls)
        with pytest.raises(RuntimeError):
            await boom
        assert executed == [4, 1, 1, 1, 1]  # together, then each alone
        assert [a.allocation.order_id for a in answers] == ["o0", "o1", "o2"]
        assert "o-boom" not in engine.ledger.orders.orders
        assert engine.durable_seq == engine.ledger.last_seq and not engine.broken

    asyncio.run(go())


def test_scarce_stock_is_never_oversold_by_joined_calls():
    async def go():
        engine, servicer = await _engine()
        await _busy(engine, servicer)
        calls = [_call(engine, servicer, _request(f"r{i}", f"o{i}", "mug", 3),
                       _spec(f"o{i}", "mug", 3)) for i in range(6)]
        await asyncio.gather(*calls)
        allocated = sum(q for (sku, _), q in _allocated(engine).items() if sku == "mug")
        assert allocated == 10  # all 10 in stock and not one more; the rest backordered
        backordered = sum(b.quantity for o in engine.ledger.orders.orders.values()
                          for b in o.backorders.values())
        assert backordered == 6 * 3 - 10

    asyncio.run(go())


def _allocated(engine: Engine) -> dict[tuple[str, str], int]:
    book = engine.ledger.orders
    out: dict[tuple[str, str], int] = {}
    cat = engine.ledger.catalog
    for state in book.packages.values():
        for line in state.plan.lines:
            key = (cat.sku_ids[line.sku], cat.nodes[state.plan.node].node_id)
            out[key] = out.get(key, 0) + line.quantity
    return out


def test_calls_a_moment_apart_join_within_the_window_and_not_without_one():
    async def spaced(window_ms: float) -> int:
        # A quiet time of its own, long against a stall of the machine between two turns
        # of the loop (which would otherwise run the first calls before the last came).
        engine, servicer = await _engine(window_ms=window_ms, quiet_ms=500.0)
        await _busy(engine, servicer)
        before = engine.joined_commands
        calls = []
        for i in range(3):
            calls.append(_call(engine, servicer, _request(f"r{i}", f"o{i}"), _spec(f"o{i}")))
            await asyncio.sleep(0)  # the next call comes in a later turn of the loop
        answers = await asyncio.gather(*calls)
        assert [a.allocation.order_id for a in answers] == ["o0", "o1", "o2"]
        return engine.joined_commands - before

    async def go():
        assert await spaced(0.0) == 3  # no window: each runs when it comes
        # A busy server lets them wait for each other (a window long against a stall
        # between the busy command and the first call: the server is still busy then).
        assert await spaced(10_000.0) == 1

        idle, servicer = await _engine(window_ms=10_000.0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await _call(idle, servicer, _request("r1", "o1"), _spec("o1"))
        assert loop.time() - started < 5.0  # idle: it did not wait the window

    asyncio.run(go())


def test_calls_wait_while_company_keeps_coming_and_run_once_it_stops_or_the_window_ends():
    """Waiting calls run once no call has joined them for join_quiet_ms: each arrival
    within that time keeps them waiting, up to the window."""
    # The times are long against a stall of a loaded machine: every margin below is at
    # least GAP_MS (a call GAP_MS late, or a look at the count GAP_MS late, changes nothing).
    GAP_MS, QUIET_MS = 200.0, 600.0

    async def arrivals(window_ms: float, gaps_ms: list[float]) -> list[int]:
        """The joined commands run (since the server was made busy) as each call comes,
        the calls spaced by `gaps_ms`, and after the last."""
        engine, servicer = await _engine(window_ms=window_ms, quiet_ms=QUIET_MS)
        await _busy(engine, servicer)
        # The quiet time is QUIET_MS, not twice what the busy command took if a slow
        # machine made that longer (Engine._quiet).
        engine._joined_took = 0.0
        before = engine.joined_commands
        calls, seen = [], []
        loop = asyncio.get_running_loop()
        started, due = loop.time(), 0.0
        for i, gap_ms in enumerate(gaps_ms):
            calls.append(_call(engine, servicer, _request(f"q{i}", f"q{i}"), _spec(f"q{i}")))
            # Until this look's time counted from the first call, not `gap_ms` after the
            # last wake-up: a late wake-up does not delay the calls after it.
            due += gap_ms / 1000
            await asyncio.sleep(max(0.0, started + due - loop.time()))
            seen.append(engine.joined_commands - before)
        await asyncio.gather(*calls)
        return [*seen, engine.joined_commands - before]

    async def go():
        # Calls GAP_MS apart keep the first waiting past its quiet time (QUIET_MS): all
        # three run together once none came for QUIET_MS.
        assert await arrivals(10_000.0, [GAP_MS, GAP_MS, 0.0]) == [0, 0, 0, 1]
        # A call QUIET_MS + 2 GAP_MS after the last: the first two had run already.
        assert await arrivals(10_000.0, [GAP_MS, QUIET_MS + 2 * GAP_MS, 0.0]) == [0, 1, 1, 2]
        # Calls that keep coming every GAP_MS run when the window (5 GAP_MS) ends.
        seen = await arrivals(5 * GAP_MS, [GAP_MS] * 6 + [0.0])
        assert seen[3] == 0 and seen[5] == 1, seen  # at 4 GAP_MS, none; at 6 GAP_MS, one
        assert seen[-1] == 2

    asyncio.run(go())


def test_a_busy_server_waits_for_company_twice_as_long_as_its_last_command_took():
    """The quiet time is join_quiet_ms, or twice the last joined command's run time if
    longer: a server whose commands take long waits longer for the next call."""
    async def joined_in(took_s: float) -> int:
        engine, servicer = await _engine(window_ms=10_000.0, quiet_ms=1.0)
        await _busy(engine, servicer)
        engine._joined_took = took_s  # as if the last command had taken this long
        before = engine.joined_commands
        first = _call(engine, servicer, _request("b0", "b0"), _spec("b0"))
        await asyncio.sleep(0.1)
        second = _call(engine, servicer, _request("b1", "b1"), _spec("b1"))
        await asyncio.gather(first, second)
        return engine.joined_commands - before

    async def go():
        assert await joined_in(0.2) == 1  # waits up to 0.4 s: the second call joins
        assert await joined_in(0.0) == 2  # waits 1 ms: the first ran alone

    asyncio.run(go())


def test_stream_messages_wait_for_company_under_their_own_window():
    """Stream messages are joined apart from unary calls, under stream_join_window_ms: with
    none, messages a moment apart run as they come while unary calls still wait."""
    async def go():
        # Unary calls under a window and a quiet time long against a stall of the machine
        # (between the busy command and the first call, or two turns of the loop).
        engine, servicer = await _engine(window_ms=10_000.0, stream_window_ms=0.0,
                                         quiet_ms=500.0)
        await _busy(engine, servicer)

        async def spaced(joiner, prefix: str) -> int:
            before = engine.joined_commands
            calls = []
            for i in range(3):
                request, spec = _request(f"{prefix}{i}", f"{prefix}o{i}"), _spec(f"{prefix}o{i}")
                calls.append(asyncio.ensure_future(engine.mutate_joined(
                    "AllocateStream", request, lambda spec=spec: spec, _respond, joiner)))
                await asyncio.sleep(0)
            answers = await asyncio.gather(*calls)
            assert [a.allocation.order_id for a in answers] == [
                f"{prefix}o{i}" for i in range(3)]
            return engine.joined_commands - before

        unary_before = list(engine.joined_by["unary"])
        assert await spaced(servicer.stream_joiner, "s") == 3
        assert engine.joined_by["stream"] == [3, 3, 0]  # calls, commands, waits: by kind
        await _busy(engine, servicer)
        assert await spaced(servicer.joiner, "u") == 1
        calls, commands, waits = (a - b for a, b in zip(engine.joined_by["unary"],
                                                        unary_before, strict=True))
        assert (calls, commands, waits) == (3, 1, 1)  # (the busy calls were retries: replayed)
        assert engine.joined_by["stream"] == [3, 3, 0]

    asyncio.run(go())


def test_a_probe_is_judged_by_the_next_command_of_its_own_kind():
    """A unary call waiting for company as a probe is not judged by a stream command that
    runs meanwhile: each kind keeps its own pace."""
    async def go():
        # The probe waits 0.5 s: long enough for the stream's call.
        engine, servicer = await _engine(window_ms=10_000.0, stream_window_ms=0.0,
                                         quiet_ms=500.0)
        for i in range(4):  # one caller at a time: these go at once
            await _call(engine, servicer, _request(f"one{i}", f"one{i}"), _spec(f"one{i}"))
        waits = engine.joined_waits
        probe = _call(engine, servicer, _request("probe", "probe"), _spec("probe"))
        await asyncio.sleep(0)  # queued: the fifth command of one call is a probe
        assert engine.joined_waits == waits + 1
        assert engine._pace[servicer.joiner].probe_from == 1
        request, spec = _request("s1", "s1"), _spec("s1")
        await engine.mutate_joined("AllocateStream", request, lambda: spec, _respond,
                                   servicer.stream_joiner)  # runs while the probe waits
        assert not probe.done()
        assert engine._pace[servicer.joiner].probe_from == 1  # still pending, unjudged
        await probe
        pace = engine._pace[servicer.joiner]
        assert pace.probe_from == 0 and pace.probe_every == 8  # no company: half as often

    asyncio.run(go())


def test_one_caller_at_a_time_is_seldom_kept_waiting_for_company():
    """A probe that finds no company makes the next come half as often, so one caller at a
    time seldom waits (every fourth call would); calls that come together bring the
    probes back to every fourth."""
    async def go():
        engine, servicer = await _engine(window_ms=10_000.0)
        waited = []
        for i in range(60):
            before = engine.joined_waits
            await _call(engine, servicer, _request(f"one{i}", f"one{i}"), _spec(f"one{i}"))
            if engine.joined_waits > before:
                waited.append(i)
        assert 2 <= len(waited) <= 4, waited
        gaps = [b - a for a, b in itertools.pairwise(waited)]
        assert gaps == sorted(gaps) and gaps[-1] > 1.5 * gaps[0], waited  # rarer and rarer

        await _busy(engine, servicer)  # three calls together
        before = engine.joined_waits
        for i in range(6):
            await _call(engine, servicer, _request(f"two{i}", f"two{i}"), _spec(f"two{i}"))
        assert engine.joined_waits - before >= 2  # waiting once more, then every fourth

    asyncio.run(go())
