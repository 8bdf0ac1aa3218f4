"""OrderService refusals end to end: every bad request gets its exact status code and
leaves the ledger exactly as it was (`Api.rejects` compares the checksum and the last
sequence number before and after).

The module's server holds one small world (see `setup`): an allocated package at
ATL6 that is never released, a released one at IND1, a packed one at AVP3, an open
payment hold and a resolved fraud hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from allocd.v1 import order_service_pb2 as pb
from allocd.v1 import types_pb2 as types
from google.protobuf.timestamp_pb2 import Timestamp

from .conftest import MAX_LINES, NEW_YORK_ZIP, RPC_TIMEOUT_S, OrderWorld

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS
FAILED = grpc.StatusCode.FAILED_PRECONDITION
QTY_MAX = 2**31 - 1


@dataclass(frozen=True)
class Setup:
    world: OrderWorld
    skus: tuple[str, str]  # two SKUs with stock at every node
    order_id: str
    allocated: str  # package ids, by status
    released: str
    packed: str
    released_sku: str
    open_hold: str  # exception ids
    resolved_hold: str


@pytest.fixture(scope="module")
def setup(api, demo_world) -> Setup:
    w = demo_world
    a, b = w.sku(), w.sku()
    for node in w.nodes:
        w.stock(a, node, 50)
        w.stock(b, node, 50)
    at_atl, at_ind, at_avp = w.sku(), w.sku(), w.sku()
    w.stock(at_atl, "ATL6", 5)
    w.stock(at_ind, "IND1", 5)
    w.stock(at_avp, "AVP3", 5)
    existing = w.allocate(w.order((at_atl, 1))).allocation
    released = w.allocate(w.order((at_ind, 2))).allocation.packages[0]
    w.release("IND1")
    packed = w.allocate(w.order((at_avp, 1))).allocation.packages[0]
    w.release("AVP3")
    w.pick(packed.package_id, {"1": 1})
    assert w.pack(packed.package_id, {at_avp: 1}).matched
    hold = w.allocate(w.order((a, 1), payment_status=pb.PAYMENT_STATUS_ON_HOLD)).allocation
    fraud = w.allocate(w.order((a, 1), fraud_score=0.9)).allocation
    w.resolve(fraud.exception_id, pb.RESOLUTION_CANCEL)
    return Setup(w, (a, b), existing.order_id, existing.packages[0].package_id,
                 released.package_id, packed.package_id, at_ind, hold.exception_id,
                 fraud.exception_id)


# ---- AllocateOrder: the order itself ---------------------------------------------------------
def _order(s: Setup) -> pb.Order:
    return s.world.order((s.skus[0], 1), (s.skus[1], 2))


def _with(**fields: Any) -> Callable[[pb.Order, Setup], None]:
    def change(order: pb.Order, s: Setup) -> None:
        for name, value in fields.items():
            setattr(order, name, value)
    return change


def _line(index: int, **fields: Any) -> Callable[[pb.Order, Setup], None]:
    def change(order: pb.Order, s: Setup) -> None:
        for name, value in fields.items():
            setattr(order.lines[index], name, value)
    return change


def _ship_to(**fields: Any) -> Callable[[pb.Order, Setup], None]:
    def change(order: pb.Order, s: Setup) -> None:
        for name, value in fields.items():
            setattr(order.ship_to, name, value)
    return change


def _existing_id(order: pb.Order, s: Setup) -> None:
    order.order_id = s.order_id


def _no_lines(order: pb.Order, s: Setup) -> None:
    del order.lines[:]


def _same_sku_twice(order: pb.Order, s: Setup) -> None:
    order.lines[1].sku_id = order.lines[0].sku_id


def _explicit_id_equal_to_a_default_one(order: pb.Order, s: Setup) -> None:
    order.lines[1].line_id = "1"  # the first line, left empty, defaults to "1"


def _too_many_lines(order: pb.Order, s: Setup) -> None:
    order.lines.extend(pb.OrderLine(sku_id=f"X-{i}", quantity=1) for i in range(MAX_LINES))


def _deliver_by_before_1970(order: pb.Order, s: Setup) -> None:
    order.deliver_by.CopyFrom(Timestamp(seconds=-86_400))


ORDER_CASES: list[tuple[str, Callable[[pb.Order, Setup], None], grpc.StatusCode]] = [
    ("empty order_id", _with(order_id=""), INVALID),
    ("order_id too long", _with(order_id="O" * 129), INVALID),
    ("order_id with a control character", _with(order_id="ORD\n1"), INVALID),
    ("an order_id that exists", _existing_id, EXISTS),
    ("no lines", _no_lines, INVALID),
    ("zero quantity", _line(0, quantity=0), INVALID),
    ("negative quantity", _line(1, quantity=-3), INVALID),
    ("quantity above int32", _line(0, quantity=QTY_MAX + 1), INVALID),
    ("negative unit price", _line(0, unit_price_micros=-1), INVALID),
    ("unit price above 10^12", _line(1, unit_price_micros=10**12 + 1), INVALID),
    ("a line worth more than 10^16", _line(0, quantity=100_000, unit_price_micros=10**12),
     INVALID),
    ("unknown SKU", _line(1, sku_id="NO-SUCH-SKU"), NOT_FOUND),
    ("unknown channel", _with(channel_id="no-such-channel"), NOT_FOUND),
    ("duplicate line ids", lambda o, s: [_line(0, line_id="L")(o, s),
                                         _line(1, line_id="L")(o, s)], INVALID),
    ("a line id equal to another line's default", _explicit_id_equal_to_a_default_one,
     INVALID),
    ("the same SKU on two lines", _same_sku_twice, INVALID),
    ("fraud score NaN", _with(fraud_score=float("nan")), INVALID),
    ("fraud score 2.0", _with(fraud_score=2.0), INVALID),
    ("fraud score negative", _with(fraud_score=-0.1), INVALID),
    ("fraud score infinite", _with(fraud_score=float("inf")), INVALID),
    ("unknown SLA tier 99", _with(sla_tier=99), INVALID),
    ("unknown payment status", _with(payment_status=7), INVALID),
    ("unknown address status", _with(address_status=9), INVALID),
    ("latitude without longitude", _ship_to(latitude=40.7), INVALID),
    ("longitude without latitude", _ship_to(longitude=-74.0), INVALID),
    ("latitude out of range", _ship_to(latitude=91.0, longitude=-74.0), INVALID),
    ("NaN coordinates", _ship_to(latitude=float("nan"), longitude=-74.0), INVALID),
    ("unknown postal code and no coordinates", _ship_to(postal_code="99999"), INVALID),
    ("no postal code and no coordinates", _ship_to(postal_code=""), INVALID),
    ("postal code longer than 16", _ship_to(postal_code="1" * 17), INVALID),
    ("more lines than max_lines_per_request", _too_many_lines, INVALID),
    ("deliver_by before 1970", _deliver_by_before_1970, INVALID),
]


@pytest.mark.parametrize(("change", "code"), [(c, code) for _, c, code in ORDER_CASES],
                         ids=[name for name, _, _ in ORDER_CASES])
def test_allocate_order_refuses_a_bad_order(api, setup, change, code):
    order = _order(setup)
    change(order, setup)
    api.rejects(code, api.orders.AllocateOrder,
                pb.AllocateOrderRequest(request_id=api.rid(), order=order))


@pytest.mark.parametrize(("change", "code"), [
    (_line(1, sku_id="NO-SUCH-SKU"), NOT_FOUND),
    (_with(sla_tier=99), INVALID),
    (_no_lines, INVALID),
], ids=["unknown SKU", "unknown SLA tier", "no lines"])
def test_quote_promise_refuses_a_bad_order_too(api, setup, change, code):
    order = _order(setup)
    change(order, setup)
    api.rejects(code, api.orders.QuotePromise, pb.QuotePromiseRequest(order=order))


def test_allocate_order_without_a_request_id_is_refused(api, setup):
    api.rejects(INVALID, api.orders.AllocateOrder,
                pb.AllocateOrderRequest(order=_order(setup)), details="request_id")


def test_a_refused_order_is_not_recorded_and_its_id_stays_free(api, setup):
    order = _order(setup)
    order.lines[0].quantity = 0
    api.rejects(INVALID, api.orders.AllocateOrder,
                pb.AllocateOrderRequest(request_id=api.rid(), order=order))
    api.rejects(NOT_FOUND, api.orders.GetOrder, pb.GetOrderRequest(order_id=order.order_id))
    order.lines[0].quantity = 1
    assert setup.world.allocate(order).allocation.status == pb.ORDER_STATUS_ALLOCATED


def test_allocate_orders_refuses_an_empty_batch(api, setup):
    api.rejects(INVALID, api.orders.AllocateOrders,
                pb.AllocateOrdersRequest(request_id=api.rid()))


def test_allocate_orders_refuses_more_orders_than_max_orders_per_request(server_factory):
    small = server_factory(max_orders_per_request=2)
    orders = [pb.Order(order_id=f"O{i}", channel_id="web",
                       ship_to=pb.ShipTo(postal_code=NEW_YORK_ZIP),
                       lines=[pb.OrderLine(sku_id="S", quantity=1)]) for i in range(3)]
    error = small.rejects(INVALID, small.orders.AllocateOrders, pb.AllocateOrdersRequest(
        request_id=small.rid(), orders=orders))
    assert "max_orders_per_request" in error.details()


def test_allocating_without_a_network_is_a_failed_precondition(server_factory):
    bare = server_factory()
    cat = bare.seed(n_nodes=1, n_skus=1)
    bare.receive(cat.skus[0], cat.nodes[0], 5)
    order = pb.Order(order_id="O1", channel_id="web", ship_to=pb.ShipTo(postal_code="10001"),
                     lines=[pb.OrderLine(sku_id=cat.skus[0], quantity=1)])
    bare.rejects(FAILED, bare.orders.AllocateOrder, pb.AllocateOrderRequest(
        request_id=bare.rid(), order=order), details="SetNetwork")


# ---- the warehouse steps ----------------------------------------------------------------------
def _pick(package: str, *lines: tuple[str, int]) -> pb.ConfirmPickRequest:
    return pb.ConfirmPickRequest(package_id=package, lines=[
        pb.PickedLine(line_id=line_id, picked_quantity=qty) for line_id, qty in lines])


STEP_CASES: list[tuple[str, Callable[[Setup], tuple[str, Any]], grpc.StatusCode]] = [
    ("ConfirmPick on a package not released",
     lambda s: ("ConfirmPick", _pick(s.allocated, ("1", 1))), FAILED),
    ("ConfirmPick above the planned quantity",
     lambda s: ("ConfirmPick", _pick(s.released, ("1", 3))), INVALID),
    ("ConfirmPick of a negative quantity",
     lambda s: ("ConfirmPick", _pick(s.released, ("1", -1))), INVALID),
    ("ConfirmPick of a line the package lacks",
     lambda s: ("ConfirmPick", _pick(s.released, ("9", 1))), NOT_FOUND),
    ("ConfirmPick naming a line twice",
     lambda s: ("ConfirmPick", _pick(s.released, ("1", 1), ("1", 1))), INVALID),
    ("ConfirmPick of an unknown package",
     lambda s: ("ConfirmPick", _pick("NO-SUCH-PACKAGE", ("1", 1))), NOT_FOUND),
    ("ConfirmPick without a package id", lambda s: ("ConfirmPick", _pick("")), INVALID),
    ("ConfirmPack of a package not picked",
     lambda s: ("ConfirmPack", pb.ConfirmPackRequest(package_id=s.released, scanned=[
         pb.ScannedItem(sku_id=s.released_sku, quantity=2)])), FAILED),
    ("ConfirmPack of an unknown package",
     lambda s: ("ConfirmPack", pb.ConfirmPackRequest(package_id="NO-SUCH-PACKAGE")), NOT_FOUND),
    ("ConfirmShipment without a tracking number",
     lambda s: ("ConfirmShipment", pb.ConfirmShipmentRequest(package_id=s.packed)), INVALID),
    ("ConfirmShipment of a package not packed",
     lambda s: ("ConfirmShipment", pb.ConfirmShipmentRequest(package_id=s.released,
                                                            tracking_number="1Z")), FAILED),
    ("ConfirmShipment of an unknown package",
     lambda s: ("ConfirmShipment", pb.ConfirmShipmentRequest(package_id="NO-SUCH-PACKAGE",
                                                            tracking_number="1Z")), NOT_FOUND),
    ("ReleaseWave at an unknown node",
     lambda s: ("ReleaseWave", pb.ReleaseWaveRequest(node_id="NO-SUCH-NODE")), NOT_FOUND),
    ("ReleaseWave of a negative number of packages",
     lambda s: ("ReleaseWave", pb.ReleaseWaveRequest(node_id="ATL6", max_packages=-1)),
     INVALID),
    ("CancelOrder of an unknown order",
     lambda s: ("CancelOrder", pb.CancelOrderRequest(order_id="NO-SUCH-ORDER")), NOT_FOUND),
    ("CancelOrder without an order id", lambda s: ("CancelOrder", pb.CancelOrderRequest()),
     INVALID),
    ("CancelOrder of an unknown line",
     lambda s: ("CancelOrder", pb.CancelOrderRequest(order_id=s.order_id, lines=[
         pb.LineQuantity(line_id="9", quantity=1)])), NOT_FOUND),
    ("CancelOrder of more than the line holds",
     lambda s: ("CancelOrder", pb.CancelOrderRequest(order_id=s.order_id, lines=[
         pb.LineQuantity(line_id="1", quantity=2)])), FAILED),
    ("CancelOrder naming a line twice",
     lambda s: ("CancelOrder", pb.CancelOrderRequest(order_id=s.order_id, lines=[
         pb.LineQuantity(line_id="1", quantity=1),
         pb.LineQuantity(line_id="1", quantity=1)])), INVALID),
    ("ResolveException with a resolution the type does not take",
     lambda s: ("ResolveException", pb.ResolveExceptionRequest(
         exception_id=s.open_hold, resolution=pb.RESOLUTION_ACCEPT)), INVALID),
    ("ResolveException retrying a hold",
     lambda s: ("ResolveException", pb.ResolveExceptionRequest(
         exception_id=s.open_hold, resolution=pb.RESOLUTION_RETRY)), INVALID),
    ("ResolveException without a resolution",
     lambda s: ("ResolveException", pb.ResolveExceptionRequest(exception_id=s.open_hold)),
     INVALID),
    ("ResolveException with an unknown resolution",
     lambda s: ("ResolveException", pb.ResolveExceptionRequest(
         exception_id=s.open_hold, resolution=99)), INVALID),
    ("ResolveException with a note over 1000 characters",
     lambda s: ("ResolveException", pb.ResolveExceptionRequest(
         exception_id=s.open_hold, resolution=pb.RESOLUTION_RELEASE, note="n" * 1001)),
     INVALID),
    ("ResolveException of a resolved exception",
     lambda s: ("ResolveException", pb.ResolveExceptionRequest(
         exception_id=s.resolved_hold, resolution=pb.RESOLUTION_RELEASE)), FAILED),
    ("ResolveException of an unknown exception",
     lambda s: ("ResolveException", pb.ResolveExceptionRequest(
         exception_id="EX-999999999", resolution=pb.RESOLUTION_RELEASE)), NOT_FOUND),
]


@pytest.mark.parametrize(("build", "code"), [(b, code) for _, b, code in STEP_CASES],
                         ids=[name for name, _, _ in STEP_CASES])
def test_a_bad_lifecycle_request_is_refused(api, setup, build, code):
    method, request = build(setup)
    request.request_id = api.rid()
    api.rejects(code, getattr(api.orders, method), request)


@pytest.mark.parametrize("method", ["ConfirmPick", "ConfirmPack", "ConfirmShipment",
                                    "ReleaseWave", "CancelOrder", "ResolveException"])
def test_every_mutating_order_call_needs_a_request_id(api, setup, method):
    request = {
        "ConfirmPick": _pick(setup.released, ("1", 2)),
        "ConfirmPack": pb.ConfirmPackRequest(package_id=setup.packed),
        "ConfirmShipment": pb.ConfirmShipmentRequest(package_id=setup.packed,
                                                     tracking_number="1Z"),
        "ReleaseWave": pb.ReleaseWaveRequest(node_id="ATL6"),
        "CancelOrder": pb.CancelOrderRequest(order_id=setup.order_id),
        "ResolveException": pb.ResolveExceptionRequest(exception_id=setup.open_hold,
                                                       resolution=pb.RESOLUTION_RELEASE),
    }[method]
    api.rejects(INVALID, getattr(api.orders, method), request, details="request_id")


# ---- reads ----------------------------------------------------------------------------------
def test_reads_refuse_unknown_ids_and_bad_arguments(api, setup):
    api.rejects(NOT_FOUND, api.orders.GetOrder, pb.GetOrderRequest(order_id="NO-SUCH-ORDER"))
    api.rejects(INVALID, api.orders.ListExceptions, pb.ListExceptionsRequest(type=99))
    api.rejects(INVALID, api.orders.ListExceptions, pb.ListExceptionsRequest(page_size=-1))
    api.rejects(INVALID, api.orders.ListExceptions,
                pb.ListExceptionsRequest(page_token="not-a-token"))
    ship_to = pb.ShipTo(postal_code=NEW_YORK_ZIP)
    api.rejects(NOT_FOUND, api.orders.RateShop,
                pb.RateShopRequest(node_id="NO-SUCH-NODE", ship_to=ship_to, weight_lb=1))
    api.rejects(INVALID, api.orders.RateShop,
                pb.RateShopRequest(node_id="IND1", ship_to=ship_to, weight_lb=float("nan")))
    api.rejects(INVALID, api.orders.RateShop, pb.RateShopRequest(
        node_id="IND1", ship_to=ship_to, weight_lb=1,
        dimensions=types.Dimensions(length_in=-1, width_in=1, height_in=1)))
    api.rejects(INVALID, api.orders.RateShop,
                pb.RateShopRequest(node_id="IND1", ship_to=pb.ShipTo(postal_code="99999"),
                                   weight_lb=1))
    api.rejects(INVALID, api.orders.RateShop, pb.RateShopRequest(
        node_id="IND1", ship_to=pb.ShipTo(latitude=91, longitude=500), weight_lb=1),
        details="coordinates out of range")  # (as QuotePromise refuses them)
    api.rejects(INVALID, api.orders.RateShop, pb.RateShopRequest(
        node_id="IND1", ship_to=ship_to, weight_lb=1,
        ready_time=Timestamp(seconds=253402300799)), details="ready_time")


def test_rate_shop_answers_at_the_edges_of_what_it_takes(api, setup):
    """The largest parcel it takes and the latest ready time are answered, not failed: the
    billable weight past what the answer's field holds is given as its largest value."""
    ship_to = pb.ShipTo(postal_code=NEW_YORK_ZIP)
    big = api.orders.RateShop(pb.RateShopRequest(
        node_id="IND1", ship_to=ship_to, weight_lb=10_000,
        dimensions=types.Dimensions(length_in=10_000, width_in=10_000, height_in=10_000)),
        timeout=RPC_TIMEOUT_S)
    assert big.billable_weight_lb == 2**31 - 1 and big.quotes
    late = api.orders.RateShop(pb.RateShopRequest(
        node_id="IND1", ship_to=ship_to, weight_lb=1,
        ready_time=Timestamp(seconds=250_246_627_199)), timeout=RPC_TIMEOUT_S)
    assert late.quotes and all(q.delivery_date.seconds > 250_246_627_199 for q in late.quotes)


