"""An order's backorder exceptions close once a decision leaves nothing of it backordered,
whichever command made that decision (a short pick's re-allocation, a retry), and with
the exception that settles them for all; a pack mismatch accepted closes the package's
earlier ones; units cancelled out of a picked or packed package wait for put-away."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from core import commands as c
from core.errors import FailedPrecondition
from core.exceptions import ExceptionType, Resolution
from core.ledger import Ledger, LedgerSettings
from core.model import Bucket
from core.network import SlaTier
from core.operations import execute
from core.orders import OrderLineSpec, OrderSpec, PackageStatus
from tests.unit.shop import shop
from tests.unit.test_orders_stateful import DAY_MS, NOW


def _ledger() -> Ledger:
    ledger = Ledger(LedgerSettings(n_shards=2))
    for command in shop({("shirt", "n0"): 50}, n_nodes=1):
        execute(ledger, command, NOW)
    return ledger


def _open(ledger: Ledger, kind: ExceptionType) -> list[str]:
    return [e.exception_id for e in ledger.exceptions.open_for("o1")
            if e.exception_type == kind]


def _order(quantity: int) -> c.AllocateOrders:
    return c.AllocateOrders((OrderSpec("o1", "web", SlaTier.STANDARD,
                                       (OrderLineSpec("1", "shirt", quantity),),
                                       postal_code="10001"),))


def test_a_short_pick_that_fills_the_backorder_closes_its_exception():
    ledger = _ledger()
    execute(ledger, _order(60), NOW)  # 50 placed, 10 backordered
    assert len(_open(ledger, ExceptionType.BACKORDER)) == 1
    # 20 more received while n0 is disabled (not offered to the backorder on arrival),
    # then n0 enabled again (not an arrival): the backorder still waits.
    node = ledger.catalog.nodes[ledger.catalog.node("n0")]
    execute(ledger, c.UpsertNodes((dataclasses.replace(node, enabled=False),)), NOW)
    execute(ledger, c.ReceiveStock((c.ReceiptLine("shirt", "n0", 20),)), NOW)
    execute(ledger, c.UpsertNodes((node,)), NOW)
    assert ledger.orders.orders["o1"].backorders["1"].quantity == 10
    execute(ledger, c.ReleaseWave("n0"), NOW)
    execute(ledger, c.ConfirmPick("o1-P1", (("1", 49),)), NOW)  # 1 short: 11 placed again
    record = ledger.orders.orders["o1"]
    assert not record.backorders
    assert _open(ledger, ExceptionType.BACKORDER) == []
    # Shipped, its short pick accepted: nothing keeps it from being archived.
    for package_id, quantity in (("o1-P1", 49), ("o1-P2", 11)):
        if ledger.orders.packages[package_id].status.name == "ALLOCATED":
            execute(ledger, c.ReleaseWave("n0"), NOW)
        if ledger.orders.packages[package_id].status.name == "RELEASED":
            execute(ledger, c.ConfirmPick(package_id, ()), NOW)
        execute(ledger, c.ConfirmPack(package_id, (("shirt", quantity),)), NOW)
        execute(ledger, c.ConfirmShipment(package_id, "T"), NOW)
    (short,) = _open(ledger, ExceptionType.SHORT_PICK)
    execute(ledger, c.ResolveException(short, Resolution.ACCEPT, role="warehouse"), NOW)
    # A count variance (no order) raised meanwhile, and another order's exception, stay.
    execute(ledger, c.SubmitCycleCount((c.CountLine("shirt", "n0", 30),)), NOW)
    execute(ledger, c.AllocateOrders((OrderSpec(
        "o2", "web", SlaTier.STANDARD, (OrderLineSpec("1", "shirt", 999),),
        postal_code="10001"),)), NOW)
    raised = list(ledger.exceptions.by_order["o1"])
    assert len(raised) >= 2 and all(ledger.exceptions.by_id[e].resolved for e in raised)
    others = set(ledger.exceptions.by_id) - set(raised)
    assert len(others) == 2
    before = pickle.loads(pickle.dumps(ledger))
    archived = execute(ledger, c.ArchiveOrders(0), NOW + 400 * DAY_MS)
    assert archived.detail.order_ids == ("o1",)
    # Its exceptions left memory with it; the rest are as they were.
    book = ledger.exceptions
    assert set(book.by_id) == others and "o1" not in book.by_order
    assert "o1" not in book.open_by_order and not set(raised) & set(book.open_ids)
    before.apply(archived.events, replay=True)  # (a replay of the log does the same)
    assert set(before.exceptions.by_id) == others and before.checksum() == ledger.checksum()
    assert set(pickle.loads(pickle.dumps(ledger)).exceptions.by_id) == others


def test_a_short_pick_of_a_backordered_line_supersedes_its_backorder_exception():
    """The re-allocation after a short pick decides the line's whole backorder again and
    raises one exception for what it still lacks: the earlier one, for fewer units, is
    resolved in its favour, not left open beside it."""
    ledger = _ledger()
    execute(ledger, _order(60), NOW)  # 50 placed, 10 backordered: the first exception
    (first,) = _open(ledger, ExceptionType.BACKORDER)
    execute(ledger, c.ReleaseWave("n0"), NOW)
    execute(ledger, c.ConfirmPick("o1-P1", (("1", 45),)), NOW)  # 5 short, none left
    (second,) = _open(ledger, ExceptionType.BACKORDER)
    assert ledger.orders.orders["o1"].backorders["1"].quantity == 15
    assert ledger.exceptions.by_id[second].detail.startswith("15 units")
    superseded = ledger.exceptions.by_id[first]
    assert superseded.resolution == Resolution.RETRY and second in superseded.note
    # The stock arrives: the backorder is filled on receipt, and its exception closed.
    execute(ledger, c.ReceiveStock((c.ReceiptLine("shirt", "n0", 20),)), NOW)
    assert not ledger.orders.orders["o1"].backorders
    assert _open(ledger, ExceptionType.BACKORDER) == []
    filled = ledger.exceptions.by_id[second]
    assert filled.resolution == Resolution.RETRY and filled.note == "backorder filled"


def test_cancelling_the_backorders_closes_every_backorder_exception_of_the_order():
    ledger = Ledger(LedgerSettings(n_shards=2))
    for command in shop({("shirt", "n0"): 50, ("mug", "n0"): 5}, n_nodes=1):
        execute(ledger, command, NOW)
    execute(ledger, c.AllocateOrders((OrderSpec(
        "o1", "web", SlaTier.STANDARD, (OrderLineSpec("1", "shirt", 60),
                                        OrderLineSpec("2", "mug", 5)),
        postal_code="10001"),)), NOW)  # 10 shirts backordered: the first exception
    execute(ledger, c.ReleaseWave("n0"), NOW)
    # 2 mugs short, none left: the mug line's backorder raises a second exception (the
    # shirt line was not decided again, so the first still stands for it).
    execute(ledger, c.ConfirmPick("o1-P1", (("1", 50), ("2", 3))), NOW)
    first, second = _open(ledger, ExceptionType.BACKORDER)
    execute(ledger, c.ResolveException(second, Resolution.CANCEL, role="operations"), NOW)
    assert not ledger.orders.orders["o1"].backorders
    assert _open(ledger, ExceptionType.BACKORDER) == []
    assert ledger.exceptions.by_id[first].resolution == Resolution.CANCEL


def test_accepting_a_pack_mismatch_closes_the_package_s_earlier_mismatches():
    ledger = _ledger()
    execute(ledger, _order(2), NOW)
    execute(ledger, c.ReleaseWave("n0"), NOW)
    execute(ledger, c.ConfirmPick("o1-P1", ()), NOW)
    first = execute(ledger, c.ConfirmPack("o1-P1", (("shirt", 1),)), NOW).detail.exception_id
    second = execute(ledger, c.ConfirmPack("o1-P1", (("shirt", 3),)), NOW).detail.exception_id
    assert _open(ledger, ExceptionType.PACK_MISMATCH) == [first, second]
    execute(ledger, c.ResolveException(second, Resolution.ACCEPT, role="warehouse"), NOW)
    assert _open(ledger, ExceptionType.PACK_MISMATCH) == []
    assert ledger.exceptions.by_id[first].resolution == Resolution.ACCEPT
    execute(ledger, c.ConfirmShipment("o1-P1", "T"), NOW)
    archived = execute(ledger, c.ArchiveOrders(0), NOW + 400 * DAY_MS).detail
    assert archived.order_ids == ("o1",)


def test_margins_of_a_large_batch_are_python_s_own_past_what_int64_holds():
    """A batch of 16 or more orders reads its margins with numpy; a margin int64 cannot
    hold is read as Python reads it, so the batch's priority order stays right."""
    from core.decisions import margin_micros
    from core.model import SkuSpec
    from core.order_ops import _catalogue_margins

    ledger = _ledger()
    execute(ledger, c.UpsertSkus((SkuSpec("dear", price_micros=10**12),)), NOW)
    dear, shirt = ledger.catalog.sku("dear"), ledger.catalog.sku("shirt")
    orders = [(("1", shirt, 1),)] * 15 + [(("1", dear, 10**7),)]
    assert _catalogue_margins(ledger, orders) == [margin_micros(ledger, lines)
                                                   for lines in orders]
    assert _catalogue_margins(ledger, orders)[-1] == 10**19  # past int64's 9.2e18


