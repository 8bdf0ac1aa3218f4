"""One mapping from domain errors to canonical gRPC status codes, for every servicer."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, TypeVar

import grpc

from core.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    PermissionDenied,
)
from service.auth import CURRENT
from service.logs import REQUEST_ID
from service.store import StoreUnavailable

log = logging.getLogger("allocd.rpc")

Context = grpc.aio.ServicerContext[Any, Any]

STATUS_OF: dict[type[Exception], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    LimitExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_of(error: Exception) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        code = STATUS_OF.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def _message(error: Exception) -> str:
    if isinstance(error, DomainError):
        return error.message
    return str(error)


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def unary(handler: F) -> F:
    """Turn domain errors raised by a unary handler into their gRPC status."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: Context) -> Any:
        outcome = "OK"
        REQUEST_ID.set(getattr(request, "request_id", ""))
        who = _audited_as(self, request, context)
        try:
            return await handler(self, request, context)
        except (DomainError, StoreUnavailable) as error:
            outcome = status_of(error).name
            await context.abort(status_of(error), _message(error))
        except ValueError as error:
            if not _past_int64(error, request):
                outcome = type(error).__name__
                raise
            outcome = grpc.StatusCode.OUT_OF_RANGE.name
            await context.abort(grpc.StatusCode.OUT_OF_RANGE, (
                f"{handler.__name__}: a figure of the answer is past what its 64-bit field "
                f"holds ({error})"))
        except BaseException as error:
            outcome = type(error).__name__
            raise
        finally:
            _audit(self, request, who, handler.__name__, outcome)

    return wrapper  # type: ignore[return-value]


_INT64: Final = 1 << 63


def _past_int64(error: ValueError, request: Any) -> bool:
    """A read whose answer holds a number past what int64 holds (a total the books grew
    past it): OUT_OF_RANGE, saying so, rather than UNKNOWN. Any other value a field refuses
    (a negative count in an unsigned field, an int32 overflow) is a fault, raised as it is.
    (Not for a mutating call: its change is made by then, and OUT_OF_RANGE would read as a
    refusal.)"""
    prefix, _, number = str(error).partition("Value out of range: ")
    if prefix or "request_id" in request.DESCRIPTOR.fields_by_name:
        return False
    try:
        value = int(number)
    except ValueError:
        return False
    return not -_INT64 <= value < _INT64


def _audited_as(servicer: Any, request: Any, context: Context) -> str | None:
    """Who a mutating call (it carries a request id) is audited as; None for a call that
    is not audited. Read as the call starts: a streaming handler is closed after its
    call has ended, and the ended call's context (its peer, its metadata) read then took
    the server down (the call's memory was freed)."""
    if (getattr(servicer, "engine", None) is None
            or "request_id" not in request.DESCRIPTOR.fields_by_name):
        return None
    who, _ = caller(context)
    peer = getattr(context, "peer", None)
    return who or (str(peer()) if peer else "")


def _audit(servicer: Any, request: Any, who: str | None, method: str, outcome: str) -> None:
    """Mutating calls go to the engine's audit log (`who` None: a call not audited)."""
    if who is None:
        return
    engine = servicer.engine
    engine.audit.record(engine.clock(), who, method, request.request_id, outcome)


_STATUS_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def stream_auditor(engine: Any, context: Context,
                   method: str) -> Callable[[str, asyncio.Future[Any]], None]:
    """For a bidirectional stream of mutating requests: a function that audits one
    request once its answer is settled, as `unary` audits a call. Its outcome is OK, the
    status of the error the answer carries (a refused order), or that of the exception
    the answer failed with."""
    who, _ = caller(context)
    if not who:
        peer = getattr(context, "peer", None)
        who = str(peer()) if peer else ""
    audit = engine.audit
    clock = engine.clock

    def settled(request_id: str, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            outcome = "CancelledError"
        elif (error := future.exception()) is not None:
            outcome = (status_of(error).name if isinstance(error, DomainError | StoreUnavailable)
                       else type(error).__name__)
        else:
            result = future.result()
            # (An answer written as bytes is an allocation: only refusals are messages.)
            code = 0 if isinstance(result, bytes) else getattr(result, "error_code", 0)
            outcome = _STATUS_NAMES.get(code, str(code)) if code else "OK"
        audit.record(clock(), who, method, request_id, outcome)

    def audited(request_id: str, future: asyncio.Future[Any]) -> None:
        """Audit the request once `future` is settled. (Its exception is read then, so a
        stream that ends before reading an answer leaves no exception unretrieved.)"""
        future.add_done_callback(lambda done: settled(request_id, done))

    return audited


G = TypeVar("G", bound=Callable[..., AsyncIterator[Any]])


def streaming(handler: G) -> G:
    """The same for server-streaming handlers (async generators)."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any,
                      context: Context) -> AsyncIterator[Any]:
        outcome = "OK"
        who = _audited_as(self, request, context)
        try:
            async for item in handler(self, request, context):
                yield item
        except (DomainError, StoreUnavailable) as error:
            outcome = status_of(error).name
            await context.abort(status_of(error), _message(error))
        except BaseException as error:
            outcome = type(error).__name__
            raise
        finally:
            # A mutating one (Reoptimize: it carries a request id) is audited as a unary
            # call is; a read (WatchInventoryEvents) is not.
            _audit(self, request, who, handler.__name__, outcome)

    return wrapper  # type: ignore[return-value]


ACTOR_KEY = "x-allocd-actor"
ROLE_KEY = "x-allocd-role"


def caller(context: Context) -> tuple[str, str]:
    """(actor, roles joined by commas) of the caller: the authenticated identity, or -
    only when authentication is off - what the request metadata says."""
    identity = CURRENT.get()
    if identity is not None:
        return identity.principal, ",".join(sorted(identity.roles))
    read = getattr(context, "invocation_metadata", None)
    metadata = dict((read() if read else None) or ())
    return str(metadata.get(ACTOR_KEY, "")), str(metadata.get(ROLE_KEY, ""))


def check_count(count: int, limit: int, field: str, setting: str) -> None:
    if count > limit:
        raise InvalidArgument(
            f"{field} has {count} entries; the limit {setting} is {limit}", field)
