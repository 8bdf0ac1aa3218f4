"""Inventory values in the server: the policy in force, refreshes off the event loop,
and the periodic refresh task.

The model's inputs are copied out of the ledger on the loop (the single writer), the
LP is solved in a worker thread, and its values are applied as one command, so a
refresh is a change like any other (logged, replayed, idempotent by request id)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import Message

from core import commands as c
from core.demand import ValuePolicy
from core.errors import FailedPrecondition
from core.inventory_value import Values, compute_values, gather_inputs
from core.operations import Outcome
from service.config import Settings
from service.engine import Engine

log = logging.getLogger("allocd.values")
ResponseT = TypeVar("ResponseT", bound=Message)


def default_policy(settings: Settings) -> ValuePolicy:
    return ValuePolicy(enabled=settings.inventory_values,
                       refresh_interval_s=settings.inventory_value_refresh_s,
                       horizon_days=settings.inventory_value_horizon_days,
                       scale=settings.inventory_value_scale,
                       shortage_weight=settings.inventory_value_shortage_weight,
                       tail_from_draws=settings.inventory_value_tail_from_draws)


class InventoryValues:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = asyncio.Lock()
        self._last_refresh = -float("inf")

    def policy(self) -> ValuePolicy:
        """The policy set through the API, else the configured default."""
        return self.engine.ledger.value_policy or default_policy(self.engine.settings)

    async def _solve(self) -> tuple[c.ReplaceOpportunityCosts, Values]:
        ledger = self.engine.ledger
        policy = self.policy()
        if not policy.enabled:
            raise FailedPrecondition("inventory values are off (SetInventoryValuePolicy)")
        if not ledger.network_spec.regions:
            raise FailedPrecondition("no carrier network is configured "
                                     "(NetworkService.SetNetwork)")
        inputs = gather_inputs(ledger, self.engine.clock(), policy)
        values = await asyncio.to_thread(compute_values, inputs)
        if values.status != "OPTIMAL":  # keep the values in force rather than clear them
            raise FailedPrecondition(f"the value model did not solve ({values.status}); "
                                     "the current values stay")
        cat = ledger.catalog
        lines = tuple(c.OpportunityCostLine(cat.sku_ids[sku], cat.nodes[node].node_id, micros)
                      for (sku, node), micros in sorted(values.values.items()))
        return c.ReplaceOpportunityCosts(lines), values

    async def refresh(self, method: str, request: Message,
                      respond: Callable[[Outcome, Values], ResponseT]) -> ResponseT:
        """Solve now and apply the values as one mutation of `request`. A retry of a call
        that was answered gets that answer, without solving again (nor failing if the
        model would not solve now)."""
        earlier = self.engine.recorded(method, request,
                                       lambda o: respond(o, Values({}, 0.0, "", 0.0)))
        if earlier is not None:
            return earlier
        async with self._lock:
            command, values = await self._solve()
            response = await self.engine.mutate(method, request, lambda: command,
                                                lambda o: respond(o, values))
            self._last_refresh = time.monotonic()
            return response

    async def refresh_forever(self, tick_s: float = 1.0) -> None:
        """While the policy is on, refresh every `refresh_interval_s`."""
        while True:
            await asyncio.sleep(tick_s)
            policy = self.policy()
            if (not policy.enabled
                    or time.monotonic() - self._last_refresh < policy.refresh_interval_s):
                continue
            try:
                async with self._lock:
                    command, values = await self._solve()
                    await self.engine.mutate_internal(command, f"values-{self.engine.clock()}")
                    self._last_refresh = time.monotonic()
                log.info("inventory values refreshed: %d set (%s, %.2fs)", len(values.values),
                         values.status, values.solve_seconds)
            except FailedPrecondition as error:
                log.debug("inventory values not refreshed: %s", error)
                self._last_refresh = time.monotonic()
            except Exception:  # retried at the next interval
                log.exception("inventory value refresh failed")
                self._last_refresh = time.monotonic()
