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
