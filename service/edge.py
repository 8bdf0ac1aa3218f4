"""The edge every call passes: malformed bytes and spent deadlines never reach a servicer.

A request that does not parse as its message type, or that carries a control
character, an oversize string, NaN or infinity, or an undefined enum value in any
field, is answered INVALID_ARGUMENT naming the field (not the UNKNOWN gRPC would
give for bytes that do not parse); a call whose deadline has already passed is
answered DEADLINE_EXCEEDED without doing the work.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from core.validation import MAX_ID_LENGTH
from service.wirecheck import may_be_refused


class Malformed:
    """Stands in for a request that did not parse, or (`request`) that parsed with a field
    no request may carry."""

    def __init__(self, reason: str, request: Any = None) -> None:
        self.reason = reason
        self.request = request


class RefusedInBand:
    """A streamed request the edge refuses that names its request id: handed to the
    servicer in its place, to be answered as refused while the stream goes on (a stream's
    contract: a bad message gets an error result, not the end of every later one)."""

    def __init__(self, request_id: str, reason: str) -> None:
        self.request_id = request_id
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
                async for item in inner_ss(_checked(requests, context, True), context):
                    yield item
            except RejectedRequest as rejected:
                await context.abort(rejected.code, rejected.reason)

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, request_deserializer=deserialize, response_serializer=serialize)
    inner_su = handler.stream_unary

    async def stream_unary(requests: Any, context: Any) -> Any:
        await before(context)
        try:
            return await inner_su(_checked(requests, context), context)
        except RejectedRequest as rejected:
            await context.abort(rejected.code, rejected.reason)

    return grpc.stream_unary_rpc_method_handler(
        stream_unary, request_deserializer=deserialize, response_serializer=serialize)


MAX_STRING = 4096
#: The control characters no string may carry: those below space but tab, newline and
#: carriage return, and DEL. (All are non-printable: a printable string has none.)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MESSAGE, _STRING, _FLOAT, _ENUM = range(4)
#: Per message type, the fields that can carry a value the edge refuses, in field-number
#: order (the order ListFields gives): (name, repeated, which check, enum or None).
_PLANS: dict[Any, tuple[tuple[str, bool, int, Any], ...]] = {}


def _plan_of(descriptor: Any) -> tuple[tuple[str, bool, int, Any], ...]:
    plan = _PLANS.get(descriptor)
    if plan is None:
        checks = []
        for field in sorted(descriptor.fields, key=lambda f: f.number):
            kind = field.type
            enum = None
            if kind == FieldDescriptor.TYPE_MESSAGE:
                if not _can_refuse(field.message_type, set()):
                    continue  # a Timestamp, say: numbers only
                which = _MESSAGE
            elif kind == FieldDescriptor.TYPE_STRING:
                which = _STRING
            elif kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
                which = _FLOAT
            elif kind == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
                which, enum = _ENUM, field.enum_type
            else:
                continue  # integers, booleans, bytes: nothing to refuse
            checks.append((field.name, field.is_repeated, which, enum))
        plan = _PLANS[descriptor] = tuple(checks)
    return plan


def _can_refuse(descriptor: Any, seen: set[Any]) -> bool:
    """Whether a message of this type can hold a value the edge refuses: a string, a
    float, an enum, or a message that can (a type seen already on the way counts as one
    that can)."""
    if descriptor in seen:
        return True
    seen.add(descriptor)
    for field in descriptor.fields:
        kind = field.type
        if kind in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_DOUBLE,
                    FieldDescriptor.TYPE_FLOAT) or (
                kind == FieldDescriptor.TYPE_ENUM and field.enum_type is not None) or (
                kind == FieldDescriptor.TYPE_MESSAGE and _can_refuse(field.message_type, seen)):
            return True
    return False


def _invalid_value(which: int, item: Any, enum: Any) -> str:
    """Why one value of a field is refused (without the field's name); empty if it is not.
    For a message, the first field inside it, named from the message down."""
    if which == _MESSAGE:
        problem = invalid_field(item)
        return f".{problem}" if problem else ""
    if which == _STRING:
        if len(item) > MAX_STRING:
            return f": longer than {MAX_STRING} characters"
        if not item.isprintable() and _CONTROL.search(item):
            return ": control characters are not allowed"
    elif which == _FLOAT:
        if not math.isfinite(item):
            return ": must be a finite number"
    elif which == _ENUM and item not in enum.values_by_number:
        return f": {item} is not a {enum.name} value"
    return ""


def invalid_field(message: Message, path: str = "") -> str:
    """The first field no request may carry, with why: a control character or an
    oversize string, NaN or infinity, an enum value the schema does not define. Empty if
    none. (What a field means is checked later, by the command it becomes.)

    Fields left unset read as their defaults (empty, zero, the enum's zero value, an
    empty message), which pass: reading every field of the plan is the same check as
    reading the fields that are set."""
    for name, repeated, which, enum in _plan_of(message.DESCRIPTOR):
        value = getattr(message, name)
        if which == _STRING and not repeated and value.isprintable() and (
                len(value) <= MAX_STRING):
            continue  # the common case, without a call
        if repeated:
            for index, item in enumerate(value):
                problem = _invalid_value(which, item, enum)
                if problem:
                    return f"{path}{name}[{index}]{problem}"
        else:
            problem = _invalid_value(which, value, enum)
            if problem:
                return f"{path}{name}{problem}"
    return ""


def _malformed(request: Any) -> str:
    """Why the request is refused: the edge's deserializer (`_safe`) has checked it."""
    return str(request.reason) if isinstance(request, Malformed) else ""


async def _reject_malformed(request: Any, context: Any) -> None:
    problem = _malformed(request)
    if problem:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)


