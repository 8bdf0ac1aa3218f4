"""The edge every call passes: malformed bytes and spent deadlines never reach a servicer.

A request that does not parse as its message type is answered INVALID_ARGUMENT
(not the UNKNOWN gRPC would give); a call whose deadline has already passed is
answered DEADLINE_EXCEEDED without doing the work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError


class Malformed:
    """Stands in for a request that did not parse."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def wrap_handler(handler: Any, before: Callable[[Any], Awaitable[None]],
                 deserializer: Callable[[bytes], Any] | None = None) -> Any:
    """The same method handler with `before(context)` awaited ahead of the servicer and,
    optionally, another request deserializer."""
    deserialize = deserializer or handler.request_deserializer
    serialize = handler.response_serializer
    if handler.unary_unary:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            await before(context)
            await _reject_malformed(request, context)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, request_deserializer=deserialize, response_serializer=serialize)
    if handler.unary_stream:
        inner_us = handler.unary_stream

        async def unary_stream(request: Any, context: Any) -> Any:
            await before(context)
            await _reject_malformed(request, context)
            async for item in inner_us(request, context):
                yield item

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, request_deserializer=deserialize, response_serializer=serialize)
    if handler.stream_stream:
        inner_ss = handler.stream_stream

        async def stream_stream(requests: Any, context: Any) -> Any:
            await before(context)
            async for item in inner_ss(_checked(requests, context), context):
                yield item

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, request_deserializer=deserialize, response_serializer=serialize)
    inner_su = handler.stream_unary

    async def stream_unary(requests: Any, context: Any) -> Any:
        await before(context)
        return await inner_su(_checked(requests, context), context)

    return grpc.stream_unary_rpc_method_handler(
        stream_unary, request_deserializer=deserialize, response_serializer=serialize)


async def _reject_malformed(request: Any, context: Any) -> None:
    if isinstance(request, Malformed):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)


async def _checked(requests: Any, context: Any) -> Any:
    async for request in requests:
        await _reject_malformed(request, context)
        yield request


def _safe(deserializer: Callable[[bytes], Any], type_name: str) -> Callable[[bytes], Any]:
    def parse(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except (DecodeError, ValueError, UnicodeDecodeError) as error:
            return Malformed(f"the request to {type_name} does not parse: {error}")

    return parse


class EdgeInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc,type-arg]
    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler

        async def deadline(context: Any) -> None:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                    "the deadline passed before the call started")

        return wrap_handler(handler, deadline,
                            _safe(handler.request_deserializer, details.method))
