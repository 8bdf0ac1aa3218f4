"""allocd.v1.OrderService: translates order protos to core commands and decisions back."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

from allocd.v1 import order_service_pb2 as pb
from allocd.v1 import order_service_pb2_grpc as pb_grpc

from core import commands as c
from core.decisions import rate_shop
from core.errors import DomainError, InvalidArgument, NotFound
from core.exceptions import ExceptionRecord, Resolution
from core.ledger import Ledger
from core.operations import Outcome
from core.order_ops import (
    AllocateResult,
    CancelResult,
    OrderOutcome,
    PackResult,
    PickResult,
    ResolveResult,
    ShipResult,
    WaveResult,
    quote_order,
)
from core.orders import Decision, OrderSpec, missing_order
from service.allocation_wire import (
    allocation_bytes,
    mutation_result_bytes,
    response_bytes,
    stream_response_bytes,
)
from service.codec import ms_from_timestamp
from service.edge import RefusedInBand
from service.engine import Engine
from service.errors import (
    Context,
    caller,
    check_count,
    status_of,
    stream_auditor,
    streaming,
    unary,
)
from service.order_codec import (
    allocation_to_proto,
    coordinates,
    exception_to_proto,
    exception_type_from_proto,
    full_view,
    order_from_proto,
    order_to_proto,
    orders_from_proto,
    quote_to_proto,
    single_order_from_proto,
)
from service.paging import page, page_by_number, page_in_number_order
from service.servicers.inventory import mutation_result
from service.servicers.reoptimize import Reoptimizer
from service.store import StoreUnavailable

#: Stream requests applied but not yet answered, at most (see AllocateStream).
STREAM_WINDOW = 256
#: The latest ready time RateShop takes: 9900-01-01 (dates a carrier's transit adds to it
#: stay timestamps).
LATEST_READY_MS = 250_246_627_200_000


def _raised_seq(record: ExceptionRecord) -> int:
    return record.seq


def _allocation(ledger: Ledger, outcome: OrderOutcome, explain: bool,
                into: pb.Allocation | None = None, full: bool = True) -> pb.Allocation:
    """The outcome as an Allocation; with `into` (an empty one), written there; without
    `full`, its basic view."""
    if outcome.error is not None:
        msg = pb.Allocation() if into is None else into
        msg.order_id = outcome.order_id
        msg.error_code = status_of(outcome.error).value[0]
        msg.error_message = outcome.error.message
        return msg
    if not explain:  # the same message, written as bytes and read in one parse: cheaper
        msg = pb.Allocation() if into is None else into
        msg.MergeFromString(_allocation_bytes(ledger, outcome, full))
        return msg
    # (the options are written by the reference only)
    msg = allocation_to_proto(ledger, ledger.orders.orders[outcome.order_id], outcome.decision,
                              explain, into, full)
    if outcome.exception_id:
        msg.exception_id = outcome.exception_id
        if outcome.exception_type is not None:
            msg.exception_type = pb.ExceptionType.ValueType(int(outcome.exception_type))
    return msg


def _allocation_bytes(ledger: Ledger, outcome: OrderOutcome, full: bool) -> bytes:
    """`_allocation(ledger, outcome, False, full=full)` as the message's bytes, for an
    outcome that is not a refusal."""
    exception_type = outcome.exception_type
    return allocation_bytes(
        ledger, ledger.orders.orders[outcome.order_id], outcome.decision, full,
        outcome.exception_id,
        int(exception_type) if outcome.exception_id and exception_type is not None else 0)


def allocations_response(ledger: Ledger, o: Outcome, explain: bool, full: bool) -> bytes:
    """An AllocateOrdersResponse for an AllocateOrders command's outcome, as the message's
    bytes: the allocations are written as bytes straight into the response's bytes
    (reading each into a message and the server writing the response out again cost
    more than writing them). Refused and explained orders take the reference's way."""
    result = o.detail
    assert isinstance(result, AllocateResult)
    allocations = [
        _allocation_bytes(ledger, outcome, full) if outcome.error is None and not explain
        else _allocation(ledger, outcome, explain, None, full).SerializeToString()
        for outcome in result.outcomes]
    return response_bytes(mutation_result(o).SerializeToString(), allocations)


