"""What the books value units at: a purchase line at its own cost, landed cost shared by
what its receipt brought in, and a refused count gain taken back as it was booked."""

from __future__ import annotations

import pickle

import pytest

from core import commands as c
from core.errors import InvalidArgument
from core.exceptions import Resolution
from core.finance import Account, Books, reconcile
from core.ledger import Ledger, LedgerSettings
from core.model import AdjustReason, ChannelSpec, NodeSpec, SkuSpec
from core.operations import execute
from tests.unit.test_orders_stateful import NETWORK

NOW = 1_000

UNIT = 1_000_000


def _ledger(**settings) -> tuple[Ledger, list]:
    """Three nodes, SKUs 'a' and 'b' at 1.00 standard cost, and the log of it all."""
    ledger, log = Ledger(LedgerSettings(n_shards=2, **settings)), []
    _run(ledger, log,
         c.SetRules((), 1),
         c.UpsertNodes((NodeSpec("n0", latitude=40.0, longitude=-75.0),
                        NodeSpec("n1", latitude=34.0, longitude=-118.0),
                        NodeSpec("n2", latitude=41.8, longitude=-87.6))),
         c.UpsertChannels((ChannelSpec("web"), ChannelSpec("mkt"))),
         c.UpsertSkus(tuple(SkuSpec(s, weight_lb=1, unit_cost_micros=UNIT,
                                    price_micros=2 * UNIT) for s in ("a", "b"))),
         c.SetNetwork(NETWORK))
    return ledger, log


def _run(ledger: Ledger, log: list, *commands) -> None:
    for command in commands:
        log.extend(execute(ledger, command, NOW).events)


def _balanced(ledger: Ledger, log: list) -> None:
    """The books reconcile, balance, read back the same from a snapshot, and a replay of
    the log gives the same state."""
    books = ledger.books
    assert reconcile(ledger).reconciled and sum(books.trial_balance().values()) == 0
    assert all(books.value.get(s, 0) == 0 for s, units in books.units.items() if not units)
    back = pickle.loads(pickle.dumps(books))
    assert (back.value, back.units, back.po_lines, back.receipts, back.held_gains) == (
        books.value, books.units, books.po_lines, books.receipts, books.held_gains)
    replayed = Ledger(ledger.settings)
    replayed.apply(log, replay=True)
    assert replayed.checksum() == ledger.checksum()
    assert replayed.books.last_hash == books.last_hash


def test_a_purchase_s_lines_are_each_received_at_their_own_cost():
    ledger, log = _ledger()
    a = ledger.catalog.sku("a")
    _run(ledger, log,
         c.ExpectInbound("PO1", (c.InboundLine("a", "n0", 10, NOW + 5, unit_cost_micros=UNIT),
                                 c.InboundLine("a", "n1", 10, NOW + 5,
                                               unit_cost_micros=3 * UNIT))),
         c.ExpectInbound("PO2", (c.InboundLine("a", "n0", 5, NOW + 5, unit_cost_micros=UNIT),)),
         c.ExpectInbound("PO2", (c.InboundLine("a", "n0", 5, NOW + 5,
                                               unit_cost_micros=3 * UNIT),)),
         c.ReceiveStock((c.ReceiptLine("a", "n0", 10, inbound_reference="PO1"),)))
    assert -ledger.books.balances[Account.ACCOUNTS_PAYABLE] == 10 * UNIT
    _run(ledger, log, c.ReceiveStock((c.ReceiptLine("a", "n0", 4, inbound_reference="PO2"),)),
         c.ReceiveStock((c.ReceiptLine("a", "n0", 6, inbound_reference="PO2"),)),
         c.ReceiveStock((c.ReceiptLine("a", "n1", 10, inbound_reference="PO1"),)))
    # PO1: 10 x 1 + 10 x 3; PO2: 5 x 1 + 5 x 3, received in two parts.
    assert -ledger.books.balances[Account.ACCOUNTS_PAYABLE] == (40 + 20) * UNIT
    assert ledger.books.value[a] == 60 * UNIT and not ledger.books.po_lines
    _balanced(ledger, log)