def test_list_exceptions_pages_through_every_exception(api, setup):
    first = api.orders.ListExceptions(pb.ListExceptionsRequest(page_size=1,
                                                               include_resolved=True))
    assert len(first.exceptions) == 1 and first.next_page_token
    seen = [e.exception_id for e in first.exceptions]
    token = first.next_page_token
    while token:
        page = api.orders.ListExceptions(pb.ListExceptionsRequest(
            page_size=1, page_token=token, include_resolved=True))
        seen += [e.exception_id for e in page.exceptions]
        token = page.next_page_token
    everything = api.orders.ListExceptions(pb.ListExceptionsRequest(page_size=1000,
                                                                    include_resolved=True))
    assert seen == [e.exception_id for e in everything.exceptions]
    assert {setup.open_hold, setup.resolved_hold} <= set(seen)
    open_only = api.orders.ListExceptions(pb.ListExceptionsRequest(page_size=1000))
    assert setup.open_hold in [e.exception_id for e in open_only.exceptions]
    assert setup.resolved_hold not in [e.exception_id for e in open_only.exceptions]


def test_the_open_queue_pages_past_exceptions_resolved_meanwhile(api, setup):
    """The open exceptions leave the queue as they are resolved: one resolved between two
    pages moves none of the others, which all come, once, in the order raised."""
    w = setup.world
    held = [w.allocate(w.order((setup.skus[1], 1), payment_status=pb.PAYMENT_STATUS_ON_HOLD)
                       ).allocation.exception_id for _ in range(5)]
    mine = {"type": pb.EXCEPTION_TYPE_PAYMENT_HOLD}
    before = [e.exception_id for e in api.orders.ListExceptions(
        pb.ListExceptionsRequest(page_size=1000, **mine)).exceptions]
    assert before[-5:] == held
    read, token, resolved = [], "", []
    for _ in range(len(before)):
        page = api.orders.ListExceptions(pb.ListExceptionsRequest(
            page_size=2, page_token=token, **mine))
        read += [e.exception_id for e in page.exceptions]
        token = page.next_page_token
        if not token:
            break
        if read[-1] in held and not resolved:  # resolve the last one read and the next one
            for exception_id in (read[-1], held[held.index(read[-1]) + 1]):
                w.resolve(exception_id, pb.RESOLUTION_CANCEL)
                resolved.append(exception_id)
    assert not token and resolved
    assert read == [e for e in before if e not in resolved[1:]]


def test_rate_shop_refuses_a_parcel_whose_cost_no_int64_holds(server_factory):
    from allocd.v1 import network_service_pb2 as npb

    from .conftest import ORDER_NODES, demo_network_proto, order_world

    api = server_factory()
    order_world(api)
    network = demo_network_proto(ORDER_NODES)
    for service in network.services:
        for zone in service.zones:
            zone.per_lb_over_micros = 2 * 10**9  # (SetNetwork takes up to 10^12)
    api.network.SetNetwork(npb.SetNetworkRequest(request_id=api.rid(), network=network),
                           timeout=RPC_TIMEOUT_S)
    api.rejects(INVALID, api.orders.RateShop, pb.RateShopRequest(
        node_id="IND1", ship_to=pb.ShipTo(postal_code=NEW_YORK_ZIP), weight_lb=10_000,
        dimensions=types.Dimensions(length_in=10_000, width_in=10_000, height_in=10_000)),
        details="int64")
