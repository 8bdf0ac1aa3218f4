"""allocd.v1.DiagnosticsService: echo calls that measure the transport on the same server."""

from __future__ import annotations

from collections.abc import AsyncIterator

from allocd.v1 import diagnostics_service_pb2 as pb
from allocd.v1 import diagnostics_service_pb2_grpc as pb_grpc

from service.errors import Context


class DiagnosticsServicer(pb_grpc.DiagnosticsServiceServicer):
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
        return pb.EchoBatchResponse(payloads=list(request.payloads))