def test_units_cancelled_out_of_a_packed_box_wait_for_put_away_and_the_box_is_packed_again():
    """Cancelled units already picked are in a tote or a sealed box, not on the shelf: sold
    at once, another order was given them while they sat in the box, and the box shipped
    with what its scan no longer matched."""
    ledger = _ledger()
    shirt = ledger.catalog.sku("shirt")
    execute(ledger, _order(3), NOW)
    execute(ledger, c.ReleaseWave("n0"), NOW)
    execute(ledger, c.ConfirmPick("o1-P1", ()), NOW)
    execute(ledger, c.ConfirmPack("o1-P1", (("shirt", 3),)), NOW)
    available = ledger.quantity(shirt, 0, Bucket.AVAILABLE)
    execute(ledger, c.CancelOrder("o1", (("1", 2),)), NOW)
    assert ledger.quantity(shirt, 0, Bucket.QUARANTINED) == 2  # to be put away
    assert ledger.quantity(shirt, 0, Bucket.AVAILABLE) == available  # not sold meanwhile
    package = ledger.orders.packages["o1-P1"]
    assert package.status == PackageStatus.PICKED and package.quantities == {"1": 1}
    with pytest.raises(FailedPrecondition, match="PICKED, not PACKED"):
        execute(ledger, c.ConfirmShipment("o1-P1", "T"), NOW)
    execute(ledger, c.ConfirmPack("o1-P1", (("shirt", 1),)), NOW)
    execute(ledger, c.ConfirmShipment("o1-P1", "T"), NOW)
    execute(ledger, c.MoveStock((c.MoveLine("shirt", "n0", 2, Bucket.QUARANTINED,
                                            Bucket.AVAILABLE),), "put-away"), NOW)
    assert ledger.quantity(shirt, 0, Bucket.AVAILABLE) == available + 2


