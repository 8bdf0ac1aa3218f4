"""allocd.v1.InventoryService: translates protos to core commands and results back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from allocd.v1 import inventory_service_pb2 as pb
from allocd.v1 import inventory_service_pb2_grpc as pb_grpc
from allocd.v1 import types_pb2

from core import commands as c
from core.availability import available_to_sell, promise_schedule
from core.errors import InvalidArgument, NotFound
from core.model import Bucket
from core.operations import CountResult, ExpireResult, Outcome, ReleaseResult, ReserveResult
from core.validation import check_identifier
from service.codec import (
    bucket_from_proto,
    event_to_proto,
    ms_from_timestamp,
    reason_from_proto,
    timestamp,
)
from service.engine import Engine
from service.errors import Context, caller, check_count, streaming, unary


def mutation_result(outcome: Outcome) -> types_pb2.MutationResult:
    if not outcome.events:
        return types_pb2.MutationResult()
    return types_pb2.MutationResult(first_sequence=outcome.events[0].seq,
                                    last_sequence=outcome.events[-1].seq,
                                    event_count=len(outcome.events),
                                    backorders_filled=outcome.filled)


#: Beyond any sequence number the log will reach (at a billion events a second, 292 years):
#: a watcher starting above it would wait for ever.
MAX_SEQUENCE = (1 << 63) - 1

class InventoryServicer(pb_grpc.InventoryServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.settings = engine.settings

    def _lines(self, lines: Any, field: str = "lines") -> Any:
        check_count(len(lines), self.settings.max_lines_per_request, field,
                    "max_lines_per_request")
        return lines

    # ---- mutations ---------------------------------------------------------------
    @unary
    async def ReceiveInventory(self, request: pb.ReceiveInventoryRequest,
                               context: Context) -> pb.ReceiveInventoryResponse:
        def build() -> c.Command:
            return c.ReceiveStock(tuple(
                c.ReceiptLine(line.sku_id, line.node_id, line.quantity,
                              bucket_from_proto(line.to_bucket, f"lines[{i}].to_bucket",
                                                Bucket.AVAILABLE),
                              line.inbound_reference, line.unit_cost_micros)
                for i, line in enumerate(self._lines(request.lines))), request.reference)

        return await self.engine.mutate(
            "ReceiveInventory", request, build,
            lambda o: pb.ReceiveInventoryResponse(result=mutation_result(o)))

    @unary
    async def ExpectInbound(self, request: pb.ExpectInboundRequest,
                            context: Context) -> pb.ExpectInboundResponse:
        def build() -> c.Command:
            return c.ExpectInbound(request.reference, tuple(
                c.InboundLine(line.sku_id, line.node_id, line.quantity,
                              ms_from_timestamp(line.expected_time, f"lines[{i}].expected_time"),
                              line.unit_cost_micros)
                for i, line in enumerate(self._lines(request.lines))))

        return await self.engine.mutate(
            "ExpectInbound", request, build,
            lambda o: pb.ExpectInboundResponse(result=mutation_result(o)))

    @unary
    async def CancelInbound(self, request: pb.CancelInboundRequest,
                            context: Context) -> pb.CancelInboundResponse:
        def build() -> c.Command:
            return c.CancelInbound(request.reference, tuple(
                c.StockLine(line.sku_id, line.node_id, line.quantity)
                for line in self._lines(request.lines)))

        return await self.engine.mutate(
            "CancelInbound", request, build,
            lambda o: pb.CancelInboundResponse(result=mutation_result(o)))

    @unary
    async def AdjustInventory(self, request: pb.AdjustInventoryRequest,
                              context: Context) -> pb.AdjustInventoryResponse:
        actor, _ = caller(context)

        def build() -> c.Command:
            return c.AdjustStock(tuple(
                c.AdjustLine(line.sku_id, line.node_id, line.delta,
                             reason_from_proto(line.reason, f"lines[{i}].reason"),
                             bucket_from_proto(line.bucket, f"lines[{i}].bucket",
                                               Bucket.AVAILABLE))
                for i, line in enumerate(self._lines(request.lines))), request.reference, actor)

        return await self.engine.mutate(
            "AdjustInventory", request, build,
            lambda o: pb.AdjustInventoryResponse(result=mutation_result(o),
                                                 approval_id=o.detail or ""))

    @unary
    async def MoveInventory(self, request: pb.MoveInventoryRequest,
                            context: Context) -> pb.MoveInventoryResponse:
        def build() -> c.Command:
            return c.MoveStock(tuple(
                c.MoveLine(line.sku_id, line.node_id, line.quantity,
                           bucket_from_proto(line.from_bucket, f"lines[{i}].from_bucket"),
                           bucket_from_proto(line.to_bucket, f"lines[{i}].to_bucket"))
                for i, line in enumerate(self._lines(request.lines))), request.reference)

        return await self.engine.mutate(
            "MoveInventory", request, build,
            lambda o: pb.MoveInventoryResponse(result=mutation_result(o)))

    @unary
    async def TransferInventory(
        self, request: pb.TransferInventoryRequest, context: Context,
    ) -> pb.TransferInventoryResponse:
        def build() -> c.Command:
            return c.TransferStock(
                request.transfer_id, request.from_node_id, request.to_node_id,
                ms_from_timestamp(request.expected_time, "expected_time"),
                tuple(c.TransferLine(line.sku_id, line.quantity)
                      for line in self._lines(request.lines)))

        return await self.engine.mutate(
            "TransferInventory", request, build,
            lambda o: pb.TransferInventoryResponse(result=mutation_result(o)))

    @unary
    async def ReserveInventory(self, request: pb.ReserveInventoryRequest,
                               context: Context) -> pb.ReserveInventoryResponse:
        settings = self.settings

        def build() -> c.Command:
            now = self.engine.clock()
            if request.HasField("expire_time") and request.ttl_seconds:
                raise InvalidArgument("give expire_time or ttl_seconds, not both", "ttl_seconds")
            if request.HasField("expire_time"):
                expires = ms_from_timestamp(request.expire_time, "expire_time")
            else:
                ttl = request.ttl_seconds or settings.default_reservation_ttl_s
                if ttl < 0:
                    raise InvalidArgument("ttl_seconds must be positive", "ttl_seconds")
                expires = now + ttl * 1000
            if expires - now > settings.max_reservation_ttl_s * 1000:
                raise InvalidArgument(
                    f"a reservation may last at most {settings.max_reservation_ttl_s} s "
                    "(max_reservation_ttl_s)", "expire_time")
            return c.ReserveStock(
                request.reservation_id or request.request_id, request.channel_id,
                expires, tuple(c.StockLine(line.sku_id, line.node_id, line.quantity)
                               for line in self._lines(request.lines)))

        def respond(o: Outcome) -> pb.ReserveInventoryResponse:
            response = pb.ReserveInventoryResponse(result=mutation_result(o))
            if isinstance(o.detail, ReserveResult):
                response.reservation_id = o.detail.reservation_id
                response.expire_time.CopyFrom(timestamp(o.detail.expires_ms))
            return response

        return await self.engine.mutate("ReserveInventory", request, build, respond)

    @unary
    async def ReleaseReservation(
        self, request: pb.ReleaseReservationRequest, context: Context,
    ) -> pb.ReleaseReservationResponse:
        def respond(o: Outcome) -> pb.ReleaseReservationResponse:
            response = pb.ReleaseReservationResponse(result=mutation_result(o))
            if isinstance(o.detail, ReleaseResult):
                response.released_quantity = o.detail.released
            return response

        return await self.engine.mutate(
            "ReleaseReservation", request,
            lambda: c.ReleaseReservation(request.reservation_id), respond)

    @unary
    async def SweepExpiredReservations(
        self, request: pb.SweepExpiredReservationsRequest, context: Context,
    ) -> pb.SweepExpiredReservationsResponse:
        def respond(o: Outcome) -> pb.SweepExpiredReservationsResponse:
            response = pb.SweepExpiredReservationsResponse(result=mutation_result(o))
            if isinstance(o.detail, ExpireResult):
                response.reservation_ids.extend(o.detail.reservation_ids)
            return response

        return await self.engine.mutate(
            "SweepExpiredReservations", request, c.ExpireReservations, respond)

    @unary
    async def SubmitCycleCount(self, request: pb.SubmitCycleCountRequest,
                               context: Context) -> pb.SubmitCycleCountResponse:
        actor, _ = caller(context)

        def build() -> c.Command:
            return c.SubmitCycleCount(tuple(
                c.CountLine(line.sku_id, line.node_id, line.counted_quantity)
                for line in self._lines(request.lines)), request.reference, actor)

        def respond(o: Outcome) -> pb.SubmitCycleCountResponse:
            response = pb.SubmitCycleCountResponse(result=mutation_result(o))
            if isinstance(o.detail, CountResult):
                for line in o.detail.lines:
                    outcome = (pb.COUNT_OUTCOME_HELD_FOR_APPROVAL if line.exception_id
                               else pb.COUNT_OUTCOME_ADJUSTED if line.adjusted
                               else pb.COUNT_OUTCOME_MATCHED)
                    response.lines.add(
                        sku_id=line.sku_id, node_id=line.node_id,
                        expected_quantity=line.expected, counted_quantity=line.counted,
                        variance=line.variance, outcome=outcome, held_quantity=line.held,
                        exception_id=line.exception_id)
            return response

        return await self.engine.mutate("SubmitCycleCount", request, build, respond)

    @unary
    async def SetSafetyStock(self, request: pb.SetSafetyStockRequest,
                             context: Context) -> pb.SetSafetyStockResponse:
        def build() -> c.Command:
            if request.clear and not (request.sku_id or request.node_id):
                raise InvalidArgument("the network default cannot be cleared; set it to 0",
                                      "clear")
            return c.SetSafetyStock(request.sku_id, request.node_id,
                                    None if request.clear else request.quantity)

        return await self.engine.mutate(
            "SetSafetyStock", request, build,
            lambda o: pb.SetSafetyStockResponse(result=mutation_result(o)))

    @unary
    async def SetRingFence(self, request: pb.SetRingFenceRequest,
                           context: Context) -> pb.SetRingFenceResponse:
        def build() -> c.Command:
            return c.SetRingFence(tuple(
                c.FenceLine(line.sku_id, line.node_id, line.channel_id, line.quantity)
                for line in self._lines(request.lines)))

        return await self.engine.mutate(
            "SetRingFence", request, build,
            lambda o: pb.SetRingFenceResponse(result=mutation_result(o)))

    # ---- queries -----------------------------------------------------------------
    def _nodes(self, node_ids: Any) -> np.ndarray:
        catalog = self.engine.ledger.catalog
        if not node_ids:
            return np.arange(catalog.n_nodes, dtype=np.int64)
        self._lines(node_ids, "node_ids")
        nodes = [catalog.node(n, f"node_ids[{i}]") for i, n in enumerate(node_ids)]
        if len(set(nodes)) < len(nodes):
            # (A node named twice would be summed twice: its stock sold twice over.)
            first = next(i for i, node in enumerate(nodes) if nodes.index(node) < i)
            raise InvalidArgument(f"node {node_ids[first]!r} is named more than once",
                                  f"node_ids[{first}]")
        return np.array(nodes, dtype=np.int64)

    def _skus(self, sku_ids: Any) -> np.ndarray:
        if not sku_ids:
            raise InvalidArgument("sku_ids must not be empty", "sku_ids")
        self._lines(sku_ids, "sku_ids")
        return self.engine.ledger.catalog.skus(sku_ids)

    @unary
    async def GetAvailability(self, request: pb.GetAvailabilityRequest,
                              context: Context) -> pb.GetAvailabilityResponse:
        ledger = self.engine.ledger
        catalog = ledger.catalog
        skus = self._skus(request.sku_ids)
        nodes = self._nodes(request.node_ids)
        channel = catalog.channel(request.channel_id)
        table = available_to_sell(ledger, skus, nodes, channel)
        totals = table.total_to_sell.tolist()
        response = pb.GetAvailabilityResponse(safety_stock_applied=True,
                                              as_of_sequence=ledger.last_seq)
        node_ids = [catalog.nodes[n].node_id for n in nodes.tolist()]
        now = self.engine.clock()
        for i, sku_id in enumerate(request.sku_ids):
            entry = response.skus.add(sku_id=sku_id, available_to_sell=totals[i])
            if request.include_nodes:
                for j, node_id in enumerate(node_ids):
                    entry.nodes.add(
                        node_id=node_id, available=int(table.available[i, j]),
                        safety_stock=int(table.safety_stock[i, j]),
                        fenced_for_other_channels=int(table.fenced_for_others[i, j]),
                        available_to_sell=int(table.available_to_sell[i, j]))
            if request.include_promise_dates:
                for step in promise_schedule(ledger, table, i, channel, now):
                    entry.promise_dates.add(date=timestamp(step.date_ms), quantity=step.quantity)
        return response

    @unary
    async def GetStockLevels(self, request: pb.GetStockLevelsRequest,
                             context: Context) -> pb.GetStockLevelsResponse:
        ledger = self.engine.ledger
        catalog = ledger.catalog
        skus = self._skus(request.sku_ids)
        nodes = self._nodes(request.node_ids)
        response = pb.GetStockLevelsResponse(as_of_sequence=ledger.last_seq)
        for sku_id, sku in zip(request.sku_ids, skus.tolist(), strict=True):
            for node in nodes.tolist():
                q = ledger.buckets(sku, node).tolist()
                response.levels.add(
                    sku_id=sku_id, node_id=catalog.nodes[node].node_id,
                    available=q[Bucket.AVAILABLE], reserved=q[Bucket.RESERVED],
                    allocated=q[Bucket.ALLOCATED], quarantined=q[Bucket.QUARANTINED],
                    returned=q[Bucket.RETURNED], in_transit=q[Bucket.IN_TRANSIT],
                    safety_stock=ledger.safety_stock(sku, node))
        return response

    @unary
    async def GetReservation(self, request: pb.GetReservationRequest,
                             context: Context) -> pb.GetReservationResponse:
        ledger = self.engine.ledger
        check_identifier(request.reservation_id, "reservation_id")  # (not a missing one)
        record = ledger.reservations.by_id.get(request.reservation_id)
        if record is None:
            raise NotFound(f"no open reservation {request.reservation_id!r}", "reservation_id")
        catalog = ledger.catalog
        response = pb.GetReservationResponse(
            reservation_id=record.reservation_id,
            channel_id=catalog.channels[record.channel].channel_id if record.channel >= 0
            else "", expire_time=timestamp(record.expires_ms))
        for sku, node, qty in ledger.reservations.lines(record.reservation_id):
            response.lines.add(sku_id=catalog.sku_ids[sku], node_id=catalog.nodes[node].node_id,
                               quantity=qty)
        return response

    @unary
    async def GetLedgerSummary(
        self, request: pb.GetLedgerSummaryRequest, context: Context,
    ) -> pb.GetLedgerSummaryResponse:
        ledger = self.engine.ledger
        totals = ledger.bucket_totals().tolist()
        return pb.GetLedgerSummaryResponse(
            last_sequence=ledger.last_seq, sku_count=ledger.catalog.n_skus,
            node_count=ledger.catalog.n_nodes, available=totals[Bucket.AVAILABLE],
            reserved=totals[Bucket.RESERVED], allocated=totals[Bucket.ALLOCATED],
            quarantined=totals[Bucket.QUARANTINED], returned=totals[Bucket.RETURNED],
            in_transit=totals[Bucket.IN_TRANSIT], units_received=ledger.units_in,
            units_shipped=ledger.units_out, open_reservations=len(ledger.reservations),
            held_count_variances=len(ledger.held_variances),
            checksum=ledger.checksum() if request.include_checksum else "",
            shard_count=ledger.n_shards)

    @streaming
    async def WatchInventoryEvents(
        self, request: pb.WatchInventoryEventsRequest, context: Context,
    ) -> AsyncIterator[pb.WatchInventoryEventsResponse]:
        engine = self.engine
        if request.from_sequence > MAX_SEQUENCE:  # (would be waited for for ever)
            raise InvalidArgument(f"from_sequence is above {MAX_SEQUENCE}, beyond any event",
                                  "from_sequence")
        start = engine.durable_seq + 1 if request.live_only else max(request.from_sequence, 1)
        catalog = engine.ledger.catalog
        async for events in engine.follow(start):
            for event in events:
                yield pb.WatchInventoryEventsResponse(event=event_to_proto(event, catalog))
