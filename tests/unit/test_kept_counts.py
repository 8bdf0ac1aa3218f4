"""What the books keep as they change (orders by status, each node's packages waiting for
a wave, the open exceptions) comes back from a snapshot written before they kept it."""

from __future__ import annotations

import copyreg
import io
import pickle

from core.exceptions import ExceptionBook
from core.orders import OrderBook, OrderStatus
from service.logcodec import loads
from tests.unit.test_log_columns import _joined_allocation


def _written_before(obj: object, drop: tuple[str, ...]) -> bytes:
    """`obj` pickled in the default form (its attributes), without the ones in `drop`:
    as a snapshot written before those were kept holds it."""

    class Before(pickle.Pickler):
        def reducer_override(self, other: object) -> object:
            if other is obj:
                state = {k: v for k, v in vars(obj).items() if k not in drop}
                return copyreg.__newobj__, (type(obj),), state
            return NotImplemented

    buffer = io.BytesIO()
    Before(buffer, protocol=5).dump(obj)
    return buffer.getvalue()


def test_an_order_book_written_before_the_counts_counts_again_when_read() -> None:
    ledger, _ = _joined_allocation()
    book = ledger.orders
    assert {s: n for s, n in book.status_counts.items() if n} == {
        OrderStatus.ALLOCATED: 1, OrderStatus.PARTIALLY_ALLOCATED: 1}
    assert sum(len(ids) for ids in book.allocated_at.values()) == len(book.packages) > 0
    assert set(book.open_orders) == set(book.orders)  # both allocated, nothing released
    back = loads(_written_before(book, ("status_counts", "allocated_at", "open_orders")))
    assert isinstance(back, OrderBook)
    assert set(back.open_orders) == set(book.open_orders)
    assert {s: n for s, n in back.status_counts.items() if n} == {
        s: n for s, n in book.status_counts.items() if n}
    assert {n: list(ids) for n, ids in back.allocated_at.items()} == {
        n: list(ids) for n, ids in book.allocated_at.items()}


def test_an_exception_book_written_before_the_open_ones_finds_them_when_read() -> None:
    ledger, _ = _joined_allocation()
    book = ledger.exceptions
    assert len(book.open_ids) == 1  # the second order's backorder
    back = loads(_written_before(book, ("open_ids",)))
    assert isinstance(back, ExceptionBook)
    assert list(back.open_ids) == list(book.open_ids)
