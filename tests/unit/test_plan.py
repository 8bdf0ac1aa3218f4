"""Plan.add_move makes the very event Plan.add makes from the same fields."""

from __future__ import annotations

from core.ledger import Ledger
from core.model import Bucket, EventKind
from core.plan import Plan


def test_add_move_is_add_with_the_fields_in_order():
    by_name, in_order = Plan(Ledger(), "req-1", 1_000), Plan(Ledger(), "req-1", 1_000)
    for floor, channel in ((0, -1), (3, 2), (0, 0)):
        by_name.add(EventKind.ORDER_UNITS_ALLOCATED, floor, sku=5, node=1,
                    from_bucket=Bucket.AVAILABLE, to_bucket=Bucket.ALLOCATED, quantity=4,
                    reference="o-1-P1", channel=channel)
        in_order.add_move(EventKind.ORDER_UNITS_ALLOCATED, floor, 5, 1, Bucket.AVAILABLE,
                          Bucket.ALLOCATED, 4, "o-1-P1", channel)
        by_name.add(EventKind.ORDER_ALLOCATED, reference="o-1")
        in_order.add(EventKind.ORDER_ALLOCATED, reference="o-1")
    assert in_order.events == by_name.events
    assert in_order.floors == by_name.floors
