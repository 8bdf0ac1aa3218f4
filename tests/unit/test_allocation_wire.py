"""The allocation written straight to wire bytes (service/allocation_wire.py) against the
reference that builds the message field by field (order_codec.allocation_to_proto):
the same bytes for every order of a long seeded run, and the same message for any
record whatever its values; and a batch's whole answer, written as bytes, against the
response built message by message; and a single order's answer (AllocateOrder,
AllocateStream) likewise."""

from __future__ import annotations

import asyncio

from allocd.v1 import order_service_pb2 as pb
from allocd.v1 import types_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from core import commands as c
from core.ledger import Ledger
from core.model import ChannelSpec, NodeSpec, SkuSpec
from core.network import CarrierService, NetworkSpec, NodeCosts, Region, SlaTier
from core.operations import Outcome, execute
from core.order_ops import AllocateResult
from core.orders import (
    Backorder,
    Decision,
    OrderLineSpec,
    OrderRecord,
    OrderSpec,
    OrderStatus,
    PackageLine,
    PackagePlan,
    PackageState,
    PackageStatus,
)
from service.allocation_wire import (
    allocation_bytes,
    mutation_result_bytes,
    response_bytes,
    stream_response_bytes,
)
from service.config import Settings
from service.engine import Engine
from service.errors import status_of
from service.order_codec import allocation_to_proto
from service.servicers.inventory import mutation_result
from service.servicers.orders import OrderServicer, allocations_response
from service.store import MemoryEventStore
from tests.unit.test_compiled_core import scenario

INT64 = st.integers(-(2**63), 2**63 - 1)
MONEY = st.integers(-(2**58), 2**58)  # (twelve at most are summed into an int64 total)
UNITS = st.integers(-(2**40), 2**40)  # (summed into an int64 total)
MS = st.integers(-(2**52), 2**52)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)  # UTF-8 encodable


def test_every_order_of_a_long_run_is_written_byte_for_byte_as_the_reference_writes_it():
    """Orders allocated, split, backordered, substituted, held, cancelled, waved, picked
    short, packed and shipped, in both views."""
    _, _, ledger = scenario()
    statuses = set()
    for record in ledger.orders.orders.values():
        statuses.add(record.status)
        for full in (True, False):
            for decision in (None, record.last_decision):
                expected = allocation_to_proto(ledger, record, decision, False, None, full)
                data = allocation_bytes(ledger, record, decision, full)
                assert data == expected.SerializeToString(), (record.spec.order_id, full)
    assert len(statuses) >= 6, statuses


def _ledger() -> Ledger:
    ledger = Ledger()
    for command in (
            c.UpsertNodes((NodeSpec("n0"), NodeSpec("nœud-1"))),
            c.UpsertChannels((ChannelSpec("web"),)),
            c.UpsertSkus(tuple(SkuSpec(s) for s in ("a", "b", "sku-ü"))),
            c.SetNetwork(NetworkSpec(
                regions=(Region("east", 40.7, -74.0, ("100",)),),
                services=(CarrierService("ground", "Acme", ((1,) * 20,) * 7, (2,) * 7),
                          CarrierService("air", "", ((1,) * 20,) * 7, (1,) * 7)),
                node_costs=(NodeCosts("n0", 1, 1), NodeCosts("nœud-1", 1, 1)))),
    ):
        execute(ledger, command, 0, "setup")
    return ledger


LEDGER = _ledger()


@st.composite
def _plans(draw: st.DrawFn, index: int) -> PackagePlan:
    lines = draw(st.lists(st.builds(PackageLine, TEXT, st.integers(0, 2), INT64,
                                    st.integers(-1, 2)), max_size=3))
    return PackagePlan(f"P{index}{draw(TEXT)}", draw(st.integers(0, 1)), draw(st.integers(-2, 3)),
                       tuple(lines), draw(MONEY), draw(MONEY), draw(MONEY), draw(MONEY),
                       draw(st.integers(-(2**31), 2**40)), draw(MS), draw(MS))


