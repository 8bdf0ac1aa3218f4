"""allocd.v1.DiagnosticsService: echo calls that measure the transport on the same server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from allocd.v1 import diagnostics_service_pb2 as pb
from allocd.v1 import diagnostics_service_pb2_grpc as pb_grpc

from service.errors import Context


class DiagnosticsServicer(pb_grpc.DiagnosticsServiceServicer):
    def __init__(self, max_items: int = 1000) -> None:
        # A batch echo carries at most as many items as an AllocateOrders call: it
        # measures that call's transport, and may not hold the server to any size.
        self.max_items = max_items

    async def Echo(self, request: pb.EchoRequest,
                   context: Context) -> pb.EchoResponse:
        return pb.EchoResponse(payload=request.payload)

    async def EchoStream(
        self, request_iterator: AsyncIterator[pb.EchoStreamRequest],
        context: Context,
    ) -> AsyncIterator[pb.EchoStreamResponse]:
        async for request in request_iterator:
            yield pb.EchoStreamResponse(payload=request.payload)

    async def EchoBatch(self, request: pb.EchoBatchRequest,
                        context: Context) -> pb.EchoBatchResponse:
        count = len(request.payloads)
        if count > self.max_items:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, (
                f"payloads has {count} entries; the limit max_orders_per_request is "
                f"{self.max_items}"))
        return pb.EchoBatchResponse(payloads=list(request.payloads))
