"""Closed orders leave memory once their retention (and every return window) is over:
ArchiveOrders, its ORDER_ARCHIVED events, and what still knows the order afterwards."""

from __future__ import annotations

import pickle

import pytest

from core import commands as c
from core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from core.ledger import Ledger
from core.model import EventKind
from core.network import SlaTier
from core.operations import execute
from core.orders import OrderBook, OrderLineSpec, OrderSpec, OrderStatus, index_closed
from core.returns import DAY_MS, Grade, ReturnPolicy
from tests.unit.test_orders_stateful import NOW
from tests.unit.test_returns import ask, sell, world


class Recorded:
    """A ledger whose every event is kept (see _keep_events), to replay."""

    def __init__(self, policy: ReturnPolicy | None = None) -> None:
        self.policy = policy
        self.ledger = world(policy)

    def run(self, command: c.Command, at: int):
        return execute(self.ledger, command, at).detail

    def sell(self, order_id: str, at: int = NOW) -> None:
        sell(self.ledger, order_id, "shirt", 1, at=at)

    @property
    def events(self) -> list:
        return _LOG[id(self.ledger)]

    def replayed(self) -> Ledger:
        """A ledger of the same set-up and these events, read back as from the log."""
        fresh = world(self.policy)
        fresh.apply(tuple(e for e in self.events if e.seq > fresh.last_seq), replay=True)
        return fresh


_LOG: dict[int, list] = {}


@pytest.fixture(autouse=True)
def _keep_events(monkeypatch):
    """Every event applied to a ledger, by ledger, as the store would have them."""
    apply = Ledger.apply

    def keeping(self, events, floors=None, *, replay=False):
        apply(self, events, floors, replay=replay)
        if not replay:
            _LOG.setdefault(id(self), []).extend(events)

    monkeypatch.setattr(Ledger, "apply", keeping)
    yield
    _LOG.clear()


def _book_state(ledger: Ledger) -> tuple:
    book = ledger.orders
    return (sorted(book.orders), sorted(book.packages), dict(book.closed_ms),
            sorted(book.archived), {k: v for k, v in book.status_counts.items() if v},
            sorted(ledger.kpis.decided))


def test_a_shipped_order_is_archived_after_its_retention_and_not_before():
    shop = Recorded()
    shop.sell("o1")
    shop.sell("o2", at=NOW + 5 * DAY_MS)
    book = shop.ledger.orders
    assert book.closed_ms == {"o1": NOW, "o2": NOW + 5 * DAY_MS}
    assert shop.run(c.ArchiveOrders(90), NOW + 89 * DAY_MS).order_ids == ()
    result = shop.run(c.ArchiveOrders(90), NOW + 91 * DAY_MS)
    assert result.order_ids == ("o1",)  # (o2 closed five days later)
    assert "o1" not in book.orders and "o1" in book.archived and "o1" not in book.closed_ms
    assert not any(p.startswith("o1-") for p in book.packages)
    assert book.status_counts[OrderStatus.SHIPPED] == 1
    assert "o1" not in shop.ledger.kpis.decided
    archived = [e for e in shop.events if e.kind == EventKind.ORDER_ARCHIVED]
    assert [e.reference for e in archived] == ["o1"]
    assert shop.run(c.ArchiveOrders(90), NOW + 96 * DAY_MS).order_ids == ("o2",)


def test_the_longest_return_window_holds_an_order_back_whatever_the_retention():
    shop = Recorded(ReturnPolicy(window_days=30, channel_window_days=(("web", 45),)))
    shop.sell("o1")
    assert shop.run(c.ArchiveOrders(0), NOW + 44 * DAY_MS).order_ids == ()
    assert shop.run(c.ArchiveOrders(0), NOW + 46 * DAY_MS).order_ids == ("o1",)


def test_an_order_with_an_open_return_or_exception_stays():
    shop = Recorded()
    shop.sell("o1")
    shop.sell("o2")
    assert ask(shop.ledger, "r1", "o1", 1, NOW + DAY_MS).eligible  # (still open)
    spec = OrderSpec("o3", "web", SlaTier.STANDARD, (OrderLineSpec("1", "shirt", 1),),
                     postal_code="10001")
    shop.run(c.AllocateOrders((spec,)), NOW)
    shop.run(c.CancelOrder("o3"), NOW)  # cancelled whole: closed
    assert "o3" in shop.ledger.orders.closed_ms
    found = shop.run(c.ArchiveOrders(0, limit=10), NOW + 200 * DAY_MS).order_ids
    assert set(found) == {"o2", "o3"}
    assert "o1" in shop.ledger.orders.orders