def requests_wrapped(handler: Any, wrap: Callable[[Any, Any], Any]) -> Any:
    """A handler of a stream of requests whose requests go through `wrap(requests,
    context)`, an async generator, before the handler reads them."""
    if handler.stream_stream:
        inner_ss = handler.stream_stream

        async def stream_stream(requests: Any, context: Any) -> Any:
            async for item in inner_ss(wrap(requests, context), context):
                yield item

        return grpc.stream_stream_rpc_method_handler(
            stream_stream, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
    inner_su = handler.stream_unary

    async def stream_unary(requests: Any, context: Any) -> Any:
        return await inner_su(wrap(requests, context), context)

    return grpc.stream_unary_rpc_method_handler(
        stream_unary, request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer)


class RejectedRequest(Exception):
    """A streamed request the edge refuses. Raised through the handler, which may read its
    requests in a task of its own, and turned into the call's status by the edge wrapper in
    the handler's own flow (an abort from another task could race a response being sent)."""

    def __init__(self, reason: str,
                 code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


async def _checked(requests: Any, context: Any, in_band: bool = False) -> Any:
    """The requests, checked; with `in_band`, one refused that names a well-formed request
    id is passed on as a RefusedInBand (answered, and audited, under that id). Bytes that do
    not parse, or a request id that is itself refused (it would be echoed back and written
    to the audit log, at any size), end the call."""
    del context
    async for request in requests:
        problem = _malformed(request)
        if problem:
            request_id = getattr(request.request, "request_id", "")
            if in_band and _answerable(request_id):
                yield RefusedInBand(request_id, problem)
                continue
            raise RejectedRequest(problem)
        yield request


def _answerable(request_id: Any) -> bool:
    """A request id a refusal can be answered and audited under (as check_identifier
    reads one)."""
    return (isinstance(request_id, str) and 0 < len(request_id) <= MAX_ID_LENGTH
            and request_id.isprintable())


def _safe(deserializer: Callable[[bytes], Any], type_name: str) -> Callable[[bytes], Any]:
    """The request parsed and checked once, as it arrives: a Malformed (with why) if it
    does not parse or a field holds a value no request may carry. The bytes are scanned
    first (service.wirecheck); only a request they flag is walked field by field."""

    def parse(raw: bytes) -> Any:
        try:
            request = deserializer(raw)
        except (DecodeError, ValueError, UnicodeDecodeError) as error:
            return Malformed(f"the request to {type_name} does not parse: {error}")
        if isinstance(request, Message) and may_be_refused(raw, request.DESCRIPTOR,
                                                           MAX_STRING):
            problem = invalid_field(request)
            if problem:
                return Malformed(problem, request)
        return request

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