def test_landed_cost_is_shared_by_what_its_receipt_brought_in():
    ledger, log = _ledger()
    a, b = ledger.catalog.sku("a"), ledger.catalog.sku("b")
    _run(ledger, log, c.ReceiveStock((c.ReceiptLine("a", "n0", 1000),), "OLD"),
         c.ReceiveStock((c.ReceiptLine("a", "n0", 10), c.ReceiptLine("b", "n0", 10)), "R2"))
    before = dict(ledger.books.value)
    _run(ledger, log, c.AllocateLandedCost("R2", UNIT, "freight"))
    # The 1,000 older units of 'a' are no part of R2: half each.
    assert ledger.books.value[a] - before[a] == ledger.books.value[b] - before[b] == UNIT // 2
    _balanced(ledger, log)


def test_landed_cost_on_units_gone_already_is_cost_of_goods_sold():
    ledger, log = _ledger()
    b = ledger.catalog.sku("b")
    _run(ledger, log, c.ReceiveStock((c.ReceiptLine("a", "n0", 10),
                                      c.ReceiptLine("b", "n0", 10)), "R1"),
         c.AdjustStock((c.AdjustLine("b", "n0", -6, AdjustReason.SHRINKAGE),), "lost"))
    before = ledger.books.value[b]
    cogs = ledger.books.balances.get(Account.COST_OF_GOODS_SOLD, 0)
    _run(ledger, log, c.AllocateLandedCost("R1", 2 * UNIT, "duty"))
    # b's half (1.00): the 4 of its 10 still on hand take 0.40, the rest is a cost now.
    assert ledger.books.value[b] - before == 400_000
    assert ledger.books.balances[Account.COST_OF_GOODS_SOLD] - cogs == 600_000
    _balanced(ledger, log)


