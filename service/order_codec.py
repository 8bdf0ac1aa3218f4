"""Translation between allocd.v1 order messages and core order types."""

from __future__ import annotations

import math
from typing import Any

from allocd.v1 import order_service_pb2 as pb
from allocd.v1 import types_pb2

from core.errors import InvalidArgument
from core.exceptions import ExceptionRecord, ExceptionType
from core.ledger import Ledger
from core.network import SlaTier
from core.orders import (
    AddressStatus,
    Decision,
    OrderLineSpec,
    OrderRecord,
    OrderSpec,
    PackagePlan,
    PackageState,
    PackageStatus,
    PaymentStatus,
)
from service.codec import ms_from_timestamp, timestamp
from service.order_wire import orders_from_request

#: SlaTier by wire value (unspecified means standard): one lookup instead of an enum call.
_TIERS = {types_pb2.SLA_TIER_UNSPECIFIED: SlaTier.STANDARD,
          **{int(tier) + 1: tier for tier in SlaTier}}
_PAYMENTS = {int(status): status for status in PaymentStatus}
_ADDRESSES = {int(status): status for status in AddressStatus}
_new: Any = tuple.__new__


def tier_from_proto(value: int, field: str) -> SlaTier:
    tier = _TIERS.get(value)
    if tier is None:
        raise InvalidArgument(f"{field}: {value} is not an SLA tier", field)
    return tier


def tier_to_proto(tier: SlaTier) -> types_pb2.SlaTier.ValueType:
    return types_pb2.SlaTier.ValueType(int(tier) + 1)


def coordinates(ship_to: pb.ShipTo, field: str) -> tuple[float | None, float | None]:
    """The ship-to's latitude and longitude (both None when not given); refuses one
    without the other, or either out of range."""
    latitude = ship_to.latitude if ship_to.HasField("latitude") else None
    longitude = ship_to.longitude if ship_to.HasField("longitude") else None
    if (latitude is None) != (longitude is None):
        raise InvalidArgument("give both latitude and longitude, or neither", field)
    if latitude is not None and longitude is not None and not (
            math.isfinite(latitude) and math.isfinite(longitude)
            and -90 <= latitude <= 90 and -180 <= longitude <= 180):
        raise InvalidArgument("coordinates out of range", field)
    return latitude, longitude


def order_from_proto(msg: pb.Order, field: str = "order") -> OrderSpec:
    payment = msg.payment_status or pb.PAYMENT_STATUS_AUTHORIZED
    if payment not in (pb.PAYMENT_STATUS_AUTHORIZED, pb.PAYMENT_STATUS_ON_HOLD):
        raise InvalidArgument(f"{field}.payment_status: {payment} is unknown",
                              f"{field}.payment_status")
    address = msg.address_status
    if address not in (pb.ADDRESS_STATUS_UNSPECIFIED, pb.ADDRESS_STATUS_VALID,
                       pb.ADDRESS_STATUS_INVALID):
        raise InvalidArgument(f"{field}.address_status: {address} is unknown",
                              f"{field}.address_status")
    ship_to = msg.ship_to
    latitude, longitude = coordinates(ship_to, f"{field}.ship_to")
    postal_code = ship_to.postal_code
    if len(postal_code) > 16:
        raise InvalidArgument("postal_code is longer than 16", f"{field}.ship_to.postal_code")
    tier = _TIERS.get(msg.sla_tier)
    if tier is None:
        tier = tier_from_proto(msg.sla_tier, f"{field}.sla_tier")  # raises
    deliver_by_ms = (ms_from_timestamp(msg.deliver_by, f"{field}.deliver_by")
                     if msg.HasField("deliver_by") else 0)
    customer_id = msg.customer_id
    if customer_id:  # (the empty id passes)
        customer_id = _customer(customer_id, f"{field}.customer_id")
    # Every field in OrderSpec's order, through tuple.__new__: calling the named tuples'
    # classes would run their generated __new__ too, for every order and line.
    spec: OrderSpec = _new(OrderSpec, (
        msg.order_id, msg.channel_id, tier,
        tuple([_new(OrderLineSpec, (line.line_id or str(i), line.sku_id, line.quantity,
                                    _unit_price(line)))
               for i, line in enumerate(msg.lines, 1)]),
        postal_code, latitude, longitude, deliver_by_ms, _PAYMENTS[payment], msg.fraud_score,
        _ADDRESSES[address], msg.allow_split if msg.HasField("allow_split") else True,
        msg.allow_substitution, customer_id))
    return spec


def _unit_price(line: pb.OrderLine) -> int:
    """The line's unit price as OrderLineSpec holds it: -1 when not given. A negative one
    given is read as -2, which the core refuses for that order alone, naming the line (-1
    would read as none given)."""
    if not line.HasField("unit_price_micros"):
        return -1
    return line.unit_price_micros if line.unit_price_micros >= 0 else -2


