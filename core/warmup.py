"""Compile every kernel with the argument types production uses, before serving."""

from __future__ import annotations

import numpy as np

from core import commands as c
from core.availability import available_to_sell
from core.ledger import Ledger, LedgerSettings
from core.model import ChannelSpec, NodeSpec, SkuSpec
from core.network import CarrierService, NetworkSpec, Region, SlaTier
from core.operations import execute
from core.orders import OrderLineSpec, OrderSpec


def warm_kernels() -> None:
    """Run each operation once on a throwaway two-SKU ledger (loads or compiles the kernels)."""
    ledger = Ledger(LedgerSettings(n_shards=2))
    execute(ledger, c.UpsertNodes((NodeSpec("a"), NodeSpec("b"))), 0)
    execute(ledger, c.UpsertChannels((ChannelSpec("web"),)), 0)
    execute(ledger, c.UpsertSkus((SkuSpec("x"), SkuSpec("y"))), 0)
    execute(ledger, c.ReceiveStock((c.ReceiptLine("x", "a", 5), c.ReceiptLine("y", "b", 5))), 0)
    execute(ledger, c.SetRingFence((c.FenceLine("x", "a", "web", 1),)), 0)
    execute(ledger, c.SetSafetyStock("x", "a", 1), 0)
    execute(ledger, c.ReserveStock("r", "web", 10, (c.StockLine("x", "a", 1),)), 0)
    execute(ledger, c.ExpireReservations(), 20)
    available_to_sell(ledger, np.array([0, 1], np.int64), np.array([0, 1], np.int64), 0)
    ledger.bucket_totals()
    # The allocation kernel: one order on a one-region, one-service network.
    execute(ledger, c.SetNetwork(NetworkSpec(
        regions=(Region("r", 40.0, -75.0, ("1",)),),
        services=(CarrierService("ground", "c", ((1_000_000,),) * 7, (1,) * 7),),
        split_penalty_micros=(0, 0, 0, 0))), 0)
    execute(ledger, c.AllocateOrders((OrderSpec(
        "o", "web", SlaTier.STANDARD, (OrderLineSpec("1", "x", 1), OrderLineSpec("2", "y", 1)),
        postal_code="1"),)), 0)
