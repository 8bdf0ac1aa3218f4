"""OrderService.Reoptimize: snapshot the open orders, solve off the event loop while
streaming progress, then apply the new plans as one mutation (idempotent by request id).
A call that ends before the plans are applied (the caller cancelled it, its deadline
passed, the server is stopping) stops the solver and applies nothing."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator

from allocd.v1 import order_service_pb2 as pb

from core import commands as c
from core import reopt
from core.errors import FailedPrecondition, InvalidArgument
from core.operations import Outcome
from core.replan_ops import ReplanResult
from service.engine import Engine, check_request_id
from service.errors import Context
from service.servicers.inventory import mutation_result

MAX_TIME_LIMIT_S = 3600.0
DEFAULT_TIME_LIMIT_S = 30.0
MAX_PACKAGE_PENALTY = 1_000_000_000  # $1,000 a package


def _options(request: pb.ReoptimizeRequest, workers: int) -> reopt.ReoptOptions:
    limit = request.time_limit_seconds or DEFAULT_TIME_LIMIT_S
    if not math.isfinite(limit) or not 0 < limit <= MAX_TIME_LIMIT_S:
        raise InvalidArgument(f"time_limit_seconds must be in (0, {MAX_TIME_LIMIT_S:.0f}]",
                              "time_limit_seconds")
    if request.max_orders < 0:
        raise InvalidArgument("max_orders must be >= 0", "max_orders")
    if not 0 <= request.seed < 1 << 31:
        raise InvalidArgument("seed must be in [0, 2^31)", "seed")
    if not 0 <= request.extra_package_penalty_micros <= MAX_PACKAGE_PENALTY:
        raise InvalidArgument(f"extra_package_penalty_micros must be in [0, "
                              f"{MAX_PACKAGE_PENALTY}]", "extra_package_penalty_micros")
    return reopt.ReoptOptions(time_limit_s=limit, seed=request.seed, workers=workers,
                              max_orders=request.max_orders,
                              extra_package_micros=request.extra_package_penalty_micros)


def _summary(solution: reopt.Solution, result: ReplanResult | None) -> pb.ReoptimizeSummary:
    old_cost, old_pkgs, old_back = solution.totals("old")
    # (Applied: what was, less the orders the apply kept as they were.)
    new_cost, new_pkgs, new_back = solution.totals(
        "new", result.applied if result is not None else None)
    bound = solution.lower_bound
    changed = [solution.problem.order_ids[o] for o in solution.changed().tolist()]
    summary = pb.ReoptimizeSummary(
        open_orders=solution.problem.n_orders, orders_changed=len(changed),
        old_cost_micros=old_cost, new_cost_micros=new_cost, old_packages=old_pkgs,
        new_packages=new_pkgs, old_backordered_units=old_back, new_backordered_units=new_back,
        old_objective_micros=solution.old_objective,
        new_objective_micros=solution.new_objective, lower_bound_micros=bound,
        gap=(solution.new_objective - bound) / new_cost if new_cost > 0 else 0.0,
        components=solution.components, chunks_solved=solution.chunks_solved,
        chunks_optimal=solution.chunks_optimal, elapsed_seconds=solution.elapsed_s,
        applied=result is not None)
    if result is not None:
        summary.orders_changed = len(result.applied)
        summary.orders_changed_meanwhile = len(result.changed_meanwhile)
        summary.orders_no_longer_fit = len(result.no_longer_fits)
        summary.changed_order_ids.extend(result.applied)
    else:
        summary.changed_order_ids.extend(changed)
    return summary


class Reoptimizer:
    """One re-optimisation at a time per server."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.running = False

    async def run(self, request: pb.ReoptimizeRequest,
                  context: Context) -> AsyncIterator[pb.ReoptimizeResponse]:
        engine = self.engine
        check_request_id(request.request_id)
        options = _options(request, max(engine.settings.reopt_workers, 1))

        def respond(outcome: Outcome) -> pb.ReoptimizeResponse:
            return pb.ReoptimizeResponse(phase="done", result=mutation_result(outcome))

        if not request.dry_run:
            earlier = engine.recorded("Reoptimize", request, respond)
            if earlier is not None:
                yield earlier
                return
        if self.running:
            raise FailedPrecondition("a re-optimisation is running already; wait for it")
        self.running = True
        stop = threading.Event()
        task: asyncio.Future[reopt.Solution] | None = None
        released = False

        def release(*_: object) -> None:
            """Stop the solver (at once: it may have most of its time limit still to run),
            and let the next run start once its thread has ended. Called when this handler
            ends and when the call does, whichever comes first: a call cancelled while an
            answer of this handler was being sent leaves the handler suspended, and it ends
            only when it is collected."""
            nonlocal released
            stop.set()
            if released:
                return  # (a later run may hold `running` by now)
            released = True
            if task is None or task.done():
                self.running = False
            else:
                task.add_done_callback(lambda _: setattr(self, "running", False))

        # (The stubs type the callback as a class of theirs; grpc calls any callable.)
        context.add_done_callback(release)  # type: ignore[arg-type]
        try:
            problem = reopt.collect(engine.ledger, engine.clock(), options.max_orders)
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[reopt.Progress] = asyncio.Queue()

            def progress(p: reopt.Progress) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, p)

            task = asyncio.ensure_future(asyncio.to_thread(reopt.solve, problem, options,
                                                           progress, stop.is_set))
            while True:
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    p = getter.result()
                    yield pb.ReoptimizeResponse(phase=p.phase, detail=p.detail, done=p.done,
                                                total=p.total, objective_micros=p.objective)
                    continue
                getter.cancel()
                if queue.empty():
                    break
            solution = task.result()
            if stop.is_set():
                return  # the call has ended: what a stopped solve chose is not applied
            if request.dry_run:
                yield pb.ReoptimizeResponse(phase="done", detail="dry run: nothing changed",
                                            summary=_summary(solution, None))
                return
            yield pb.ReoptimizeResponse(phase="applying",
                                        detail=f"{len(solution.changed())} orders")

            def applied(outcome: Outcome) -> pb.ReoptimizeResponse:
                response = respond(outcome)
                detail = outcome.detail if isinstance(outcome.detail, ReplanResult) else None
                response.summary.CopyFrom(_summary(solution, detail))
                return response

            yield await engine.mutate(
                "Reoptimize", request,
                lambda: c.ApplyReoptimization(reopt.replans(solution)), applied)
        finally:
            # A caller that goes away stops the solver (nothing is applied).
            release()