def orders_from_proto(request: pb.AllocateOrdersRequest) -> tuple[OrderSpec, ...]:
    """A batch's orders: read from the request's bytes (service.order_wire), and by
    order_from_proto where that leaves one (which refuses what must be refused)."""
    orders = request.orders
    read = orders_from_request(request.SerializeToString())
    if len(read) != len(orders):
        read = [None] * len(orders)
    return tuple(order_from_proto(orders[i], f"orders[{i}]") if spec is None else spec
                 for i, spec in enumerate(read))


def single_order_from_proto(request: pb.AllocateOrderRequest | pb.AllocateStreamRequest,
                            serialized: bytes | None = None) -> OrderSpec:
    """A single-order call's order, read the same way (its order is field 2 as well);
    from `serialized`, the request's bytes, when the caller has them already."""
    read = orders_from_request(request.SerializeToString() if serialized is None
                               else serialized)
    spec = read[0] if len(read) == 1 else None
    return order_from_proto(request.order) if spec is None else spec


def _customer(value: str, field: str) -> str:
    if len(value) > 128 or not value.isprintable():
        raise InvalidArgument("customer_id must be at most 128 printable characters", field)
    return value


def order_to_proto(spec: OrderSpec) -> pb.Order:
    msg = pb.Order(
        order_id=spec.order_id, channel_id=spec.channel_id, sla_tier=tier_to_proto(spec.tier),
        lines=[pb.OrderLine(line_id=line.line_id, sku_id=line.sku_id, quantity=line.quantity,
                            unit_price_micros=(None if line.unit_price_micros == -1
                                               else line.unit_price_micros))
               for line in spec.lines],
        payment_status=pb.PaymentStatus.ValueType(int(spec.payment)),
        fraud_score=spec.fraud_score,
        address_status=pb.AddressStatus.ValueType(int(spec.address)),
        allow_split=spec.allow_split, allow_substitution=spec.allow_substitution,
        customer_id=spec.customer_id)
    msg.ship_to.postal_code = spec.postal_code
    if spec.latitude is not None and spec.longitude is not None:
        msg.ship_to.latitude = spec.latitude
        msg.ship_to.longitude = spec.longitude
    if spec.deliver_by_ms:
        msg.deliver_by.CopyFrom(timestamp(spec.deliver_by_ms))
    return msg


def _package(ledger: Ledger, state: PackageState) -> pb.Package:
    return _plan_to_proto(ledger, state.plan, state.quantities, int(state.status),
                          state.wave_id, state.tracking_number)


def _plan_to_proto(ledger: Ledger, plan: PackagePlan, quantities: dict[str, int], status: int,
                   wave_id: str = "", tracking_number: str = "",
                   into: Any = None) -> pb.Package:
    """The package as a message; with `into` (a repeated Package field), added to it.
    (Fields are set one by one: cheaper than constructor keywords, nested ones most.)"""
    catalog = ledger.catalog
    services = ledger.network_spec.services
    msg = pb.Package() if into is None else into.add()
    msg.package_id = plan.package_id
    msg.node_id = catalog.nodes[plan.node].node_id
    if 0 <= plan.service < len(services):
        service = services[plan.service]
        msg.service_id = service.service_id
        msg.carrier = service.carrier
    carrier, handling, units, penalty = (plan.carrier_micros, plan.handling_micros,
                                         plan.units_micros, plan.penalty_micros)
    cost = msg.cost
    cost.carrier_micros = carrier
    cost.handling_micros = handling
    cost.units_micros = units
    cost.split_penalty_micros = penalty
    cost.total_micros = carrier + handling + units + penalty
    msg.billable_weight_lb = min(plan.billable_lb, 2**31 - 1)
    seconds, millis = divmod(plan.ship_ms, 1000)
    msg.ship_date.seconds = seconds
    msg.ship_date.nanos = millis * 1_000_000
    seconds, millis = divmod(plan.promise_ms, 1000)
    msg.promised_delivery.seconds = seconds
    msg.promised_delivery.nanos = millis * 1_000_000
    msg.status = status
    if wave_id:
        msg.wave_id = wave_id
    if tracking_number:
        msg.tracking_number = tracking_number
    sku_ids = catalog.sku_ids
    lines = msg.lines
    for line in plan.lines:
        qty = quantities.get(line.line_id, 0)
        if qty:
            entry = lines.add()
            entry.line_id = line.line_id
            entry.sku_id = sku_ids[line.sku]
            entry.quantity = qty
            if line.substitutes_sku >= 0:
                entry.substitutes_sku_id = sku_ids[line.substitutes_sku]
    return msg


