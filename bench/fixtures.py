"""Large ledgers for benchmarks, built through the real command path."""

from __future__ import annotations

import numpy as np

from core import commands as c
from core.ledger import Ledger, LedgerSettings
from core.model import ChannelSpec, NodeSpec, SkuSpec
from core.operations import execute


def big_ledger(n_skus: int, n_nodes: int, seed: int = 1, shards: int = 16) -> Ledger:
    """n_skus x n_nodes ledger: catalogue via UpsertSkus, stock filled shard by shard.

    Filling the arrays directly (instead of n_skus * n_nodes receipt events) keeps
    set-up to seconds; reads and reservations see exactly what receipts would make.
    """
    ledger = Ledger(LedgerSettings(n_shards=shards))
    execute(ledger, c.UpsertNodes(tuple(NodeSpec(f"N{i:02d}") for i in range(n_nodes))), 0)
    execute(ledger, c.UpsertChannels((ChannelSpec("web"), ChannelSpec("marketplace"))), 0)
    chunk = 100_000
    for start in range(0, n_skus, chunk):
        specs = tuple(SkuSpec(f"SKU-{i:07d}", weight_lb=1.0)
                      for i in range(start, min(n_skus, start + chunk)))
        execute(ledger, c.UpsertSkus(specs), 0)
    rng = np.random.default_rng(seed)
    for shard in ledger.shards:
        rows = shard.n_skus
        shard.qty[:rows, :n_nodes, 0] = rng.integers(0, 1000, size=(rows, n_nodes))
    execute(ledger, c.SetSafetyStock("", "", 2), 0)
    return ledger
