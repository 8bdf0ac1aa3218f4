"""Per-caller rate limits: a token bucket per principal (per peer when authentication is
off). Over the limit a call gets RESOURCE_EXHAUSTED with `retry-after-ms` advice."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from service.auth import CURRENT, PUBLIC_PREFIXES
from service.edge import wrap_handler


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)

    def take(self, key: str) -> float:
        """0.0 if a call may go ahead now, else the seconds until one may."""
        now = self.clock()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate


class RateLimitInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc,type-arg]
    def __init__(self, bucket: TokenBucket) -> None:
        self.bucket = bucket

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith(PUBLIC_PREFIXES):
            return handler

        async def limit(context: Any) -> None:
            identity = CURRENT.get()
            key = identity.principal if identity is not None else str(context.peer())
            wait = self.bucket.take(key)
            if wait > 0:
                retry_ms = max(1, int(wait * 1000))
                context.set_trailing_metadata((("retry-after-ms", str(retry_ms)),))
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                    f"rate limit for {key}: retry in {retry_ms} ms")

        return wrap_handler(handler, limit)
