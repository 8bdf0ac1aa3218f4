"""Authentication and per-method authorisation.

Callers present `authorization: Bearer <token>`. Tokens are HMAC-SHA256 JWTs
(header.claims.signature) carrying the principal (`sub`), its roles, an expiry
(`exp`) and an id (`jti`) that can be revoked. One policy table says which roles
may call which method; anything not in the table is refused. Health checks and
reflection need no token.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import hashlib
import hmac
import json
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

import grpc

from service.edge import RejectedRequest, requests_wrapped, wrap_handler

ROLES = frozenset({"oms", "warehouse", "customer_service", "finance", "operations",
                   "inventory_control", "admin",
                   # the owners of exception queues (core.exceptions.OWNER_ROLE) that no
                   # role above owns: each resolves its own queue's exceptions
                   "fraud_review", "inventory_planning", "fulfilment_operations"})
ANYONE = ROLES

_WAREHOUSE = frozenset({"warehouse", "operations", "admin"})
_OMS = frozenset({"oms", "admin"})
_ADMIN = frozenset({"admin"})
_FINANCE = frozenset({"finance", "admin"})
_RETURNS = frozenset({"customer_service", "warehouse", "admin"})

#: Method (service/method) -> roles allowed. One table for the whole API.
POLICY: dict[str, frozenset[str]] = {
    # Inventory: reads for everyone; stock movements for the warehouse; holds for the OMS.
    "InventoryService/GetAvailability": ANYONE,
    "InventoryService/GetStockLevels": ANYONE,
    "InventoryService/GetLedgerSummary": ANYONE,
    "InventoryService/GetReservation": ANYONE,
    "InventoryService/WatchInventoryEvents": ANYONE,
    "InventoryService/ReceiveInventory": _WAREHOUSE,
    "InventoryService/ExpectInbound": _WAREHOUSE | {"finance"},
    "InventoryService/CancelInbound": _WAREHOUSE | {"finance"},
    "InventoryService/AdjustInventory": _WAREHOUSE,
    "InventoryService/MoveInventory": _WAREHOUSE,
    "InventoryService/TransferInventory": _WAREHOUSE,
    "InventoryService/SubmitCycleCount": _WAREHOUSE | {"inventory_control"},
    "InventoryService/ReserveInventory": _OMS,
    "InventoryService/ReleaseReservation": _OMS,
    "InventoryService/SweepExpiredReservations": _OMS | {"operations"},
    "InventoryService/SetSafetyStock": frozenset({"operations", "admin"}),
    "InventoryService/SetRingFence": frozenset({"operations", "admin"}),
    # Catalogue and network: admin changes them, everyone reads.
    "CatalogService/UpsertSkus": _ADMIN,
    "CatalogService/UpsertNodes": _ADMIN,
    "CatalogService/UpsertChannels": _ADMIN,
    "CatalogService/GetSkus": ANYONE,
    "CatalogService/ListNodes": ANYONE,
    "CatalogService/ListChannels": ANYONE,
    "NetworkService/SetNetwork": _ADMIN,
    "NetworkService/SetOpportunityCosts": _ADMIN,
    "NetworkService/GetNetwork": ANYONE,
    "NetworkService/SetDemandForecast": _ADMIN | {"operations"},
    "NetworkService/SetInventoryValuePolicy": _ADMIN,
    "NetworkService/RefreshInventoryValues": _ADMIN | {"operations"},
    "NetworkService/GetInventoryValues": ANYONE,
    # Orders: the OMS allocates and cancels, the warehouse fulfils.
    "OrderService/AllocateOrder": _OMS,
    "OrderService/AllocateOrders": _OMS,
    "OrderService/AllocateStream": _OMS,
    "OrderService/QuotePromise": _OMS | {"customer_service"},
    "OrderService/CancelOrder": _OMS | {"customer_service"},
    "OrderService/GetOrder": ANYONE,
    "OrderService/RateShop": ANYONE,
    "OrderService/ReleaseWave": _WAREHOUSE,
    "OrderService/ConfirmPick": _WAREHOUSE,
    "OrderService/ConfirmPack": _WAREHOUSE,
    "OrderService/ConfirmShipment": _WAREHOUSE,
    "OrderService/ListExceptions": ANYONE,
    "OrderService/ResolveException": ANYONE - {"oms"},  # each type checks its own roles
    "OrderService/Reoptimize": frozenset({"operations", "admin"}),
    # Returns and approvals.
    "ReturnsService/CreateReturn": _RETURNS,
    "ReturnsService/ReceiveReturn": _RETURNS,
    "ReturnsService/InspectReturn": _RETURNS,
    "ReturnsService/GetReturn": ANYONE,
    "ReturnsService/ListApprovals": ANYONE,
    "ReturnsService/DecideApproval": ANYONE - {"oms"},  # the approval checks the role
    "ReturnsService/SetReturnPolicy": _FINANCE,
    "ReturnsService/GetReturnPolicy": ANYONE,
    # Finance.
    "FinanceService/AllocateLandedCost": _FINANCE,
    "FinanceService/GetJournal": _FINANCE | {"operations"},
    "FinanceService/GetTrialBalance": _FINANCE | {"operations"},
    "FinanceService/GetInventoryValuation": _FINANCE | {"operations"},
    "FinanceService/GetReconciliation": _FINANCE | {"operations"},
    "FinanceService/VerifyJournal": _FINANCE | {"operations"},
    "FinanceService/GetAccountActivity": _FINANCE | {"operations"},
    # Operations: everyone reads; people act on alerts and tasks (each task checks its
    # owner role); operations and admin change rules and reverse actions; anyone with an
    # operational duty may request an emergency change (someone else approves it).
    "OperationsService/GetKpis": ANYONE,
    "OperationsService/ListAlerts": ANYONE,
    "OperationsService/AcknowledgeAlert": ANYONE - {"oms"},
    "OperationsService/ListTasks": ANYONE,
    "OperationsService/CompleteTask": ANYONE - {"oms"},
    "OperationsService/ListActions": ANYONE,
    "OperationsService/ReverseAction": frozenset({"operations", "admin"}),
    "OperationsService/GetRules": ANYONE,
    "OperationsService/SetRules": frozenset({"operations", "admin"}),
    "OperationsService/RequestEmergencyChange": ANYONE - {"oms"},
    # Tokens and diagnostics.
    "AccessService/RevokeToken": _ADMIN,
    "AccessService/ListRevokedTokens": _ADMIN,
    "DiagnosticsService/Echo": ANYONE,
    "DiagnosticsService/EchoStream": ANYONE,
    "DiagnosticsService/EchoBatch": ANYONE,
}

PUBLIC_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


@dataclass(frozen=True, slots=True)
class Identity:
    principal: str
    roles: frozenset[str]
    token_id: str
    expires_s: int


#: The authenticated caller of the request being handled.
CURRENT: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "allocd_identity", default=None)


class AuthError(Exception):
    """The token is missing, malformed, forged, expired or revoked."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(secret: bytes, principal: str, roles: Collection[str], ttl_s: int,
                now_s: int) -> tuple[str, str]:
    """(token, token id)."""
    unknown = set(roles) - ROLES
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; known: {sorted(ROLES)}")
    if not principal or not roles or ttl_s <= 0:
        raise ValueError("a token needs a principal, at least one role and a positive ttl")
    token_id = uuid.uuid4().hex
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = _b64(json.dumps({"sub": principal, "roles": sorted(roles), "jti": token_id,
                              "iat": now_s, "exp": now_s + ttl_s},
                             separators=(",", ":")).encode())
    signature = hmac.new(secret, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{_b64(signature)}", token_id


def verify_token(secret: bytes, token: str, now_s: int,
                 revoked: Collection[str] = ()) -> Identity:
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthError("malformed token")
    header, claims, signature = parts
    expected = hmac.new(secret, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    try:
        given = _unb64(signature)
        head = json.loads(_unb64(header))
        body = json.loads(_unb64(claims))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise AuthError("malformed token") from None
    if not hmac.compare_digest(expected, given):
        raise AuthError("bad token signature")
    if not isinstance(head, dict) or head.get("alg") != "HS256" or not isinstance(body, dict):
        raise AuthError("unsupported token")
    try:
        principal, roles = str(body["sub"]), frozenset(str(r) for r in body["roles"])
        token_id, expires = str(body["jti"]), int(body["exp"])
    except (KeyError, TypeError, ValueError):
        raise AuthError("token claims incomplete") from None
    if expires <= now_s:
        raise AuthError("token expired")
    if token_id in revoked:
        raise AuthError("token revoked")
    return Identity(principal, roles & ROLES, token_id, expires)


def method_key(full_method: str) -> str:
    """'/allocd.v1.InventoryService/GetAvailability' -> 'InventoryService/GetAvailability'."""
    service, _, method = full_method.lstrip("/").partition("/")
    return f"{service.rsplit('.', 1)[-1]}/{method}"


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc,type-arg]
    """Authenticates every allocd call and checks the policy table before the servicer
    runs; the caller's identity is then in `CURRENT`."""

    def __init__(self, secret: bytes, revoked: Callable[[], Collection[str]],
                 clock_s: Callable[[], int]) -> None:
        self.secret = secret
        self.revoked = revoked
        self.clock_s = clock_s

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: Any) -> Any:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(PUBLIC_PREFIXES):
            return handler
        allowed = POLICY.get(method_key(method), frozenset())

        def check(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[Identity | None, str]:
            metadata = dict(context.invocation_metadata() or ())
            auth = str(metadata.get("authorization", ""))
            if not auth.startswith("Bearer "):
                return None, "a bearer token is required (authorization: Bearer <token>)"
            try:
                identity = verify_token(self.secret, auth[7:].strip(), self.clock_s(),
                                        self.revoked())
            except AuthError as error:
                return None, str(error)
            return identity, ""

        async def authorise(context: grpc.aio.ServicerContext[Any, Any]) -> None:
            identity, problem = check(context)
            if identity is None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)
                return
            if not identity.roles & allowed:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"{identity.principal} ({', '.join(sorted(identity.roles))})"
                                    f" may not call {method_key(method)}")
            CURRENT.set(identity)

        if handler.request_streaming:
            handler = self._each_message_checked(handler)
        return wrap_handler(handler, authorise)

    def _each_message_checked(self, handler: Any) -> Any:
        """A stream of requests checks its token again at each message: one revoked, or
        past its expiry, while the stream is open stops it (UNAUTHENTICATED) there, where
        it would otherwise go on changing state for as long as the stream stays open."""
        revoked, clock_s = self.revoked, self.clock_s

        async def checked(requests: Any, context: Any) -> Any:
            del context
            async for request in requests:
                identity = CURRENT.get(None)
                if identity is not None:
                    problem = ("token expired" if identity.expires_s <= clock_s() else
                               "token revoked" if identity.token_id in revoked() else "")
                    if problem:
                        raise RejectedRequest(problem, grpc.StatusCode.UNAUTHENTICATED)
                yield request

        return requests_wrapped(handler, checked)
