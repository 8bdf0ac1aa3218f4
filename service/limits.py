"""Per-caller rate limits: a token bucket per principal (per client address when
authentication is off). Over the limit a call gets RESOURCE_EXHAUSTED with
`retry-after-ms` advice; each message of a stream of requests after its first takes a
token too, and waits for one (the stream is slowed to the rate, not ended)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from service.auth import CURRENT, PUBLIC_PREFIXES
from service.edge import requests_wrapped, wrap_handler


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)
        self._pruned_at = 0

    def take(self, key: str) -> float:
        """0.0 if a call may go ahead now, else the seconds until one may."""
        now = self.clock()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if len(self._buckets) >= 2 * self._pruned_at + 1024:
            self._prune(now)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        """Forget the callers whose buckets have filled up again (as a new one starts): the
        table stays as large as the callers active lately, not every one ever seen."""
        self._buckets = {key: (tokens, last) for key, (tokens, last) in self._buckets.items()
                         if tokens + (now - last) * self.rate < self.burst}
        self._pruned_at = len(self._buckets)

    def __len__(self) -> int:
        return len(self._buckets)


def caller_key(context: Any) -> str:
    """Whose bucket a call takes from: its principal, or without authentication its client
    address (the peer less its port: a new connection is the same caller)."""
    identity = CURRENT.get()
    if identity is not None:
        return str(identity.principal)
    peer = str(context.peer())
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return f"{kind}:{rest.rsplit(':', 1)[0]}"
    return peer


class RateLimitInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc,type-arg]
    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith(PUBLIC_PREFIXES):
            return handler

        async def limit(context: Any) -> None:
            key = caller_key(context)
            wait = self.bucket.take(key)
            if wait > 0:
                retry_ms = max(1, int(wait * 1000))
                context.set_trailing_metadata((("retry-after-ms", str(retry_ms)),))
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"rate limit for {key}: retry in {retry_ms} ms")

        if handler.request_streaming:
            handler = self._each_message_paced(handler)
        return wrap_handler(handler, limit)

    def _each_message_paced(self, handler: Any) -> Any:
        """Each message of a stream of requests after its first (which the call's own token
        paid for) takes a token, waiting for one: a stream is held to the caller's rate as
        its calls are."""
        bucket = self.bucket

        async def paced(requests: Any, context: Any) -> Any:
            key = ""
            async for request in requests:
                if key:
                    while (wait := bucket.take(key)) > 0:
                        await asyncio.sleep(wait)
                else:
                    key = caller_key(context)
                yield request

        return requests_wrapped(handler, paced)
