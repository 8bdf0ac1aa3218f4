"""Bad input of every kind: the exact status code, and the ledger left exactly as it was.

Every rejection goes through `api.rejects`, which compares GetLedgerSummary's checksum
and last_sequence before and after the call. The module's server has
max_lines_per_request=50 and max_message_bytes=64 KiB (see conftest.e2e_settings).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from allocd.v1 import catalog_service_pb2 as cat_pb
from allocd.v1 import diagnostics_service_pb2 as diag
from allocd.v1 import inventory_service_pb2 as inv
from allocd.v1 import types_pb2 as types
from google.protobuf.timestamp_pb2 import Timestamp

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION

# Stock the module's catalogue starts with (see `world`).
STOCK = 10


def later(days: float = 1.0) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(time.time_ns() // 1_000_000 + int(days * 86_400_000))
    return stamp


class World:
    """A catalogue with stock and one open reservation, shared by the module's tests.

    sku[0] has STOCK units AVAILABLE at node[0]; sku[1] has STOCK at node[1] and one of
    them reserved; sku[2] has none anywhere.
    """

    def __init__(self, api: Any) -> None:
        self.api = api
        cat = api.seed(n_nodes=3, n_skus=3)
        self.skus, self.nodes = cat.skus, cat.nodes
        api.receive(self.skus[0], self.nodes[0], STOCK)
        api.receive(self.skus[1], self.nodes[1], STOCK)
        self.reservation_id = api.reserve([(self.skus[1], self.nodes[1], 1)]).reservation_id
        self.inbound = f"{cat.prefix}-PO"
        api.inventory.ExpectInbound(inv.ExpectInboundRequest(
            request_id=api.rid(), reference=self.inbound, lines=[
                inv.InboundLine(sku_id=self.skus[0], node_id=self.nodes[0], quantity=5,
                                expected_time=later())]))

    def call(self, name: str) -> Callable[..., Any]:
        stub = self.api.catalog if name.startswith(("Upsert", "GetSkus")) else self.api.inventory
        return getattr(stub, name)


@pytest.fixture(scope="module")
def world(api) -> World:
    return World(api)


# ---- one valid request per mutating RPC ------------------------------------------------
def valid_request(w: World, name: str) -> Any:
    sku, node, rid = w.skus[0], w.nodes[0], w.api.rid()
    requests: dict[str, Callable[[], Any]] = {
        "ReceiveInventory": lambda: inv.ReceiveInventoryRequest(request_id=rid, lines=[
            inv.ReceiptLine(sku_id=sku, node_id=node, quantity=1)]),
        "ExpectInbound": lambda: inv.ExpectInboundRequest(request_id=rid, reference="PO-9", lines=[
            inv.InboundLine(sku_id=sku, node_id=node, quantity=1, expected_time=later())]),
        "CancelInbound": lambda: inv.CancelInboundRequest(
            request_id=rid, reference=w.inbound, lines=[
                inv.InboundCancelLine(sku_id=sku, node_id=node, quantity=1)]),
        "AdjustInventory": lambda: inv.AdjustInventoryRequest(request_id=rid, lines=[
            inv.AdjustmentLine(sku_id=sku, node_id=node, delta=1,
                               reason=types.ADJUSTMENT_REASON_FOUND)]),
        "MoveInventory": lambda: inv.MoveInventoryRequest(request_id=rid, lines=[
            inv.MoveLine(sku_id=sku, node_id=node, quantity=1,
                         from_bucket=types.BUCKET_AVAILABLE,
                         to_bucket=types.BUCKET_QUARANTINED)]),
        "TransferInventory": lambda: inv.TransferInventoryRequest(
            request_id=rid, transfer_id="TR-9", from_node_id=node, to_node_id=w.nodes[1],
            expected_time=later(), lines=[inv.TransferLine(sku_id=sku, quantity=1)]),
        "ReserveInventory": lambda: inv.ReserveInventoryRequest(request_id=rid, lines=[
            inv.ReservationLine(sku_id=sku, node_id=node, quantity=1)]),
        "ReleaseReservation": lambda: inv.ReleaseReservationRequest(
            request_id=rid, reservation_id=w.reservation_id),
        "SweepExpiredReservations": lambda: inv.SweepExpiredReservationsRequest(request_id=rid),
        "SubmitCycleCount": lambda: inv.SubmitCycleCountRequest(request_id=rid, lines=[
            inv.CountLine(sku_id=sku, node_id=node, counted_quantity=STOCK + 1)]),
        "SetSafetyStock": lambda: inv.SetSafetyStockRequest(
            request_id=rid, sku_id=sku, node_id=node, quantity=1),
        "SetRingFence": lambda: inv.SetRingFenceRequest(request_id=rid, lines=[
            inv.RingFenceLine(sku_id=sku, node_id=node, channel_id="web", quantity=1)]),
        "UpsertSkus": lambda: cat_pb.UpsertSkusRequest(request_id=rid, skus=[
            types.Sku(sku_id=f"{rid}-new", name="new")]),
        "UpsertNodes": lambda: cat_pb.UpsertNodesRequest(request_id=rid, nodes=[
            types.Node(node_id=f"{rid}-new", enabled=True)]),
        "UpsertChannels": lambda: cat_pb.UpsertChannelsRequest(request_id=rid, channels=[
            types.Channel(channel_id="web", name="Web store")]),
    }
    return requests[name]()


MUTATING = ("ReceiveInventory", "ExpectInbound", "CancelInbound", "AdjustInventory",
            "MoveInventory",
            "TransferInventory", "ReserveInventory", "ReleaseReservation",
            "SweepExpiredReservations", "SubmitCycleCount", "SetSafetyStock", "SetRingFence",
            "UpsertSkus", "UpsertNodes", "UpsertChannels")


@pytest.mark.parametrize("name", MUTATING)
@pytest.mark.parametrize("request_id", ["", "x" * 129, "bad\nid"],
                         ids=["missing", "too-long", "control-character"])
def test_a_mutating_call_without_a_valid_request_id_is_rejected(world, name, request_id):
    request = valid_request(world, name)
    request.request_id = request_id
    error = world.api.rejects(INVALID, world.call(name), request)
    assert "request_id" in error.details()


# ---- quantities ------------------------------------------------------------------------
def with_quantity(w: World, name: str, quantity: int) -> Any:
    request = valid_request(w, name)
    line = request.lines[0] if name != "SetSafetyStock" else request
    attribute = {"AdjustInventory": "delta",
                 "SubmitCycleCount": "counted_quantity"}.get(name, "quantity")
    setattr(line, attribute, quantity)
    return request


QUANTITY_RPCS = ("ReceiveInventory", "ExpectInbound", "CancelInbound", "MoveInventory",
                 "TransferInventory", "ReserveInventory")


@pytest.mark.parametrize("quantity", [0, -1, -INT64_MAX - 1])
@pytest.mark.parametrize("name", QUANTITY_RPCS)
def test_zero_and_negative_quantities_are_invalid(world, name, quantity):
    world.api.rejects(INVALID, world.call(name), with_quantity(world, name, quantity),
                      details="quantity")


@pytest.mark.parametrize(("name", "quantity"), [
    ("AdjustInventory", 0),
    ("SubmitCycleCount", -1),
    ("SetSafetyStock", -1),
    ("SetRingFence", -1),
])
def test_negative_counts_settings_and_zero_adjustments_are_invalid(world, name, quantity):
    world.api.rejects(INVALID, world.call(name), with_quantity(world, name, quantity))


@pytest.mark.parametrize("quantity", [INT32_MAX + 1, INT64_MAX], ids=["int32-max+1", "int64-max"])
@pytest.mark.parametrize("name", (*QUANTITY_RPCS, "AdjustInventory", "SubmitCycleCount",
                                  "SetSafetyStock", "SetRingFence"))
def test_quantities_above_the_int32_range_are_invalid(world, name, quantity):
    world.api.rejects(INVALID, world.call(name), with_quantity(world, name, quantity))


@pytest.mark.parametrize("delta", [-(INT32_MAX + 1), -INT64_MAX - 1])
def test_adjustments_below_the_int32_range_are_invalid(world, delta):
    request = with_quantity(world, "AdjustInventory", delta)
    request.lines[0].reason = types.ADJUSTMENT_REASON_CORRECTION
    world.api.rejects(INVALID, world.call("AdjustInventory"), request, details="delta")


def test_receiving_past_the_int32_limit_of_a_bucket_is_refused(world):
    world.api.rejects(PRECONDITION, world.call("ReceiveInventory"),
                      with_quantity(world, "ReceiveInventory", INT32_MAX))


# ---- unknown references ---------------------------------------------------------------
def unknown(w: World, case: str) -> tuple[str, Any]:
    sku, node, rid = w.skus[0], w.nodes[0], w.api.rid()
    missing = f"{rid}-missing"
    cases: dict[str, Callable[[], tuple[str, Any]]] = {
        "receive-sku": lambda: ("ReceiveInventory", inv.ReceiveInventoryRequest(
            request_id=rid, lines=[inv.ReceiptLine(sku_id=missing, node_id=node, quantity=1)])),
        "receive-node": lambda: ("ReceiveInventory", inv.ReceiveInventoryRequest(
            request_id=rid, lines=[inv.ReceiptLine(sku_id=sku, node_id=missing, quantity=1)])),
        "receive-inbound": lambda: ("ReceiveInventory", inv.ReceiveInventoryRequest(
            request_id=rid, lines=[inv.ReceiptLine(sku_id=sku, node_id=node, quantity=1,
                                                   inbound_reference=missing)])),
        "receive-inbound-elsewhere": lambda: ("ReceiveInventory", inv.ReceiveInventoryRequest(
            request_id=rid, lines=[inv.ReceiptLine(sku_id=sku, node_id=w.nodes[1], quantity=1,
                                                   inbound_reference=w.inbound)])),
        "expect-sku": lambda: ("ExpectInbound", inv.ExpectInboundRequest(
            request_id=rid, reference="PO", lines=[inv.InboundLine(
                sku_id=missing, node_id=node, quantity=1, expected_time=later())])),
        "cancel-inbound": lambda: ("CancelInbound", inv.CancelInboundRequest(
            request_id=rid, reference=missing)),
        "cancel-inbound-sku": lambda: ("CancelInbound", inv.CancelInboundRequest(
            request_id=rid, reference=w.inbound, lines=[inv.InboundCancelLine(
                sku_id=missing, node_id=node, quantity=1)])),
        "cancel-inbound-elsewhere": lambda: ("CancelInbound", inv.CancelInboundRequest(
            request_id=rid, reference=w.inbound, lines=[inv.InboundCancelLine(
                sku_id=sku, node_id=w.nodes[1], quantity=1)])),
        "adjust-node": lambda: ("AdjustInventory", inv.AdjustInventoryRequest(
            request_id=rid, lines=[inv.AdjustmentLine(
                sku_id=sku, node_id=missing, delta=1, reason=types.ADJUSTMENT_REASON_FOUND)])),
        "move-sku": lambda: ("MoveInventory", inv.MoveInventoryRequest(
            request_id=rid, lines=[inv.MoveLine(
                sku_id=missing, node_id=node, quantity=1, from_bucket=types.BUCKET_AVAILABLE,
                to_bucket=types.BUCKET_RETURNED)])),
        "transfer-from-node": lambda: ("TransferInventory", inv.TransferInventoryRequest(
            request_id=rid, transfer_id="TR", from_node_id=missing, to_node_id=node,
            expected_time=later(), lines=[inv.TransferLine(sku_id=sku, quantity=1)])),
        "transfer-to-node": lambda: ("TransferInventory", inv.TransferInventoryRequest(
            request_id=rid, transfer_id="TR", from_node_id=node, to_node_id=missing,
            expected_time=later(), lines=[inv.TransferLine(sku_id=sku, quantity=1)])),
        "transfer-sku": lambda: ("TransferInventory", inv.TransferInventoryRequest(
            request_id=rid, transfer_id="TR", from_node_id=node, to_node_id=w.nodes[1],
            expected_time=later(), lines=[inv.TransferLine(sku_id=missing, quantity=1)])),
        "reserve-sku": lambda: ("ReserveInventory", inv.ReserveInventoryRequest(
            request_id=rid, lines=[inv.ReservationLine(sku_id=missing, node_id=node,
                                                       quantity=1)])),
        "reserve-node": lambda: ("ReserveInventory", inv.ReserveInventoryRequest(
            request_id=rid, lines=[inv.ReservationLine(sku_id=sku, node_id=missing,
                                                       quantity=1)])),
        "reserve-channel": lambda: ("ReserveInventory", inv.ReserveInventoryRequest(
            request_id=rid, channel_id=missing, lines=[inv.ReservationLine(
                sku_id=sku, node_id=node, quantity=1)])),
        "release-reservation": lambda: ("ReleaseReservation", inv.ReleaseReservationRequest(
            request_id=rid, reservation_id=missing)),
        "get-reservation": lambda: ("GetReservation", inv.GetReservationRequest(
            reservation_id=missing)),
        "count-sku": lambda: ("SubmitCycleCount", inv.SubmitCycleCountRequest(
            request_id=rid, lines=[inv.CountLine(sku_id=missing, node_id=node,
                                                 counted_quantity=1)])),
        "safety-sku": lambda: ("SetSafetyStock", inv.SetSafetyStockRequest(
            request_id=rid, sku_id=missing, quantity=1)),
        "safety-node": lambda: ("SetSafetyStock", inv.SetSafetyStockRequest(
            request_id=rid, node_id=missing, quantity=1)),
        "fence-channel": lambda: ("SetRingFence", inv.SetRingFenceRequest(
            request_id=rid, lines=[inv.RingFenceLine(sku_id=sku, node_id=node,
                                                     channel_id=missing, quantity=1)])),
        "fence-sku": lambda: ("SetRingFence", inv.SetRingFenceRequest(
            request_id=rid, lines=[inv.RingFenceLine(sku_id=missing, node_id=node,
                                                     channel_id="web", quantity=1)])),
        "availability-sku": lambda: ("GetAvailability", inv.GetAvailabilityRequest(
            sku_ids=[sku, missing])),
        "availability-node": lambda: ("GetAvailability", inv.GetAvailabilityRequest(
            sku_ids=[sku], node_ids=[node, missing])),
        "availability-channel": lambda: ("GetAvailability", inv.GetAvailabilityRequest(
            sku_ids=[sku], channel_id=missing)),
        "stock-levels-sku": lambda: ("GetStockLevels", inv.GetStockLevelsRequest(
            sku_ids=[missing])),
        "stock-levels-node": lambda: ("GetStockLevels", inv.GetStockLevelsRequest(
            sku_ids=[sku], node_ids=[missing])),
        "get-skus": lambda: ("GetSkus", cat_pb.GetSkusRequest(sku_ids=[sku, missing])),
    }
    return cases[case]()


UNKNOWN_CASES = ("receive-sku", "receive-node", "receive-inbound", "receive-inbound-elsewhere",
                 "expect-sku", "cancel-inbound", "cancel-inbound-sku",
                 "cancel-inbound-elsewhere", "adjust-node", "move-sku", "transfer-from-node",
                 "transfer-to-node", "transfer-sku", "reserve-sku", "reserve-node",
                 "reserve-channel", "release-reservation", "get-reservation", "count-sku",
                 "safety-sku", "safety-node", "fence-channel", "fence-sku", "availability-sku",
                 "availability-node", "availability-channel", "stock-levels-sku",
                 "stock-levels-node", "get-skus")


@pytest.mark.parametrize("case", UNKNOWN_CASES)
def test_unknown_skus_nodes_channels_and_reservations_are_not_found(world, case):
    name, request = unknown(world, case)
    error = world.api.rejects(NOT_FOUND, world.call(name), request)
    named = (world.inbound if case in ("receive-inbound-elsewhere", "cancel-inbound-elsewhere")
             else "-missing")
    assert named in error.details()


# ---- empty and oversized requests -------------------------------------------------------
LINE_RPCS = ("ReceiveInventory", "ExpectInbound", "AdjustInventory", "MoveInventory",
             "TransferInventory", "ReserveInventory", "SubmitCycleCount", "SetRingFence")
LIST_FIELD = {"UpsertSkus": "skus", "UpsertNodes": "nodes", "UpsertChannels": "channels"}


# (CancelInbound without lines cancels all the reference has in transit: not a bad request.)
@pytest.mark.parametrize("name", (*LINE_RPCS, *LIST_FIELD))
def test_a_request_with_no_lines_is_invalid(world, name):
    request = valid_request(world, name)
    request.ClearField(LIST_FIELD.get(name, "lines"))
    world.api.rejects(INVALID, world.call(name), request)


@pytest.mark.parametrize("name", ["GetAvailability", "GetStockLevels"])
def test_a_query_without_sku_ids_is_invalid(world, name):
    request_type = {"GetAvailability": inv.GetAvailabilityRequest,
                    "GetStockLevels": inv.GetStockLevelsRequest}[name]
    world.api.rejects(INVALID, world.call(name), request_type(node_ids=[world.nodes[0]]))


@pytest.mark.parametrize("name", ["GetAvailability", "GetStockLevels"])
def test_a_query_naming_a_node_twice_is_invalid(world, name):
    """A node named twice would count its stock twice: available-to-sell and the promise
    at several times what the node can sell."""
    request_type = {"GetAvailability": inv.GetAvailabilityRequest,
                    "GetStockLevels": inv.GetStockLevelsRequest}[name]
    sku, (first, second) = world.skus[0], world.nodes[:2]
    error = world.api.rejects(INVALID, world.call(name), request_type(
        sku_ids=[sku], node_ids=[first, second, first]))
    assert f"node {first!r} is named more than once" in error.details(), error.details()


def too_many(w: World, name: str, count: int) -> Any:
    if name in ("GetAvailability", "GetStockLevels", "GetSkus"):
        request_type = {"GetAvailability": inv.GetAvailabilityRequest,
                        "GetStockLevels": inv.GetStockLevelsRequest,
                        "GetSkus": cat_pb.GetSkusRequest}[name]
        return request_type(sku_ids=[w.skus[0]] * count)
    request = valid_request(w, name)
    if name in LIST_FIELD:
        items = getattr(request, LIST_FIELD[name])
        template = items[0]
        del items[:]
        for i in range(count):
            item = items.add()
            item.CopyFrom(template)
            # distinct ids, so the only thing wrong is the count
            id_field = {"skus": "sku_id", "nodes": "node_id", "channels": "channel_id"}[
                LIST_FIELD[name]]
            setattr(item, id_field, f"{getattr(template, id_field)}-{i}")
        return request
    template = request.lines[0]
    request.lines.extend([template] * (count - 1))
    return request


@pytest.mark.parametrize("name", (*LINE_RPCS, *LIST_FIELD, "CancelInbound", "GetAvailability",
                                  "GetStockLevels", "GetSkus"))
def test_more_lines_than_max_lines_per_request_is_invalid(world, name):
    limit = world.api.settings.max_lines_per_request
    error = world.api.rejects(INVALID, world.call(name), too_many(world, name, limit + 1))
    assert "max_lines_per_request" in error.details()
    assert str(limit) in error.details()


def test_exactly_max_lines_per_request_lines_are_accepted(world):
    api = world.api
    limit = api.settings.max_lines_per_request
    sku, node = world.skus[2], world.nodes[2]
    answer = api.inventory.ReceiveInventory(inv.ReceiveInventoryRequest(
        request_id=api.rid(), lines=[inv.ReceiptLine(sku_id=sku, node_id=node, quantity=1)
                                     for _ in range(limit)]))
    assert answer.result.event_count == limit
    assert api.level(sku, node).available == limit


def test_a_message_above_max_message_bytes_is_resource_exhausted(world):
    api = world.api
    request = valid_request(world, "ReceiveInventory")
    request.reference = "r" * (api.settings.max_message_bytes + 1024)
    api.rejects(grpc.StatusCode.RESOURCE_EXHAUSTED, api.inventory.ReceiveInventory, request)


def test_an_echo_above_max_message_bytes_is_resource_exhausted(world):
    api = world.api
    with pytest.raises(grpc.RpcError) as caught:
        api.diagnostics.Echo(diag.EchoRequest(payload=b"x" * (api.settings.max_message_bytes + 1)))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# ---- enums -----------------------------------------------------------------------------------
def enum_case(w: World, case: str) -> tuple[str, Any]:
    request: Any
    if case.startswith("receive"):
        request = valid_request(w, "ReceiveInventory")
        request.lines[0].to_bucket = {"receive-99": 99, "receive-reserved": types.BUCKET_RESERVED,
                                      "receive-external": types.BUCKET_EXTERNAL}[case]
        return "ReceiveInventory", request
    if case.startswith("adjust"):
        request = valid_request(w, "AdjustInventory")
        line = request.lines[0]
        if case == "adjust-reason-unspecified":
            line.reason = types.ADJUSTMENT_REASON_UNSPECIFIED
        elif case == "adjust-reason-99":
            line.reason = 99
        elif case == "adjust-bucket-reserved":
            line.bucket = types.BUCKET_RESERVED
        elif case == "adjust-bucket-99":
            line.bucket = 99
        elif case == "adjust-wrong-sign":
            line.reason = types.ADJUSTMENT_REASON_DAMAGE  # damage must decrease stock
        return "AdjustInventory", request
    if case.startswith("move"):
        request = valid_request(w, "MoveInventory")
        line = request.lines[0]
        if case == "move-from-unspecified":
            line.from_bucket = types.BUCKET_UNSPECIFIED
        elif case == "move-to-99":
            line.to_bucket = 99
        elif case == "move-to-same":
            line.to_bucket = types.BUCKET_AVAILABLE
        elif case == "move-from-in-transit":
            line.from_bucket = types.BUCKET_IN_TRANSIT
        return "MoveInventory", request
    request = valid_request(w, "UpsertNodes")
    request.nodes[0].type = 99
    return "UpsertNodes", request


ENUM_CASES = ("receive-99", "receive-reserved", "receive-external", "adjust-reason-unspecified",
              "adjust-reason-99", "adjust-bucket-reserved", "adjust-bucket-99",
              "adjust-wrong-sign", "move-from-unspecified", "move-to-99", "move-to-same",
              "move-from-in-transit", "node-type-99")


@pytest.mark.parametrize("case", ENUM_CASES)
def test_unknown_or_disallowed_enum_values_are_invalid(world, case):
    name, request = enum_case(world, case)
    world.api.rejects(INVALID, world.call(name), request)


# ---- state preconditions ----------------------------------------------------------------
def test_cannot_reserve_more_than_available(world):
    api = world.api
    request = inv.ReserveInventoryRequest(request_id=api.rid(), lines=[
        inv.ReservationLine(sku_id=world.skus[0], node_id=world.nodes[0], quantity=STOCK + 1)])
    error = api.rejects(PRECONDITION, api.inventory.ReserveInventory, request)
    assert world.skus[0] in error.details()
    level = api.level(world.skus[0], world.nodes[0])
    assert (level.available, level.reserved) == (STOCK, 0)


def test_cannot_reserve_at_a_node_without_stock(world):
    api = world.api
    api.rejects(PRECONDITION, api.inventory.ReserveInventory, inv.ReserveInventoryRequest(
        request_id=api.rid(), lines=[
            inv.ReservationLine(sku_id=world.skus[0], node_id=world.nodes[1], quantity=1)]))


@pytest.mark.parametrize("case", ["adjust-below-zero", "move-more-than-held",
                                  "transfer-more-than-available", "receive-more-than-inbound"])
def test_cannot_take_more_out_of_a_bucket_than_it_holds(world, case):
    api = world.api
    sku, node = world.skus[0], world.nodes[0]
    name, request = {
        "adjust-below-zero": ("AdjustInventory", inv.AdjustInventoryRequest(
            request_id=api.rid(), lines=[inv.AdjustmentLine(
                sku_id=sku, node_id=node, delta=-(STOCK + 1),
                reason=types.ADJUSTMENT_REASON_SHRINKAGE)])),
        "move-more-than-held": ("MoveInventory", inv.MoveInventoryRequest(
            request_id=api.rid(), lines=[inv.MoveLine(
                sku_id=sku, node_id=node, quantity=1, from_bucket=types.BUCKET_RETURNED,
                to_bucket=types.BUCKET_AVAILABLE)])),
        "transfer-more-than-available": ("TransferInventory", inv.TransferInventoryRequest(
            request_id=api.rid(), transfer_id="TR-big", from_node_id=node,
            to_node_id=world.nodes[1], expected_time=later(),
            lines=[inv.TransferLine(sku_id=sku, quantity=STOCK + 1)])),
        "receive-more-than-inbound": ("ReceiveInventory", inv.ReceiveInventoryRequest(
            request_id=api.rid(), lines=[inv.ReceiptLine(
                sku_id=sku, node_id=node, quantity=6, inbound_reference=world.inbound)])),
    }[case]
    api.rejects(PRECONDITION, world.call(name), request)


def test_ring_fences_adding_up_past_int32_never_sell_more_than_available(api):
    cat = api.seed(n_nodes=1, n_skus=1)
    sku, node = cat.skus[0], cat.nodes[0]
    api.receive(sku, node, STOCK)
    try:
        api.inventory.SetRingFence(inv.SetRingFenceRequest(request_id=api.rid(), lines=[
            inv.RingFenceLine(sku_id=sku, node_id=node, channel_id="web", quantity=INT32_MAX),
            inv.RingFenceLine(sku_id=sku, node_id=node, channel_id="marketplace",
                              quantity=INT32_MAX)]))
    except grpc.RpcError as error:  # refusing fences that add up past int32 is fine too
        assert error.code() in (INVALID, PRECONDITION), error
        return
    answer = api.inventory.GetAvailability(inv.GetAvailabilityRequest(
        sku_ids=[sku], node_ids=[node], include_nodes=True))
    (entry,) = answer.skus[0].nodes
    assert entry.available_to_sell <= entry.available, (
        f"{entry.available_to_sell} sellable out of {entry.available} AVAILABLE, "
        f"fenced_for_other_channels={entry.fenced_for_other_channels}")
    assert entry.fenced_for_other_channels >= INT32_MAX
    assert entry.available_to_sell == 0
    # Without a channel every fence is another channel's: nothing may be sold, and
    # certainly not more units than the node holds.
    api.rejects(PRECONDITION, api.inventory.ReserveInventory, inv.ReserveInventoryRequest(
        request_id=api.rid(), lines=[
            inv.ReservationLine(sku_id=sku, node_id=node, quantity=STOCK + 2)]))
    level = api.level(sku, node)
    assert (level.available, level.reserved) == (STOCK, 0)


@pytest.mark.parametrize("case", ["ttl-and-expire-time", "expire-time-in-the-past",
                                  "negative-ttl", "ttl-above-maximum", "expire-time-nanos"])
def test_a_reservation_with_an_impossible_expiry_is_invalid(world, case):
    api = world.api
    request = valid_request(world, "ReserveInventory")
    if case == "ttl-and-expire-time":
        request.ttl_seconds = 60
        request.expire_time.CopyFrom(later())
    elif case == "expire-time-in-the-past":
        request.expire_time.CopyFrom(later(days=-1))
    elif case == "negative-ttl":
        request.ttl_seconds = -5
    elif case == "ttl-above-maximum":
        request.ttl_seconds = api.settings.max_reservation_ttl_s + 1
    else:
        request.expire_time.CopyFrom(later())
        request.expire_time.nanos = 2_000_000_000
    api.rejects(INVALID, api.inventory.ReserveInventory, request)


def test_a_reservation_id_in_use_cannot_be_reserved_again(world):
    api = world.api
    request = valid_request(world, "ReserveInventory")
    request.reservation_id = world.reservation_id
    api.rejects(grpc.StatusCode.ALREADY_EXISTS, api.inventory.ReserveInventory, request)


@pytest.mark.parametrize("case", ["same-node", "no-expected-time", "no-transfer-id"])
def test_a_transfer_must_name_two_nodes_an_id_and_an_arrival(world, case):
    request = valid_request(world, "TransferInventory")
    if case == "same-node":
        request.to_node_id = request.from_node_id
    elif case == "no-expected-time":
        request.ClearField("expected_time")
    else:
        request.transfer_id = ""
    world.api.rejects(INVALID, world.call("TransferInventory"), request)


@pytest.mark.parametrize("case", ["no-reference", "no-expected-time"])
def test_an_expected_inbound_needs_a_reference_and_a_date(world, case):
    request = valid_request(world, "ExpectInbound")
    if case == "no-reference":
        request.reference = ""
    else:
        request.lines[0].ClearField("expected_time")
    world.api.rejects(INVALID, world.call("ExpectInbound"), request)


def test_the_network_default_safety_stock_cannot_be_cleared(world):
    api = world.api
    api.rejects(INVALID, api.inventory.SetSafetyStock,
                inv.SetSafetyStockRequest(request_id=api.rid(), clear=True))


def test_a_cycle_count_may_count_a_sku_at_a_node_once(world):
    request = valid_request(world, "SubmitCycleCount")
    request.lines.extend([request.lines[0]])
    world.api.rejects(INVALID, world.call("SubmitCycleCount"), request)


@pytest.mark.parametrize("reservation_id", ["", "x" * 129, "bad\nid"],
                         ids=["missing", "too-long", "control-character"])
def test_a_reservation_is_looked_up_only_by_a_valid_id(world, reservation_id):
    error = world.api.rejects(INVALID, world.call("GetReservation"),
                              inv.GetReservationRequest(reservation_id=reservation_id))
    assert "reservation_id" in error.details()


def test_a_release_needs_a_reservation_id(world):
    request = valid_request(world, "ReleaseReservation")
    request.reservation_id = ""
    world.api.rejects(INVALID, world.call("ReleaseReservation"), request)


# ---- catalogue values ------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "value"), [
    ("weight_lb", math.nan), ("weight_lb", math.inf), ("weight_lb", -1.0),
    ("length_in", math.nan), ("height_in", -math.inf),
])
def test_a_sku_with_a_non_finite_or_negative_measure_is_invalid(world, field, value):
    api = world.api
    request = valid_request(world, "UpsertSkus")
    sku = request.skus[0]
    target = sku if field == "weight_lb" else sku.dimensions
    setattr(target, field, value)
    error = api.rejects(INVALID, api.catalog.UpsertSkus, request)
    assert field in error.details()
    api.rejects(NOT_FOUND, api.catalog.GetSkus, cat_pb.GetSkusRequest(sku_ids=[sku.sku_id]))


@pytest.mark.parametrize("case", ["nan-latitude", "latitude-91", "longitude-181",
                                  "negative-capacity", "duplicate-id", "empty-id"])
def test_a_node_with_impossible_attributes_is_invalid(world, case):
    request = valid_request(world, "UpsertNodes")
    node = request.nodes[0]
    if case == "nan-latitude":
        node.latitude = math.nan
    elif case == "latitude-91":
        node.latitude = 91
    elif case == "longitude-181":
        node.longitude = -181
    elif case == "negative-capacity":
        node.daily_capacity = -1
    elif case == "duplicate-id":
        request.nodes.extend([node])
    else:
        node.node_id = ""
    world.api.rejects(INVALID, world.call("UpsertNodes"), request)


def test_a_sku_listed_twice_in_one_upsert_is_invalid(world):
    request = valid_request(world, "UpsertSkus")
    request.skus.extend([request.skus[0]])
    world.api.rejects(INVALID, world.call("UpsertSkus"), request)


# ---- all or nothing --------------------------------------------------------------------------
def test_a_receipt_with_an_unknown_sku_on_line_two_of_three_changes_nothing(world):
    api = world.api
    (s0, s1, _), (n0, n1, _) = world.skus, world.nodes
    before = [api.level(s0, n0), api.level(s1, n1)]
    api.rejects(NOT_FOUND, api.inventory.ReceiveInventory, inv.ReceiveInventoryRequest(
        request_id=api.rid(), lines=[
            inv.ReceiptLine(sku_id=s0, node_id=n0, quantity=3),
            inv.ReceiptLine(sku_id="no-such-sku", node_id=n0, quantity=3),
            inv.ReceiptLine(sku_id=s1, node_id=n1, quantity=3)]))
    assert [api.level(s0, n0), api.level(s1, n1)] == before


def test_a_reservation_whose_second_of_three_lines_is_short_reserves_nothing(world):
    api = world.api
    (s0, s1, s2), (n0, n1, n2) = world.skus, world.nodes
    before = [api.level(s, n) for s, n in ((s0, n0), (s1, n1), (s2, n2))]
    api.rejects(PRECONDITION, api.inventory.ReserveInventory, inv.ReserveInventoryRequest(
        request_id=api.rid(), lines=[
            inv.ReservationLine(sku_id=s0, node_id=n0, quantity=2),
            inv.ReservationLine(sku_id=s1, node_id=n1, quantity=STOCK),
            inv.ReservationLine(sku_id=s0, node_id=n0, quantity=1)]))
    assert [api.level(s, n) for s, n in ((s0, n0), (s1, n1), (s2, n2))] == before


def test_a_receipt_overflowing_on_line_two_of_three_receives_nothing(world):
    api = world.api
    (s0, s1, _), (n0, n1, _) = world.skus, world.nodes
    before = [api.level(s0, n0), api.level(s1, n1)]
    api.rejects(PRECONDITION, api.inventory.ReceiveInventory, inv.ReceiveInventoryRequest(
        request_id=api.rid(), lines=[
            inv.ReceiptLine(sku_id=s1, node_id=n1, quantity=5),
            inv.ReceiptLine(sku_id=s0, node_id=n0, quantity=INT32_MAX - 1),
            inv.ReceiptLine(sku_id=s0, node_id=n0, quantity=5)]))
    assert [api.level(s0, n0), api.level(s1, n1)] == before


def test_an_adjustment_with_a_wrong_sign_on_line_two_of_three_changes_nothing(world):
    api = world.api
    sku, node = world.skus[0], world.nodes[0]
    api.rejects(INVALID, api.inventory.AdjustInventory, inv.AdjustInventoryRequest(
        request_id=api.rid(), lines=[
            inv.AdjustmentLine(sku_id=sku, node_id=node, delta=1,
                               reason=types.ADJUSTMENT_REASON_FOUND),
            inv.AdjustmentLine(sku_id=sku, node_id=node, delta=1,
                               reason=types.ADJUSTMENT_REASON_SHRINKAGE),
            inv.AdjustmentLine(sku_id=sku, node_id=node, delta=-1,
                               reason=types.ADJUSTMENT_REASON_DAMAGE)]))
    assert api.level(sku, node).available == STOCK


def test_a_sku_upsert_with_a_nan_weight_on_line_two_of_three_creates_no_sku(world):
    api = world.api
    rid = api.rid()
    ids = [f"{rid}-{i}" for i in range(3)]
    api.rejects(INVALID, api.catalog.UpsertSkus, cat_pb.UpsertSkusRequest(
        request_id=rid, skus=[types.Sku(sku_id=ids[0], weight_lb=1.0),
                              types.Sku(sku_id=ids[1], weight_lb=math.nan),
                              types.Sku(sku_id=ids[2], weight_lb=1.0)]))
    for sku_id in ids:
        api.rejects(NOT_FOUND, api.catalog.GetSkus, cat_pb.GetSkusRequest(sku_ids=[sku_id]))


def test_a_ring_fence_with_an_unknown_channel_on_line_two_of_three_sets_no_fence(world):
    api = world.api
    sku, node = world.skus[0], world.nodes[0]
    api.rejects(NOT_FOUND, api.inventory.SetRingFence, inv.SetRingFenceRequest(
        request_id=api.rid(), lines=[
            inv.RingFenceLine(sku_id=sku, node_id=node, channel_id="web", quantity=4),
            inv.RingFenceLine(sku_id=sku, node_id=node, channel_id="no-such", quantity=4),
            inv.RingFenceLine(sku_id=sku, node_id=node, channel_id="marketplace",
                              quantity=4)]))
    assert api.sellable(sku, [node]) == STOCK