@st.composite
def _records(draw: st.DrawFn) -> tuple[OrderRecord, dict[str, PackageState]]:
    states = {}
    for i in range(draw(st.integers(0, 3))):
        plan = draw(_plans(i))
        quantities = draw(st.dictionaries(
            st.sampled_from([line.line_id for line in plan.lines] + ["other"]), UNITS,
            max_size=3))
        states[plan.package_id] = PackageState(
            plan, "O", draw(st.sampled_from(PackageStatus)), quantities, draw(TEXT), draw(TEXT))
    backorders = draw(st.lists(st.builds(Backorder, TEXT, st.integers(0, 2), INT64, MS),
                               max_size=2))
    decision = draw(st.none() | st.builds(
        Decision, TEXT, st.just(()), st.just(()), st.integers(0, 1), TEXT, st.just(())))
    record = OrderRecord(OrderSpec(draw(TEXT), "web", SlaTier.STANDARD, ()), 1,
                         draw(st.sampled_from(OrderStatus)), list(states),
                         {b.line_id: b for b in backorders}, decision)
    return record, states


@settings(max_examples=400, deadline=None)
@given(_records(), st.booleans(), st.booleans())
def test_any_record_reads_back_as_the_reference_builds_it(drawn, full, pass_decision):
    record, states = drawn
    LEDGER.orders.packages.clear()
    LEDGER.orders.packages.update(states)
    decision = record.last_decision if pass_decision else None
    expected = allocation_to_proto(LEDGER, record, decision, False, None, full)
    got = pb.Allocation.FromString(allocation_bytes(LEDGER, record, decision, full))
    assert got == expected
    # Field for field, presence included: the reference always sets a package's cost and
    # dates, and an empty one must still be there.
    assert got.SerializeToString(deterministic=True) == expected.SerializeToString(
        deterministic=True)
    for mine, theirs in zip(got.packages, expected.packages, strict=True):
        for field in ("cost", "ship_date", "promised_delivery"):
            assert mine.HasField(field) == theirs.HasField(field)


def _reference_response(ledger: Ledger, o: Outcome, explain: bool,
                        full: bool) -> pb.AllocateOrdersResponse:
    """An AllocateOrdersResponse built message by message, field by field."""
    response = pb.AllocateOrdersResponse(result=mutation_result(o))
    assert isinstance(o.detail, AllocateResult)
    for outcome in o.detail.outcomes:
        if outcome.error is not None:
            response.allocations.add(order_id=outcome.order_id,
                                     error_code=status_of(outcome.error).value[0],
                                     error_message=outcome.error.message)
            continue
        allocation = allocation_to_proto(ledger, ledger.orders.orders[outcome.order_id],
                                         outcome.decision, explain, None, full)
        if outcome.exception_id:
            allocation.exception_id = outcome.exception_id
            assert outcome.exception_type is not None
            allocation.exception_type = pb.ExceptionType.ValueType(int(outcome.exception_type))
        response.allocations.append(allocation)
    return response


def test_a_batch_answer_written_as_bytes_is_the_response_built_message_by_message():
    """Allocated, split, backordered, held and refused orders, in both views and
    explained: the same message, and (unexplained) the same bytes."""
    ledger = _ledger()
    execute(ledger, c.ReceiveStock(tuple(
        c.ReceiptLine(sku, node, quantity) for sku, node, quantity in (
            ("a", "n0", 3), ("b", "nœud-1", 2), ("sku-ü", "n0", 1)))), 0, "stock")

    def order(name: str, *lines: tuple[str, int], **fields: object) -> OrderSpec:
        return OrderSpec(name, "web", SlaTier.STANDARD, tuple(
            OrderLineSpec(str(i + 1), sku, qty) for i, (sku, qty) in enumerate(lines)),
            "10001", **fields)  # type: ignore[arg-type]

    outcomes = [execute(ledger, c.AllocateOrders((
        order(f"one-node-{k}", ("a", 1)),
        order(f"split-{k}", ("a", 1), ("b", 1)),
        order(f"short-{k}", ("sku-ü", 2)),  # backordered: an exception with its id and type
        order(f"held-{k}", ("a", 1), fraud_score=0.99),  # held for review
        order(f"unknown-sku-{k}", ("nope", 1)),  # refused
        order(f"last-{k}", ("b", 1) if k == 0 else ("a", 9)),
    )), 0, f"batch-{k}") for k in range(2)]
    kinds = set()
    for o in outcomes:
        assert isinstance(o.detail, AllocateResult)
        kinds |= {(x.error is not None, x.exception_type) for x in o.detail.outcomes}
        for full in (True, False):
            for explain in ((False, True) if full else (False,)):
                expected = _reference_response(ledger, o, explain, full)
                got = allocations_response(ledger, o, explain, full)
                assert pb.AllocateOrdersResponse.FromString(got) == expected, (full, explain)
                if not explain:
                    assert got == expected.SerializeToString(), full
    assert len(kinds) >= 4, kinds  # allocated, backordered, held, refused