def test_units_cancelled_before_the_pick_go_straight_back_to_sale():
    ledger = _ledger()
    shirt = ledger.catalog.sku("shirt")
    execute(ledger, _order(3), NOW)
    execute(ledger, c.ReleaseWave("n0"), NOW)  # in a wave, not picked yet: on the shelf
    available = ledger.quantity(shirt, 0, Bucket.AVAILABLE)
    execute(ledger, c.CancelOrder("o1", (("1", 2),)), NOW)
    assert ledger.quantity(shirt, 0, Bucket.AVAILABLE) == available + 2
    assert ledger.quantity(shirt, 0, Bucket.QUARANTINED) == 0


def test_a_cancel_logged_before_packed_packages_were_repacked_replays_as_it_ran():
    """The move back to PICKED is in the event (CancelRecord.repack): a cancel logged
    before it was, applied again, leaves its package PACKED, as the server that logged it
    did (the state, and its checksum, are what the log says)."""
    import dataclasses

    from core.model import EventKind

    ledger = _ledger()
    events = []
    for command in (_order(3), c.ReleaseWave("n0"), c.ConfirmPick("o1-P1", ()),
                    c.ConfirmPack("o1-P1", (("shirt", 3),)), c.CancelOrder("o1", (("1", 2),))):
        events += execute(ledger, command, NOW).events
    (cancel,) = [e for e in events if e.kind == EventKind.ORDER_CANCELLED]
    assert cancel.payload.repack == ("o1-P1",)
    older = [dataclasses.replace(e, payload=dataclasses.replace(e.payload, repack=()))
             if e is cancel else e for e in events]
    replayed = _ledger()
    replayed.apply(older, replay=True)
    assert replayed.orders.packages["o1-P1"].status == PackageStatus.PACKED


