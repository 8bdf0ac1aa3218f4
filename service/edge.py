"""The edge every call passes: malformed bytes and spent deadlines never reach a servicer.

A request that does not parse as its message type, or that carries a control
character, an oversize string, NaN or infinity, or an undefined enum value in any
field, is answered INVALID_ARGUMENT naming the field (not the UNKNOWN gRPC would
give for bytes that do not parse); a call whose deadline has already passed is
answered DEADLINE_EXCEEDED without doing the work.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message


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
            try:
                async for item in inner_ss(_checked(requests, context), context):
                    yield item
            except RejectedRequest as rejected:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, rejected.reason)

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, request_deserializer=deserialize, response_serializer=serialize)
    inner_su = handler.stream_unary

    async def stream_unary(requests: Any, context: Any) -> Any:
        await before(context)
        try:
            return await inner_su(_checked(requests, context), context)
        except RejectedRequest as rejected:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, rejected.reason)

    return grpc.stream_unary_rpc_method_handler(
        stream_unary, request_deserializer=deserialize, response_serializer=serialize)


MAX_STRING = 4096
_ALLOWED_CONTROL = frozenset("\t\n\r")


def invalid_field(message: Message, path: str = "") -> str:
    """The first field no request may carry, with why: a control character or an
    oversize string, NaN or infinity, an enum value the schema does not define. Empty if
    none. (What a field means is checked later, by the command it becomes.)"""
    for field, value in message.ListFields():
        name = f"{path}{field.name}"
        values = value if field.is_repeated else (value,)
        for index, item in enumerate(values):
            where = f"{name}[{index}]" if field.is_repeated else name
            kind = field.type
            if kind == FieldDescriptor.TYPE_MESSAGE:
                problem = invalid_field(item, f"{where}.")
                if problem:
                    return problem
            elif kind == FieldDescriptor.TYPE_STRING:
                if len(item) > MAX_STRING:
                    return f"{where}: longer than {MAX_STRING} characters"
                if any((ch < " " and ch not in _ALLOWED_CONTROL) or ch == "\x7f" for ch in item):
                    return f"{where}: control characters are not allowed"
            elif kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
                if not math.isfinite(item):
                    return f"{where}: must be a finite number"
            elif kind == FieldDescriptor.TYPE_ENUM and field.enum_type is not None and (
                    item not in field.enum_type.values_by_number):
                return f"{where}: {item} is not a {field.enum_type.name} value"
    return ""


def _malformed(request: Any) -> str:
    if isinstance(request, Malformed):
        return str(request.reason)
    return invalid_field(request) if isinstance(request, Message) else ""


async def _reject_malformed(request: Any, context: Any) -> None:
    problem = _malformed(request)
    if problem:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)


class RejectedRequest(Exception):
    """A streamed request the edge refuses. Raised through the handler, which may read its
    requests in a task of its own, and turned into the call's status by the edge wrapper in
    the handler's own flow (an abort from another task could race a response being sent)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _checked(requests: Any, context: Any) -> Any:
    del context
    async for request in requests:
        problem = _malformed(request)
        if problem:
            raise RejectedRequest(problem)
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
