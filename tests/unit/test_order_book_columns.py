"""The order book in a snapshot: written as columns, read back the same, object for object
(the workflows themselves are covered by test_orders_stateful's invariant)."""

from __future__ import annotations

import pytest

from core.network import SlaTier
from core.orders import (
    AddressStatus,
    Backorder,
    Decision,
    Option,
    OptionKind,
    OrderBook,
    OrderLineSpec,
    OrderSpec,
    PackageLine,
    PackagePlan,
    PackageStatus,
    PaymentStatus,
    ReplanRecord,
)
from service.logcodec import dumps, loads
from tests.unit.test_orders_stateful import plans_shared


def _plan(package_id: str, node: int, lines: tuple[PackageLine, ...]) -> PackagePlan:
    return PackagePlan(package_id, node, 1, lines, 8_150_000, 1_300_000, 230_000, 4_000_000,
                       17, 1_794_960_000_000, 1_795_046_400_000)


def _book(latitude: float | int | None = 40.7128) -> OrderBook:
    book = OrderBook()
    spec = OrderSpec("o-1", "web", SlaTier.PREMIUM,
                     (OrderLineSpec("1", "SKU-1", 3), OrderLineSpec("2", "SKU-2", 1)),
                     postal_code="10001", latitude=latitude, longitude=-74.006,
                     deliver_by_ms=1_795_200_000_000, payment=PaymentStatus.ON_HOLD,
                     fraud_score=0.25, address=AddressStatus.VALID, allow_split=False,
                     allow_substitution=True, customer_id="Åsa Öberg")
    book.receive(spec, 2**40)
    first = _plan("o-1-P1", 3, (PackageLine("1", 11, 2), PackageLine("2", 12, 1, 7)))
    book.allocate(Decision("o-1", (first,), (Backorder("1", 11, 1, 1_795_300_000_000),), 1,
                           "cheapest landed cost: ship complete from ATL6",
                           (Option(OptionKind.SHIP_COMPLETE, True, 11_080_000, 1, True,
                                   "one package from one node"),
                            Option(OptionKind.SPLIT, False, 0, 0, False, "several packages")),
                           ))
    # A re-plan: the first package is superseded, its plan no longer the decision's.
    book.replan(ReplanRecord("o-1", ("o-1-P1",), 11_080_000, 9_000_000))
    book.allocate(Decision("o-1", (_plan("o-1-P2", 5, (PackageLine("1", 11, 2),)),), (), 0,
                           "re-planned", (), no_feasible_node=True))
    state = book.packages["o-1-P2"]
    state.status = PackageStatus.SHIPPED
    state.wave_id = "W-7"
    state.tracking_number = "1Z999AA10123456784"
    state.pack_mismatch = True
    state.shipped_ms = 1_795_100_000_000
    state.unit_prices["1"] = 19_990_000
    book.orders["o-1"].cancelled["2"] = 1
    book.receive(OrderSpec("o-2", "mkt", SlaTier.WHOLESALE, (OrderLineSpec("1", "SKU-3", 1),)),
                 9)  # received, never decided
    return book


def test_the_book_reads_back_object_for_object():
    book = _book()
    assert book.packages["o-1-P1"].status == PackageStatus.REPLANNED
    assert not isinstance(book.__reduce__()[2], dict), "written as columns"
    back = loads(dumps(book))
    assert repr(back.orders) == repr(book.orders)  # (repr tells enums and bools from ints)
    assert repr(back.packages) == repr(book.packages)
    assert (back.node_day_orders, back.waves) == (book.node_day_orders, book.waves)
    assert plans_shared(back) == plans_shared(book) == [False, True]
    record = back.orders["o-1"]
    assert back.packages["o-1-P2"].order_id is record.spec.order_id
    assert record.last_decision is not None
    assert record.last_decision.order_id is record.spec.order_id


def test_a_value_columns_cannot_hold_falls_back_to_objects():
    book = _book(latitude=40)  # an int where a float is expected: kept as it is
    state = book.__reduce__()[2]
    assert isinstance(state, dict)
    back = loads(dumps(book))
    assert repr(back.orders) == repr(book.orders)
    assert back.orders["o-1"].spec.latitude == 40 and type(back.orders["o-1"].spec.latitude) is int


@pytest.mark.parametrize("field", [
    {"tier": 99}, {"tier": 2}, {"payment": 1}, {"allow_split": 2}, {"deliver_by_ms": 1.5},
    {"fraud_score": None}])
def test_a_value_of_the_wrong_kind_falls_back_and_reads_back_as_it_was(field):
    # (A value that is not a member, a bool, an int or a float where one belongs would read
    # back as something else, or not at all; written the old way, it reads back as it is.)
    book = OrderBook()
    spec = OrderSpec("o-1", "web", SlaTier.PREMIUM, (OrderLineSpec("1", "a", 1),))
    book.receive(spec._replace(**field), 1)
    assert isinstance(book.__reduce__()[2], dict)
    assert repr(loads(dumps(book)).orders) == repr(book.orders)


def test_columns_of_an_unknown_layout_are_refused():
    cls, args, state = _book().__reduce__()
    with pytest.raises(ValueError, match="version 99"):
        cls(*args).__setstate__((99, *state[1:]))