def test_a_snapshot_that_kept_an_archived_order_s_exceptions_loads_without_them(
        monkeypatch):
    """A snapshot written before an archived order's exceptions left memory with it holds
    them: loaded, it drops them, so it agrees with a replay of the same log."""
    from core.exceptions import ExceptionBook

    ledger = _ledger()
    execute(ledger, _order(60), NOW)  # 50 placed, 10 backordered: an exception
    (backorder,) = _open(ledger, ExceptionType.BACKORDER)
    execute(ledger, c.ResolveException(backorder, Resolution.CANCEL, role="operations"), NOW)
    execute(ledger, c.ReleaseWave("n0"), NOW)
    execute(ledger, c.ConfirmPick("o1-P1", ()), NOW)
    execute(ledger, c.ConfirmPack("o1-P1", (("shirt", 50),)), NOW)
    execute(ledger, c.ConfirmShipment("o1-P1", "T"), NOW)
    execute(ledger, c.SubmitCycleCount((c.CountLine("shirt", "n0", 30),)), NOW)  # stays
    live = pickle.loads(pickle.dumps(ledger))
    with monkeypatch.context() as patched:  # archived as a server before this did
        patched.setattr(ExceptionBook, "forget_order", lambda self, order_id: None)
        assert execute(ledger, c.ArchiveOrders(0), NOW + 400 * DAY_MS).detail.order_ids
        assert backorder in ledger.exceptions.by_id
        snapshot = pickle.dumps(ledger)
    execute(live, c.ArchiveOrders(0), NOW + 400 * DAY_MS)
    assert backorder not in live.exceptions.by_id and live.exceptions.by_id
    loaded = pickle.loads(snapshot)
    assert set(loaded.exceptions.by_id) == set(live.exceptions.by_id)
    assert "o1" not in loaded.exceptions.by_order
    assert loaded.checksum() == live.checksum()
    assert loaded.exceptions.in_order() == list(live.exceptions.by_id.values())


def test_every_exception_kept_is_listed_in_the_order_raised_as_they_come_and_go():
    """ExceptionBook.in_order (what ListExceptions with include_resolved bisects) keeps up
    with exceptions raised after it was read, and with an archive's."""
    from core.exceptions import ExceptionBook, ExceptionInfo

    book = ExceptionBook()

    def raise_(seq: int, order_id: str) -> None:
        book.raise_(f"EX-{seq}", ExceptionInfo(ExceptionType.BACKORDER, order_id, ""), 0, seq)

    raise_(1, "o1")
    raise_(2, "o2")
    assert [r.seq for r in book.in_order()] == [1, 2]
    raise_(3, "o1")
    raise_(4, "")
    assert [r.seq for r in book.in_order()] == [1, 2, 3, 4]
    book.forget_order("o1")
    assert [r.seq for r in book.in_order()] == [2, 4]
    raise_(5, "o3")
    assert [r.seq for r in book.in_order()] == [2, 4, 5]
    back = pickle.loads(pickle.dumps(book))
    assert [r.seq for r in back.in_order()] == [2, 4, 5] and "_listed" not in back.__getstate__()
    assert book.in_order() == list(book.by_id.values())
