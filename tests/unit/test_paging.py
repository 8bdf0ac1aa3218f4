"""Pages of a listing read where the last one ended: every record the filter keeps, once,
in order, whatever the page size; records made while paging come on later pages; with
pages by number, records that leave the listing meanwhile move no other; bad page sizes
and tokens are refused."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import InvalidArgument
from service.paging import (
    DEFAULT_PAGE,
    MAX_PAGE,
    page,
    page_by_number,
    page_in_number_order,
    page_open,
)


def request(size: int = 0, token: str = "") -> SimpleNamespace:
    return SimpleNamespace(page_size=size, page_token=token)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 9), max_size=80), st.integers(1, 9), st.integers(1, 12),
       st.lists(st.integers(0, 9), max_size=10))
def test_pages_read_every_kept_record_once_in_order(values, modulus, size, added):
    records = dict(enumerate(values))
    def keep(v: int) -> bool:
        return v % modulus == 0

    expected = [v for v in values if keep(v)]
    read, token = [], ""
    for pages in range(1, len(values) + len(added) + 2):  # (more pages than records: a loop)
        found, token = page(records.values(), request(size, token), keep)
        assert len(found) <= size
        assert found or (not read and not token)  # no empty page, but an empty listing's
        read += found
        if pages == 1 and token:  # records made while paging through: they come last
            for v in added:
                records[len(records)] = v
            expected += [v for v in added if keep(v)]
        if not token:
            break
    assert read == expected and not token


def _by_number_then_bisected(records, req, number, keep):
    """page_in_number_order's page, checked to be page_by_number's."""
    found = page_in_number_order(records, req, number, keep)
    assert found == page_by_number(records, req, number, keep)
    return found


@pytest.mark.parametrize("paging", [page_by_number, _by_number_then_bisected])
@settings(max_examples=300, deadline=None)
@given(st.lists(st.booleans(), max_size=60), st.integers(1, 7), st.data())
def test_pages_by_number_skip_nothing_when_records_leave(paging, kept, size, data):
    """The open exceptions: some are resolved (leave the listing) between two pages;
    every exception kept, read by bisection: those of archived orders leave."""
    listing = {n * 3: n for n in range(len(kept))}  # number -> record, in order
    def keep(n: int) -> bool:
        return kept[n]

    read, token, gone = [], "", set()
    for _ in range(len(kept) + 1):
        found, token = paging(list(listing.values()), request(size, token), lambda n: n * 3,
                              keep)
        assert len(found) <= size
        read += found
        if not token:
            break
        for number in data.draw(st.lists(st.sampled_from(sorted(listing)), max_size=3)):
            if listing.pop(number, None) is not None:
                gone.add(number // 3)
    assert not token
    # Every record that stayed is read once, in order; one that left may or may not be.
    stayed = [n for n in range(len(kept)) if kept[n] and n not in gone]
    assert [n for n in read if n not in gone] == stayed
    assert read == sorted(set(read))


def test_page_sizes_default_and_cap():
    records = list(range(2 * MAX_PAGE))
    assert len(page(records, request(), lambda _: True)[0]) == DEFAULT_PAGE
    assert len(page(records, request(10**6), lambda _: True)[0]) == MAX_PAGE
    assert page(records, request(5), lambda _: True) == ([0, 1, 2, 3, 4], "5")


@pytest.mark.parametrize("token", ["x", "-1", "1.5", "٣", "99", " 1"])
def test_a_token_this_server_did_not_give_is_refused(token):
    with pytest.raises(InvalidArgument) as refused:
        page(list(range(10)), request(3, token), lambda _: True)
    assert refused.value.field == "page_token"


def test_a_negative_page_size_is_refused():
    for listing in (lambda r: page([1], r, bool),
                    lambda r: page_by_number([1], r, int, bool)):
        with pytest.raises(InvalidArgument) as refused:
            listing(request(-1))
        assert refused.value.field == "page_size"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.booleans(), max_size=60), st.integers(1, 7), st.data())
def test_open_pages_read_the_open_records_and_share_the_whole_listings_tokens(open_, size,
                                                                           data):
    """The open ones read from the places the books keep: what filtering the whole
    listing finds, with the same tokens; one closed between pages moves no other."""
    records = {f"r{k}": k for k in range(len(open_))}
    places = {f"r{k}": k for k in range(len(open_)) if open_[k]}
    even = data.draw(st.booleans())

    def keep(v: int) -> bool:
        return not even or v % 2 == 0

    first, token = page_open(records, places, request(size), keep)
    assert (first, token) == page(records.values(), request(size),
                                  lambda v: f"r{v}" in places and keep(v))
    read, closed = list(first), set()
    for _ in range(len(open_) + 1):
        if not token:
            break
        for record_id in data.draw(st.lists(st.sampled_from(sorted(records)), max_size=2)):
            if places.pop(record_id, None) is not None:
                closed.add(records[record_id])
        found, token = page_open(records, places, request(size, token), keep)
        read += found
    assert not token
    stayed = [v for v in range(len(open_)) if open_[v] and keep(v) and v not in closed]
    assert [v for v in read if v not in closed] == stayed
    assert read == sorted(set(read))