def test_a_single_order_answer_written_as_bytes_is_the_response_built_as_a_message():
    """AllocateOrder's and AllocateStream's answers, written as bytes (allocated, split,
    backordered and held orders, in both views), are the bytes of the response built as a
    message; an explained order, or an outcome to read a replayed answer into, is still
    answered as a message."""
    async def go() -> None:
        engine = Engine(Settings(store="memory"), MemoryEventStore())
        await engine.start()
        engine.ledger = ledger = _ledger()
        servicer = OrderServicer(engine)
        execute(ledger, c.ReceiveStock(tuple(
            c.ReceiptLine(sku, node, quantity) for sku, node, quantity in (
                ("a", "n0", 3), ("b", "nœud-1", 2), ("sku-ü", "n0", 1)))), 0, "stock")
        orders = {
            "one-node": (("a", 1),), "split": (("a", 1), ("b", 1)),
            "short": (("sku-ü", 2),), "held": (("a", 1),)}
        kinds = set()
        for name, lines in orders.items():
            spec = OrderSpec(name, "web", SlaTier.STANDARD, tuple(
                OrderLineSpec(str(i + 1), sku, qty) for i, (sku, qty) in enumerate(lines)),
                "10001", fraud_score=0.99 if name == "held" else 0.0)
            o = execute(ledger, c.AllocateOrders((spec,)), 0, f"r-{name}")
            assert isinstance(o.detail, AllocateResult)
            kinds.add(o.detail.outcomes[0].exception_type)
            for view in (pb.ALLOCATION_VIEW_FULL, pb.ALLOCATION_VIEW_BASIC):
                unary = pb.AllocateOrderRequest(request_id=f"r-{name}", view=view)
                stream = pb.AllocateStreamRequest(request_id=f"r-{name}", view=view)
                written = servicer._single_bytes(o, unary)
                assert written is not None
                expected = pb.AllocateOrderResponse(result=mutation_result(o))
                servicer._allocation_into(expected.allocation, o, unary)
                assert response_bytes(written[0], [written[1]]) == (
                    expected.SerializeToString()), (name, view)
                expected_stream = pb.AllocateStreamResponse(
                    request_id=stream.request_id, result=mutation_result(o))
                servicer._allocation_into(expected_stream.allocation, o, stream)
                assert servicer._single_bytes(o, stream) == written
                assert stream_response_bytes(stream.request_id, *written) == (
                    expected_stream.SerializeToString()), (name, view)
            explained = pb.AllocateOrderRequest(request_id=f"r-{name}", explain=True)
            assert servicer._single_bytes(o, explained) is None
            assert servicer._single_bytes(Outcome(()), unary) is None
        assert len(kinds) >= 3, kinds  # none, backordered, held for review

    asyncio.run(go())


@settings(deadline=None)
@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**31 - 1))
def test_a_mutation_result_written_as_bytes_is_the_message_serialized(first, last, count):
    assert mutation_result_bytes(first, last, count) == types_pb2.MutationResult(
        first_sequence=first, last_sequence=last, event_count=count).SerializeToString()