class _OrderJoiner:
    """Single-order calls (AllocateOrder, AllocateStream) that arrive together become one
    AllocateOrders command: decided together in priority order, each answered alone."""

    def __init__(self, name: str, limit: int, fraud_threshold: float,
                 window_ms: float) -> None:
        self.name = name
        self.limit = limit
        self.fraud_threshold = fraud_threshold
        self.window_ms = window_ms

    def combine(self, parts: list[Any], request_ids: list[str]) -> c.Command:
        return c.AllocateOrders(tuple(parts), self.fraud_threshold, tuple(request_ids))

    def share(self, outcome: Outcome, index: int) -> Outcome:
        result = outcome.detail
        assert isinstance(result, AllocateResult)
        order = result.outcomes[index]
        if order.error is not None:
            raise order.error  # the order was refused: nothing of it was recorded
        start, stop = result.spans[index]
        return Outcome(outcome.events[start:stop], AllocateResult((order,), ((0, stop - start),)))


class OrderServicer(pb_grpc.OrderServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.settings = engine.settings
        self.reoptimizer = Reoptimizer(engine)
        # Unary calls and stream messages are joined apart: they wait for company under
        # different windows (see Settings.stream_join_window_ms).
        self.joiner = _OrderJoiner("unary", self.settings.max_orders_per_request,
                                   self.settings.fraud_threshold, self.settings.join_window_ms)
        self.stream_joiner = _OrderJoiner("stream", self.settings.max_orders_per_request,
                                          self.settings.fraud_threshold,
                                          self.settings.stream_join_window_ms)
        for joiner in (self.joiner, self.stream_joiner):  # (counted from 0 on /metrics)
            engine.joined_by.setdefault(joiner.name, [0, 0, 0])

    @property
    def ledger(self) -> Ledger:
        return self.engine.ledger

    def _allocation(self, order_id: str, decision: Decision | None) -> pb.Allocation:
        """The order's allocation as it stands after a change (without the options)."""
        return allocation_to_proto(self.ledger, self.ledger.orders.orders[order_id], decision,
                                   False)

    def _check_lines(self, order: pb.Order, field: str) -> None:
        check_count(len(order.lines), self.settings.max_lines_per_request, f"{field}.lines",
                    "max_lines_per_request")

    def _single(self, request: pb.AllocateOrderRequest | pb.AllocateStreamRequest,
                serialized: bytes | None = None) -> OrderSpec:
        full_view(request.view, request.explain)  # (a refusal here queues nothing)
        self._check_lines(request.order, "order")
        return single_order_from_proto(request, serialized)

    def _single_outcome(self, o: Outcome) -> OrderOutcome:
        assert isinstance(o.detail, AllocateResult)
        (outcome,) = o.detail.outcomes
        if outcome.error is not None:
            raise outcome.error  # the order was rejected: nothing was recorded
        return outcome

    def _single_bytes(self, o: Outcome,
                      request: pb.AllocateOrderRequest | pb.AllocateStreamRequest,
                      ) -> tuple[bytes, bytes] | None:
        """The single order's result and allocation as their messages' bytes (what
        `_allocation_into` writes, without building the messages to serialize them
        again); None for an explained order, which takes the messages' way."""
        if o.detail is None or request.explain:
            return None
        outcome = self._single_outcome(o)
        events = o.events
        result = (mutation_result_bytes(events[0].seq, events[-1].seq, len(events)) if events
                  else b"")
        return (result,
                _allocation_bytes(self.ledger, outcome, full_view(request.view, False)))

    def _allocation_into(self, field: pb.Allocation, o: Outcome,
                         request: pb.AllocateOrderRequest | pb.AllocateStreamRequest) -> None:
        """The single order's allocation, written into the response's (empty) field."""
        outcome = self._single_outcome(o)
        field.SetInParent()
        _allocation(self.ledger, outcome, request.explain, field,
                    full_view(request.view, request.explain))

    @unary
    async def AllocateOrder(  # type: ignore[override]  # (bytes are sent as they are)
            self, request: pb.AllocateOrderRequest,
            context: Context) -> pb.AllocateOrderResponse | bytes:
        def respond(o: Outcome) -> pb.AllocateOrderResponse | bytes:
            written = self._single_bytes(o, request)
            if written is not None:  # the response's bytes: sent and recorded as they are
                return response_bytes(written[0], [written[1]])
            response = pb.AllocateOrderResponse(result=mutation_result(o))
            if o.detail is not None:
                self._allocation_into(response.allocation, o, request)
            return response

        return await self.engine.mutate_joined("AllocateOrder", request,
                                               lambda: self._single(request), respond,
                                               self.joiner)

    @unary
    async def AllocateOrders(  # type: ignore[override]  # (bytes are sent as they are)
            self, request: pb.AllocateOrdersRequest,
            context: Context) -> pb.AllocateOrdersResponse | bytes:
        full = full_view(request.view, request.explain)

        def build() -> c.Command:
            check_count(len(request.orders), self.settings.max_orders_per_request, "orders",
                        "max_orders_per_request")
            for i, order in enumerate(request.orders):
                self._check_lines(order, f"orders[{i}]")
            return c.AllocateOrders(orders_from_proto(request), self.settings.fraud_threshold)

        def respond(o: Outcome) -> pb.AllocateOrdersResponse | bytes:
            if isinstance(o.detail, AllocateResult):  # (as bytes: see allocations_response)
                return allocations_response(self.ledger, o, request.explain, full)
            return pb.AllocateOrdersResponse(result=mutation_result(o))

        return await self.engine.mutate("AllocateOrders", request, build, respond)

    async def AllocateStream(  # type: ignore[override]  # (bytes are sent as they are)
        self, request_iterator: AsyncIterator[pb.AllocateStreamRequest], context: Context,
    ) -> AsyncIterator[pb.AllocateStreamResponse | bytes]:
        """Requests are answered in the order they arrive, each once durable. Up to
        STREAM_WINDOW are in flight at once: requests that arrive together (from this
        stream and other callers) are decided together, highest priority first, and
        share a commit."""
        window: asyncio.Queue[tuple[str, asyncio.Future[Any]] | None] = (
            asyncio.Queue(STREAM_WINDOW))
        loop = asyncio.get_running_loop()
        audited = stream_auditor(self.engine, context, "AllocateStream")

        def refused(request_id: str, error: DomainError | StoreUnavailable,
                    ) -> pb.AllocateStreamResponse:
            return pb.AllocateStreamResponse(
                request_id=request_id, error_code=status_of(error).value[0],
                error_message=getattr(error, "message", None) or str(error))

        def responder(request: pb.AllocateStreamRequest,
                      ) -> Callable[[Outcome], pb.AllocateStreamResponse | bytes]:
            def respond(o: Outcome) -> pb.AllocateStreamResponse | bytes:
                written = self._single_bytes(o, request)
                if written is not None:  # the response's bytes: sent and recorded as they are
                    return stream_response_bytes(request.request_id, *written)
                response = pb.AllocateStreamResponse(request_id=request.request_id,
                                                     result=mutation_result(o))
                if o.detail is not None:
                    self._allocation_into(response.allocation, o, request)
                return response

            return respond

        def submit(request: pb.AllocateStreamRequest) -> asyncio.Future[Any] | None:
            """The request queued for the next joined command (no task of its own); None
            when its request id was seen before (it must wait for that answer)."""
            # One serialization for both the fingerprint and the order's reading.
            serialized = request.SerializeToString(deterministic=True)
            try:
                # (A refusal is read by the loop below; if the stream ends first, by the
                # audit's callback.)
                return self.engine.submit_joined("AllocateStream", request,
                                                 lambda: self._single(request, serialized),
                                                 responder(request), self.stream_joiner,
                                                 serialized)
            except (DomainError, StoreUnavailable) as error:
                done = loop.create_future()
                done.set_result(refused(request.request_id, error))
                return done

        async def again(request: pb.AllocateStreamRequest,
                        ) -> pb.AllocateStreamResponse | bytes:
            """A request id seen before: the earlier call's answer (or, if that one did not
            become durable, this one run afresh)."""
            try:
                return await self.engine.mutate_joined("AllocateStream", request,
                                                       lambda: self._single(request),
                                                       responder(request), self.stream_joiner)
            except (DomainError, StoreUnavailable) as error:
                return refused(request.request_id, error)

        async def read() -> None:
            try:
                async for request in request_iterator:
                    if isinstance(request, RefusedInBand):  # (the edge's: a bad field)
                        pending = loop.create_future()
                        pending.set_result(refused(request.request_id,
                                                   InvalidArgument(request.reason)))
                        audited(request.request_id, pending)
                        await window.put((request.request_id, pending))
                        continue
                    # Queued as read: changes apply in stream order. A repeated request id
                    # is settled before the next request is read, to keep that order.
                    pending = submit(request)
                    if pending is None:
                        pending = loop.create_future()
                        pending.set_result(await again(request))
                    # Audited when settled, whether or not the caller is still there to
                    # read the answer.
                    audited(request.request_id, pending)
                    await window.put((request.request_id, pending))
            finally:
                await window.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (item := await window.get()) is not None:
                request_id, pending = item
                try:
                    response = await pending
                except (DomainError, StoreUnavailable) as error:  # this call was refused,
                    response = refused(request_id, error)  # or its commit failed
                yield response
            await reader  # the request stream's own error, if any
        finally:
            reader.cancel()

    @unary
    async def QuotePromise(self, request: pb.QuotePromiseRequest,
                           context: Context) -> pb.QuotePromiseResponse:
        self._check_lines(request.order, "order")
        spec = order_from_proto(request.order)
        if not spec.order_id:
            spec = spec._replace(order_id="quote")
        decision = quote_order(self.ledger, spec, self.engine.clock())
        return pb.QuotePromiseResponse(
            allocation=quote_to_proto(self.ledger, spec.order_id, decision, request.explain))

    @unary
    async def GetOrder(self, request: pb.GetOrderRequest,
                       context: Context) -> pb.GetOrderResponse:
        if not request.order_id:
            raise InvalidArgument("order_id is required", "order_id")
        record = self.ledger.orders.orders.get(request.order_id)
        if record is None:
            raise NotFound(missing_order(self.ledger.orders, request.order_id), "order_id")
        exceptions = self.ledger.exceptions
        return pb.GetOrderResponse(
            order=order_to_proto(record.spec),
            allocation=allocation_to_proto(self.ledger, record, None, True),
            exceptions=[exception_to_proto(exceptions.by_id[e])
                        for e in exceptions.by_order.get(request.order_id, ())])

    @unary
    async def CancelOrder(self, request: pb.CancelOrderRequest,
                          context: Context) -> pb.CancelOrderResponse:
        def build() -> c.Command:
            check_count(len(request.lines), self.settings.max_lines_per_request, "lines",
                        "max_lines_per_request")
            return c.CancelOrder(request.order_id,
                                 tuple((line.line_id, line.quantity) for line in request.lines))

        def respond(o: Outcome) -> pb.CancelOrderResponse:
            response = pb.CancelOrderResponse(result=mutation_result(o))
            if isinstance(o.detail, CancelResult):
                response.released_quantity = o.detail.released
                response.allocation.CopyFrom(self._allocation(o.detail.order_id, None))
            return response

        return await self.engine.mutate("CancelOrder", request, build, respond)

    @unary
    async def ReleaseWave(self, request: pb.ReleaseWaveRequest,
                          context: Context) -> pb.ReleaseWaveResponse:
        def respond(o: Outcome) -> pb.ReleaseWaveResponse:
            response = pb.ReleaseWaveResponse(result=mutation_result(o))
            if isinstance(o.detail, WaveResult):
                response.wave_id = o.detail.wave_id
                response.package_ids.extend(o.detail.package_ids)
            return response

        return await self.engine.mutate(
            "ReleaseWave", request,
            lambda: c.ReleaseWave(request.node_id, request.max_packages), respond)

    @unary
    async def ConfirmPick(self, request: pb.ConfirmPickRequest,
                          context: Context) -> pb.ConfirmPickResponse:
        def build() -> c.Command:
            check_count(len(request.lines), self.settings.max_lines_per_request, "lines",
                        "max_lines_per_request")
            return c.ConfirmPick(request.package_id, tuple(
                (line.line_id, line.picked_quantity) for line in request.lines))

        def respond(o: Outcome) -> pb.ConfirmPickResponse:
            response = pb.ConfirmPickResponse(result=mutation_result(o))
            if isinstance(o.detail, PickResult):
                response.short_quantity = o.detail.short
                response.exception_id = o.detail.exception_id
                decision = o.detail.outcome.decision if o.detail.outcome else None
                response.allocation.CopyFrom(self._allocation(o.detail.order_id, decision))
            return response

        return await self.engine.mutate("ConfirmPick", request, build, respond)

    @unary
    async def ConfirmPack(self, request: pb.ConfirmPackRequest,
                          context: Context) -> pb.ConfirmPackResponse:
        def build() -> c.Command:
            check_count(len(request.scanned), self.settings.max_lines_per_request, "scanned",
                        "max_lines_per_request")
            return c.ConfirmPack(request.package_id,
                                 tuple((item.sku_id, item.quantity) for item in request.scanned))

        def respond(o: Outcome) -> pb.ConfirmPackResponse:
            response = pb.ConfirmPackResponse(result=mutation_result(o))
            if isinstance(o.detail, PackResult):
                response.matched = o.detail.matched
                response.exception_id = o.detail.exception_id
            return response

        return await self.engine.mutate("ConfirmPack", request, build, respond)

    @unary
    async def ConfirmShipment(self, request: pb.ConfirmShipmentRequest,
                              context: Context) -> pb.ConfirmShipmentResponse:
        def respond(o: Outcome) -> pb.ConfirmShipmentResponse:
            response = pb.ConfirmShipmentResponse(result=mutation_result(o))
            if isinstance(o.detail, ShipResult):
                status = self.ledger.orders.orders[o.detail.order_id].status
                response.order_status = pb.OrderStatus.ValueType(int(status))
            return response

        return await self.engine.mutate(
            "ConfirmShipment", request,
            lambda: c.ConfirmShipment(request.package_id, request.tracking_number), respond)

    @unary
    async def RateShop(self, request: pb.RateShopRequest,
                       context: Context) -> pb.RateShopResponse:
        ledger = self.ledger
        node = ledger.catalog.node(request.node_id)
        network = ledger.network()
        if not network.n_services or not len(network.region_lat):
            raise InvalidArgument("no carrier network is configured", "node_id")
        ship_to = request.ship_to
        region = network.region_for(ship_to.postal_code, *coordinates(ship_to, "ship_to"))
        dims = request.dimensions
        for name, value in (("weight_lb", request.weight_lb), ("dimensions.length_in",
                            dims.length_in), ("dimensions.width_in", dims.width_in),
                            ("dimensions.height_in", dims.height_in)):
            if not math.isfinite(value) or not 0 <= value <= 10_000:
                raise InvalidArgument(f"{name} must be between 0 and 10000", name)
        if request.units < 0:
            raise InvalidArgument("units must be >= 0", "units")
        ready = (ms_from_timestamp(request.ready_time, "ready_time")
                 if request.HasField("ready_time") else self.engine.clock())
        if ready > LATEST_READY_MS:  # (its delivery date must still be a timestamp)
            raise InvalidArgument("ready_time must be before 9900-01-01", "ready_time")
        deliver_by = ms_from_timestamp(request.deliver_by, "deliver_by")
        zone, billable, quotes = rate_shop(
            network, node, region, request.weight_lb,
            dims.length_in * dims.width_in * dims.height_in,
            max(dims.length_in, dims.width_in, dims.height_in), request.units or 1, ready,
            deliver_by)
        if any(quote.cost_micros >= 2**63 for quote in quotes):
            raise InvalidArgument("the parcel would cost more than an int64 of micros holds "
                                  "by some service: weight, size or units out of range",
                                  "weight_lb")
        services = ledger.network_spec.services
        response = pb.RateShopResponse(zone=zone, billable_weight_lb=min(billable, 2**31 - 1))
        best = None
        for quote in quotes:
            service = services[quote.service]
            entry = response.quotes.add(
                service_id=service.service_id, carrier=service.carrier,
                cost_micros=quote.cost_micros, transit_days=quote.transit_days,
                meets_deadline=quote.meets_deadline)
            entry.ship_date.FromMilliseconds(quote.ship_ms)
            entry.delivery_date.FromMilliseconds(quote.delivery_ms)
            if quote.meets_deadline and (best is None or quote.cost_micros < best[0]):
                best = (quote.cost_micros, service.service_id)
        response.best_service_id = best[1] if best else ""
        return response

    @unary
    async def ListExceptions(self, request: pb.ListExceptionsRequest,
                             context: Context) -> pb.ListExceptionsResponse:
        kind = exception_type_from_proto(request.type, "type")
        book = self.ledger.exceptions

        def wanted(r: ExceptionRecord) -> bool:
            return ((kind is None or r.exception_type == kind)
                    and (request.include_resolved or not r.resolved))

        # Each listing is in the order raised (by sequence number): an order's own, every
        # one kept, or the open ones (without walking the resolved). The open ones leave
        # as they are resolved, and resolved ones with their archived order: their pages
        # go by sequence number, not position.
        if request.order_id:
            records, next_token = page([book.by_id[i] for i in book.by_order.get(
                request.order_id, [])], request, wanted)
        elif request.include_resolved:
            records, next_token = page_in_number_order(book.in_order(), request, _raised_seq,
                                                       wanted)
        else:
            records, next_token = page_by_number(
                (book.by_id[i] for i in book.open_ids), request, _raised_seq, wanted)
        return pb.ListExceptionsResponse(exceptions=[exception_to_proto(r) for r in records],
                                         next_page_token=next_token)

    @unary
    async def ResolveException(self, request: pb.ResolveExceptionRequest,
                               context: Context) -> pb.ResolveExceptionResponse:
        actor, role = caller(context)

        def build() -> c.Command:
            if request.resolution == pb.RESOLUTION_UNSPECIFIED:
                raise InvalidArgument("resolution is required", "resolution")
            try:
                resolution = Resolution(request.resolution)
            except ValueError:
                raise InvalidArgument(f"resolution {request.resolution} is unknown",
                                      "resolution") from None
            return c.ResolveException(request.exception_id, resolution, request.note,
                                      self.settings.fraud_threshold, actor, role)

        def respond(o: Outcome) -> pb.ResolveExceptionResponse:
            response = pb.ResolveExceptionResponse(result=mutation_result(o))
            if isinstance(o.detail, ResolveResult):
                record = self.ledger.exceptions.by_id[o.detail.exception_id]
                response.exception.CopyFrom(exception_to_proto(record))
                if o.detail.outcome is not None:
                    response.allocation.CopyFrom(
                        _allocation(self.ledger, o.detail.outcome, False))
            return response

        return await self.engine.mutate("ResolveException", request, build, respond)

    @streaming
    async def Reoptimize(self, request: pb.ReoptimizeRequest,
                         context: Context) -> AsyncIterator[pb.ReoptimizeResponse]:
        async for response in self.reoptimizer.run(request, context):
            yield response