@pytest.mark.parametrize("later_cost", [10 * UNIT, UNIT // 10])
def test_found_units_refused_take_back_the_gain_booked_for_them(later_cost):
    ledger, log = _ledger(count_hold_units=5)
    a = ledger.catalog.sku("a")
    _run(ledger, log, c.ReceiveStock((c.ReceiptLine("a", "n0", 10, unit_cost_micros=UNIT),)),
         c.SubmitCycleCount((c.CountLine("a", "n0", 20),), "cc1"))
    (line,) = [e for e in log if e.reference.startswith("count-")]
    assert ledger.books.balances[Account.INVENTORY_GAINS] == -10 * UNIT
    _run(ledger, log, c.ReceiveStock((c.ReceiptLine("a", "n1", 80,
                                                    unit_cost_micros=later_cost),)),
         c.ResolveException(line.reference, Resolution.REJECT, actor="boss",
                            role="operations"))
    books = ledger.books
    # The 10 found units never were: the books hold what was bought, and the gain is gone.
    assert books.units[a] == 90 and books.value[a] == 10 * UNIT + 80 * later_cost
    assert books.balances.get(Account.INVENTORY_GAINS, 0) == 0
    assert books.balances.get(Account.INVENTORY_WRITE_OFFS, 0) == 0
    assert not books.held_gains
    _balanced(ledger, log)


def test_books_from_a_snapshot_before_lines_kept_their_cost_still_post():
    """Books written before purchase lines, receipts and held gains kept what they do now
    read back, and post as they did then where they lack it."""
    ledger, log = _ledger()
    a = ledger.catalog.sku("a")
    _run(ledger, log,
         c.ExpectInbound("PO1", (c.InboundLine("a", "n0", 10, NOW + 5,
                                               unit_cost_micros=2 * UNIT),)),
         c.ReceiveStock((c.ReceiptLine("a", "n1", 10),), "R1"))
    state = ledger.books.__getstate__()
    del state["po_lines"], state["held_gains"]
    state["po_cost"] = {("PO1", a): 2 * UNIT}
    state["receipts"] = {"R1": [a]}
    old = Books.__new__(Books)
    old.__setstate__(state)
    assert old.receipts == {"R1": {a: [0, 0]}} and old.po_lines == {} == old.held_gains
    ledger.books = old
    _run(ledger, log, c.ReceiveStock((c.ReceiptLine("a", "n0", 10, inbound_reference="PO1"),)),
         c.AllocateLandedCost("R1", UNIT, "freight"))
    assert -old.balances[Account.ACCOUNTS_PAYABLE] == 30 * UNIT  # (10 x 1.00 and 10 x 2.00)
    assert old.value[a] == 31 * UNIT
    assert reconcile(ledger).reconciled and sum(old.trial_balance().values()) == 0


@pytest.mark.parametrize("field", ["unit_cost_micros", "price_micros"])
def test_a_sku_s_cost_and_price_are_bounded_as_a_receipt_s_unit_cost_is(field):
    ledger, _ = _ledger()
    before = ledger.checksum()
    with pytest.raises(InvalidArgument, match=f"skus\\[0\\].{field} must be between 0 and"):
        execute(ledger, c.UpsertSkus((SkuSpec("c", **{field: 10**12 + 1}),)), NOW)
    assert ledger.checksum() == before


def test_a_line_expected_again_after_an_older_snapshot_keeps_its_earlier_units_value():
    """Books from an older snapshot know a line's cost, not its units: when more of the
    same purchase, SKU and node are expected, the units in transit keep that cost."""
    ledger, log = _ledger()
    a = ledger.catalog.sku("a")
    _run(ledger, log, c.ExpectInbound("PO1", (c.InboundLine("a", "n0", 10, NOW + 5,
                                                            unit_cost_micros=2 * UNIT),)))
    state = ledger.books.__getstate__()
    del state["po_lines"], state["held_gains"]
    state["po_cost"] = {("PO1", a): 2 * UNIT}
    old = Books.__new__(Books)
    old.__setstate__(state)
    ledger.books = old
    _run(ledger, log, c.ExpectInbound("PO1", (c.InboundLine("a", "n0", 10, NOW + 5,
                                                            unit_cost_micros=UNIT),)),
         c.ReceiveStock((c.ReceiptLine("a", "n0", 20, inbound_reference="PO1"),)))
    assert -old.balances[Account.ACCOUNTS_PAYABLE] == 30 * UNIT  # 10 x 2.00 + 10 x 1.00
    assert old.value[a] == 30 * UNIT and not old.po_lines


@pytest.mark.parametrize("command", [
    c.ReceiveStock((c.ReceiptLine("a", "n0", 10**7, unit_cost_micros=10**12),)),
    c.ExpectInbound("PO1", (c.InboundLine("a", "n0", 10**7, NOW + 5,
                                          unit_cost_micros=10**12),)),
    # At the SKU's standard cost (no unit cost given): 10**5 x 10**12.
    c.ReceiveStock((c.ReceiptLine("a", "n0", 1), c.ReceiptLine("dear", "n0", 10**5))),
])
def test_a_line_worth_more_than_the_books_can_total_is_refused(command):
    ledger, log = _ledger()
    _run(ledger, log, c.UpsertSkus((SkuSpec("dear", weight_lb=1, unit_cost_micros=10**12),)))
    before = ledger.checksum()
    with pytest.raises(InvalidArgument, match="more than a line may be") as refused:
        execute(ledger, command, NOW)
    assert refused.value.field.endswith(".quantity")
    assert ledger.checksum() == before
    # At the cap itself, taken: 10**4 units at 10**12.
    _run(ledger, log, c.ReceiveStock((c.ReceiptLine("dear", "n0", 10**4),)))
    assert ledger.books.value[ledger.catalog.sku("dear")] == 10**16
    _balanced(ledger, log)