def test_a_return_inspected_and_refunded_no_longer_holds_its_order_back():
    shop = Recorded()
    shop.sell("o1")
    assert ask(shop.ledger, "r1", "o1", 1, NOW + DAY_MS).eligible
    later = NOW + 200 * DAY_MS
    assert shop.run(c.ArchiveOrders(90), later).order_ids == ()  # (the return is open)
    shop.run(c.ReceiveReturn("r1", (), actor="clerk"), NOW + 2 * DAY_MS)
    shop.run(c.InspectReturn("r1", (("1", int(Grade.LIKE_NEW)),), actor="clerk"), NOW + 2 * DAY_MS)
    record = shop.ledger.returns.returns["r1"]
    assert record.refunded_micros and not record.approval_id and record.done
    assert shop.run(c.ArchiveOrders(90), later).order_ids == ("o1",)


def test_an_archived_order_id_stays_taken_and_its_record_is_gone_with_a_reason():
    shop = Recorded()
    shop.sell("o1")
    later = NOW + 120 * DAY_MS
    shop.run(c.ArchiveOrders(90), later)
    spec = OrderSpec("o1", "web", SlaTier.STANDARD, (OrderLineSpec("1", "shirt", 1),),
                     postal_code="10001")
    outcome = execute(shop.ledger, c.AllocateOrders((spec,)), later).detail.outcomes[0]
    assert isinstance(outcome.error, AlreadyExists)
    with pytest.raises(FailedPrecondition, match="archived"):
        ask(shop.ledger, "r1", "o1", 1, later)
    with pytest.raises(NotFound, match="archived"):
        execute(shop.ledger, c.CancelOrder("o1"), later)


def test_the_limit_takes_the_oldest_first():
    shop = Recorded()
    for k in range(5):
        shop.sell(f"o{k}", at=NOW + k * DAY_MS)
    assert shop.run(c.ArchiveOrders(90, limit=2), NOW + 200 * DAY_MS).order_ids == ("o0", "o1")
    assert shop.run(c.ArchiveOrders(90, limit=2), NOW + 200 * DAY_MS).order_ids == ("o2", "o3")


def test_bad_arguments_change_nothing():
    shop = Recorded()
    shop.sell("o1")
    before = _book_state(shop.ledger)
    for bad in (c.ArchiveOrders(-1), c.ArchiveOrders(float("nan")), c.ArchiveOrders(1, 0)):
        with pytest.raises(InvalidArgument, match=r"retention_days|limit"):
            execute(shop.ledger, bad, NOW + 200 * DAY_MS)
    assert _book_state(shop.ledger) == before


def test_replay_and_snapshots_keep_what_was_archived_and_when_orders_closed():
    shop = Recorded()
    for k in range(3):
        shop.sell(f"o{k}", at=NOW + k * DAY_MS)
    shop.run(c.ArchiveOrders(90), NOW + 91 * DAY_MS)
    assert _book_state(shop.replayed()) == _book_state(shop.ledger)
    back = pickle.loads(pickle.dumps(shop.ledger))
    assert _book_state(back) == _book_state(shop.ledger)
    assert back.orders.archived == {"o0"}


def test_a_snapshot_from_before_archiving_knows_when_its_orders_closed():
    shop = Recorded()
    shop.sell("o1")
    shop.sell("o2", at=NOW + 3 * DAY_MS)
    book = shop.ledger.orders
    _, _, state = book.__reduce__()
    older = OrderBook()  # (as pickle makes it)
    older.__setstate__(state[:6])  # (the columns as written before: no closed times)
    assert older.closed_ms == {"o1": NOW, "o2": NOW + 3 * DAY_MS}
    assert older.archived == set()
    assert index_closed(book.orders, book.packages) == book.closed_ms
    # Pickle's default form, older still: the object made without __init__, its fields set.
    fields = {k: v for k, v in vars(book).items()
              if k not in ("closed_ms", "archived", "packages_archived")}
    oldest = OrderBook.__new__(OrderBook)
    oldest.__setstate__(fields)
    assert (oldest.closed_ms, oldest.archived) == (book.closed_ms, set())
    shop.ledger.orders = oldest
    assert shop.run(c.ArchiveOrders(90), NOW + 120 * DAY_MS).order_ids == ("o1", "o2")


def test_packages_made_after_an_archive_still_join_their_nodes_wave_queue():
    """A node's wave queue takes in the packages stamped since its last wave; stamps count
    the packages made, archived ones included, so a new one is never taken as seen."""
    shop = Recorded()
    shop.sell("o1")  # (its wave made n0's queue)
    later = NOW + 120 * DAY_MS
    assert shop.run(c.ArchiveOrders(90), later).order_ids == ("o1",)
    spec = OrderSpec("o2", "web", SlaTier.STANDARD, (OrderLineSpec("1", "shirt", 1),),
                     postal_code="10001")
    shop.run(c.AllocateOrders((spec,)), later)
    (package_id,) = shop.ledger.orders.orders["o2"].package_ids
    assert shop.run(c.ReleaseWave("n0"), later).package_ids == (package_id,)
