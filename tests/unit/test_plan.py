"""Plan.add_move and Plan.add_record make the very event Plan.add makes from the same
fields."""

from __future__ import annotations

from core.decisions import margin_micros
from core.ledger import Ledger
from core.model import Bucket, EventKind
from core.operations import execute as run
from core.order_ops import _catalogue_margins
from core.plan import Plan
from tests.unit.shop import shop


def test_add_move_and_add_record_are_add_with_the_fields_in_order():
    by_name, in_order = Plan(Ledger(), "req-1", 1_000), Plan(Ledger(), "req-1", 1_000)
    for floor, channel in ((0, -1), (3, 2), (0, 0)):
        by_name.add(EventKind.ORDER_UNITS_ALLOCATED, floor, sku=5, node=1,
                    from_bucket=Bucket.AVAILABLE, to_bucket=Bucket.ALLOCATED, quantity=4,
                    reference="o-1-P1", channel=channel)
        in_order.add_move(EventKind.ORDER_UNITS_ALLOCATED, floor, 5, 1, Bucket.AVAILABLE,
                          Bucket.ALLOCATED, 4, "o-1-P1", channel)
        by_name.add(EventKind.ORDER_ALLOCATED, reference="o-1", payload=("a", floor))
        in_order.add_record(EventKind.ORDER_ALLOCATED, "o-1", ("a", floor))
    assert in_order.events == by_name.events
    assert in_order.floors == by_name.floors
    # Without floors, none are made up.
    plain, recorded = Plan(Ledger(), "req-2", 5), Plan(Ledger(), "req-2", 5)
    plain.add(EventKind.ORDER_RECEIVED, reference="o-2", payload="spec")
    recorded.add_record(EventKind.ORDER_RECEIVED, "o-2", "spec")
    assert recorded.events == plain.events and recorded.floors is plain.floors is None


def test_a_batch_s_margins_at_once_are_each_order_s_margin():
    # Large batches take numpy's path, small ones Python's: the same numbers either way.
    ledger = Ledger()
    for command in shop({("shirt", "n0"): 1, ("phone", "n0"): 1, ("mug", "n1"): 1,
                         ("socks", "n1"): 1}):
        run(ledger, command, 1)
    skus = [ledger.catalog.sku_index[s] for s in ("shirt", "phone", "mug", "socks")]
    orders = [tuple((f"l{k}", skus[(i + k) % 4], 1 + (i * k) % 5) for k in range(1 + i % 4))
              for i in range(40)]
    expected = [margin_micros(ledger, lines) for lines in orders]
    assert _catalogue_margins(ledger, orders) == expected
    assert _catalogue_margins(ledger, orders[:3]) == expected[:3]
    assert len(set(expected)) > 10
