"""Pages of a listing (page_size, page_token, next_page_token), read where the last page
ended instead of from the start.

A listing's records are kept in the order they were made, and none is ever removed (an
acknowledged alert or a resolved exception stays, for its history), so a record's
position never changes: a page token is the position to read on from, skipped to
without looking at the records before it. Records made while a caller pages through
come last, on a later page. Listings whose records can leave (the open ones, and the
exceptions, which leave with their archived order) page by a number each record keeps
instead (`page_by_number`, `page_in_number_order`).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from core.errors import InvalidArgument

T = TypeVar("T")

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def page_size(request: Any) -> int:
    """The request's page size: DEFAULT_PAGE unless set, at most MAX_PAGE."""
    if request.page_size < 0:
        raise InvalidArgument("page_size must be >= 0", "page_size")
    return min(request.page_size or DEFAULT_PAGE, MAX_PAGE)


def token_number(token: str, upper: int) -> int:
    """The number a page token this server gave holds (0 for none), at most `upper`."""
    if not token:
        return 0
    if token.isdigit() and token.isascii() and int(token) <= upper:
        return int(token)
    raise InvalidArgument("page_token is not one this server gave", "page_token")


def page(records: Collection[T], request: Any, keep: Callable[[T], bool]
         ) -> tuple[list[T], str]:
    """The page of `records` (in order, never removed) that `request` asks for, of those
    `keep` accepts, and the token of the next page ("" after the last)."""
    size = page_size(request)
    start = token_number(request.page_token, len(records))
    found: list[T] = []
    # (islice skips the records before the page without a step of Python for each.)
    for position, record in enumerate(itertools.islice(records, start, None), start):
        if keep(record):
            if len(found) == size:
                return found, str(position)
            found.append(record)
    return found, ""


def page_by_number(records: Iterable[T], request: Any, number: Callable[[T], int],
                   keep: Callable[[T], bool]) -> tuple[list[T], str]:
    """`page` for records that may leave the listing (the open exceptions, as they are
    resolved): the token is the number (an increasing one each record has) to read on
    from, so a record that leaves does not move the ones after it."""
    size = page_size(request)
    start = token_number(request.page_token, 2**63 - 1)
    found: list[T] = []
    for record in records:
        if number(record) < start or not keep(record):
            continue
        if len(found) == size:
            return found, str(number(record))
        found.append(record)
    return found, ""


def page_in_number_order(records: Sequence[T], request: Any, number: Callable[[T], int],
                         keep: Callable[[T], bool]) -> tuple[list[T], str]:
    """`page_by_number` for records in ascending order of their number: the page's start
    found by bisection, not by looking at every record before it."""
    size = page_size(request)
    start = bisect.bisect_left(records, token_number(request.page_token, 2**63 - 1),
                               key=number)
    found: list[T] = []
    for record in itertools.islice(records, start, None):
        if keep(record):
            if len(found) == size:
                return found, str(number(record))
            found.append(record)
    return found, ""


def page_open(records: Mapping[str, T], open_places: Mapping[str, int], request: Any,
              keep: Callable[[T], bool]) -> tuple[list[T], str]:
    """`page` of the records still open (not acknowledged, done, reversed or decided),
    read from the open ones the books keep (`open_places`: id -> the record's place in
    `records`, in order) rather than by looking at every record ever made. Tokens are
    places in `records`, as `page` gives them for the whole listing."""
    found, token = page_by_number(((place, records[i]) for i, place in open_places.items()),
                                  request, _place_of, lambda item: keep(item[1]))
    return [record for _, record in found], token


def page_listing(records: Mapping[str, T], open_places: Mapping[str, int], request: Any,
                 keep: Callable[[T], bool], everything: bool) -> tuple[list[T], str]:
    """A page of a listing that holds the open records by default and every one with
    `everything` (include_acknowledged, include_completed, ...): `page` or `page_open`."""
    if everything:
        return page(records.values(), request, keep)
    return page_open(records, open_places, request, keep)


def _place_of(item: tuple[int, Any]) -> int:
    return item[0]


def keep_all(record: object) -> bool:
    """The filter of a listing without one."""
    del record
    return True
