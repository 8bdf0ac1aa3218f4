"""Compile every kernel with the argument types production uses, before serving."""

from __future__ import annotations

import numpy as np

from core import commands as c
from core.availability import available_to_sell
from core.ledger import Ledger, LedgerSettings
from core.model import ChannelSpec, NodeSpec, SkuSpec
from core.operations import execute


def warm_kernels() -> None:
    """Run each operation once on a throwaway two-SKU ledger (loads or compiles the kernels)."""
    ledger = Ledger(LedgerSettings(n_shards=2))
    execute(ledger, c.UpsertNodes((NodeSpec("a"), NodeSpec("b"))), 0)
    execute(ledger, c.UpsertChannels((ChannelSpec("web"),)), 0)
    execute(ledger, c.UpsertSkus((SkuSpec("x"), SkuSpec("y"))), 0)
    execute(ledger, c.ReceiveStock((c.ReceiptLine("x", "a", 5), c.ReceiptLine("y", "b", 5))), 0)
    execute(ledger, c.SetRingFence((c.FenceLine("x", "a", "web", 1),)), 0)
    execute(ledger, c.SetSafetyStock("x", "a", 1), 0)
    execute(ledger, c.ReserveStock("r", "web", 10, (c.ReserveLine("x", "a", 1),)), 0)
    execute(ledger, c.ExpireReservations(), 20)
    available_to_sell(ledger, np.array([0, 1], np.int64), np.array([0, 1], np.int64), 0)
    ledger.bucket_totals()