def allocation_to_proto(ledger: Ledger, record: OrderRecord, decision: Decision | None,
                        explain: bool, into: pb.Allocation | None = None,
                        full: bool = True) -> pb.Allocation:
    """The order as it stands: live packages, open backorders, and the last decision's why.
    With `into` (an empty Allocation, such as a response's field), written there. Without
    `full` (ALLOCATION_VIEW_BASIC), the outcome only: no packages, backorders or rule."""
    book = ledger.orders
    msg = pb.Allocation() if into is None else into
    msg.order_id = record.spec.order_id
    msg.status = pb.OrderStatus.ValueType(int(record.status))
    promised = 0
    total = 0
    units = 0
    packages = book.packages
    replanned = PackageStatus.REPLANNED
    for package_id in record.package_ids:
        state = packages[package_id]
        if not state.quantities:
            continue
        if full:
            _plan_to_proto(ledger, state.plan, state.quantities, int(state.status),
                           state.wave_id, state.tracking_number, msg.packages)
        if state.status == replanned:
            continue  # superseded: shown, but neither shipped nor charged
        units += sum(state.quantities.values())
        plan = state.plan
        promised = max(promised, plan.promise_ms)
        total += plan.carrier_micros + plan.handling_micros + plan.units_micros + (
            plan.penalty_micros)
    catalog = ledger.catalog
    if full:
        for backorder in record.backorders.values():
            entry = msg.backorders.add(line_id=backorder.line_id,
                                       sku_id=catalog.sku_ids[backorder.sku],
                                       quantity=backorder.quantity)
            if backorder.promise_ms:
                entry.promised_date.CopyFrom(timestamp(backorder.promise_ms))
    msg.total_cost_micros = total
    msg.placed_units = units
    if promised:
        msg.promised_delivery.CopyFrom(timestamp(promised))
    decision = decision or record.last_decision
    if decision is not None:
        if full:
            msg.rule = decision.rule
        msg.method = (pb.ALLOCATION_METHOD_EXACT if decision.method == 0
                      else pb.ALLOCATION_METHOD_HEURISTIC)
        if explain:
            _add_options(msg, decision)
    return msg


def full_view(view: int, explain: bool) -> bool:
    """Whether an allocation request's `view` asks for the full allocation; raises
    InvalidArgument for an unknown view, or explain without the full view."""
    if view in (pb.ALLOCATION_VIEW_UNSPECIFIED, pb.ALLOCATION_VIEW_FULL):
        return True
    if view != pb.ALLOCATION_VIEW_BASIC:
        raise InvalidArgument(f"view: {view} is not an allocation view", "view")
    if explain:
        raise InvalidArgument("explain needs the full view (ALLOCATION_VIEW_FULL)", "explain")
    return False


def quote_to_proto(ledger: Ledger, order_id: str, decision: Decision,
                   explain: bool) -> pb.Allocation:
    """A decision that was not recorded (QuotePromise)."""
    catalog = ledger.catalog
    msg = pb.Allocation(order_id=order_id, rule=decision.rule,
                        total_cost_micros=decision.cost_micros,
                        placed_units=sum(line.quantity for plan in decision.packages
                                         for line in plan.lines),
                        method=pb.ALLOCATION_METHOD_EXACT if decision.method == 0
                        else pb.ALLOCATION_METHOD_HEURISTIC)
    for plan in decision.packages:
        quantities: dict[str, int] = {}
        for line in plan.lines:
            quantities[line.line_id] = quantities.get(line.line_id, 0) + line.quantity
        msg.packages.append(_plan_to_proto(ledger, plan, quantities,
                                           int(PackageStatus.ALLOCATED)))
    if decision.packages:
        msg.promised_delivery.CopyFrom(timestamp(max(p.promise_ms for p in decision.packages)))
    for backorder in decision.backorders:
        entry = msg.backorders.add(line_id=backorder.line_id,
                                   sku_id=catalog.sku_ids[backorder.sku],
                                   quantity=backorder.quantity)
        if backorder.promise_ms:
            entry.promised_date.CopyFrom(timestamp(backorder.promise_ms))
    if decision.packages and decision.backorders:
        msg.status = pb.ORDER_STATUS_PARTIALLY_ALLOCATED
    elif decision.packages:
        msg.status = pb.ORDER_STATUS_ALLOCATED
    else:
        msg.status = pb.ORDER_STATUS_BACKORDERED
    if explain:
        _add_options(msg, decision)
    return msg


def exception_to_proto(record: ExceptionRecord) -> pb.OrderException:
    msg = pb.OrderException(
        exception_id=record.exception_id,
        type=pb.ExceptionType.ValueType(int(record.exception_type)),
        order_id=record.order_id, detail=record.detail, resolved=record.resolved,
        resolution=record.resolution.name if record.resolution is not None else "",
        create_time=timestamp(record.created_ms), owner_role=record.owner_role,
        reference=record.reference)
    if record.resolved:
        msg.resolve_time.CopyFrom(timestamp(record.resolved_ms))
        msg.resolution_note = record.note
    return msg


def exception_type_from_proto(value: int, field: str) -> ExceptionType | None:
    if value == pb.EXCEPTION_TYPE_UNSPECIFIED:
        return None
    try:
        return ExceptionType(value)
    except ValueError:
        raise InvalidArgument(f"{field}: {value} is not an exception type", field) from None


def _add_options(msg: Any, decision: Decision) -> None:
    """The options a decision weighed, the chosen one marked (for explain=true)."""
    for option in decision.options:
        msg.options.add(kind=pb.OptionKind.ValueType(int(option.kind)),
                        feasible=option.feasible, total_cost_micros=option.cost_micros,
                        packages=option.packages, chosen=option.chosen, detail=option.detail)
