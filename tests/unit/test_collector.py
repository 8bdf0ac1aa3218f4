"""The collector as the server runs it (service.server.SERVER_GC_THRESHOLDS): every
automatic collection takes the young and middle generations together, so what survives
one is in the oldest generation at once and is not walked again until a full collection;
reference cycles are still collected."""

from __future__ import annotations

import gc
import weakref

from service.server import SERVER_GC_THRESHOLDS


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_a_survivor_goes_to_the_oldest_generation_after_one_collection():
    thresholds = gc.get_threshold()
    generations: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            generations.append(info["generation"])

    gc.collect()
    gc.set_threshold(*SERVER_GC_THRESHOLDS)
    gc.callbacks.append(seen)
    try:
        survivor = [[] for _ in range(100)]
        cycle = weakref.ref(_Node())  # dropped at once, kept alive by its cycle
        assert cycle() is not None
        # Enough new containers kept alive to set off a few automatic collections.
        kept = [[] for _ in range(3 * SERVER_GC_THRESHOLDS[0])]
        assert len(generations) >= 2
        assert set(generations) == {1}  # young and middle together, every time
        oldest = {id(o) for o in gc.get_objects(generation=2)}
        assert id(survivor) in oldest and id(survivor[0]) in oldest
        assert not gc.get_objects(generation=1)  # nothing waits to be walked again
        assert cycle() is None  # the cycle was found and freed
        del kept
    finally:
        gc.callbacks.remove(seen)
        gc.set_threshold(*thresholds)


def _recording_handler(monkeypatch, command_type, seen: list[bool], fail: bool = False):
    """Make `command_type`'s handler note whether the collector is on while it runs."""
    from core import operations
    from core.errors import InvalidArgument

    handler = operations._HANDLERS[command_type]

    def noting(plan, command):
        seen.append(gc.isenabled())
        if fail:
            raise InvalidArgument("refused on purpose", "nodes")
        return handler(plan, command)

    monkeypatch.setitem(operations._HANDLERS, command_type, noting)


def test_a_command_runs_with_the_collector_paused_and_leaves_it_as_it_found_it(monkeypatch):
    from core import commands as c
    from core.errors import InvalidArgument
    from core.ledger import Ledger
    from core.model import NodeSpec
    from core.operations import execute

    seen: list[bool] = []
    _recording_handler(monkeypatch, c.UpsertNodes, seen)
    ledger = Ledger()
    assert gc.isenabled()
    execute(ledger, c.UpsertNodes((NodeSpec("A"),)), 0, "r1")
    assert seen == [False] and gc.isenabled()
    assert ledger.catalog.n_nodes == 1
    gc.disable()  # off already (as in a snapshot's child): it stays off
    try:
        execute(ledger, c.UpsertNodes((NodeSpec("B"),)), 0, "r2")
        assert seen == [False, False] and not gc.isenabled()
    finally:
        gc.enable()
    monkeypatch.undo()
    refused: list[bool] = []
    _recording_handler(monkeypatch, c.UpsertNodes, refused, fail=True)
    try:
        execute(ledger, c.UpsertNodes((NodeSpec("C"),)), 0, "r3")
    except InvalidArgument:
        pass
    else:
        raise AssertionError("the command was not refused")
    assert refused == [False] and gc.isenabled()  # on again after a refusal


def test_the_engine_reads_the_call_into_a_command_with_the_collector_paused():
    import asyncio

    from core import commands as c
    from core.model import NodeSpec
    from service.config import Settings
    from service.engine import Engine
    from service.store import MemoryEventStore

    seen: list[bool] = []

    def build() -> c.Command:
        seen.append(gc.isenabled())
        return c.UpsertNodes((NodeSpec("A"),))

    async def go() -> None:
        engine = Engine(Settings(store="memory"), MemoryEventStore())
        await engine.start()
        engine._execute(build, "r1")
        assert engine.ledger.catalog.n_nodes == 1

    asyncio.run(go())
    assert seen == [False] and gc.isenabled()
