"""Frozen records pickled before fields were added to them (in the log, in snapshots)
load with those fields at the values they stood for then, and pickle again: a snapshot
holding one used to fail (dataclasses' own __getstate__ reads every field)."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from core.approvals import ApprovalRequest, holds_of, refund_lines_of
from core.network import NetworkSpec
from core.returns import Refund, ReturnLine, fee_bp_of
from core.returns import refund_lines_of as lines_of_refund
from service.logcodec import dumps, loads


def _as_written_before(record: object, fields_then: int) -> object:
    """The record as an older version pickled it: its first `fields_then` fields."""
    state = [getattr(record, f.name) for f in dataclasses.fields(record)][:fields_then]
    old = type(record).__new__(type(record))
    old.__setstate__(state)
    return old


@pytest.mark.parametrize(("record", "fields_then", "read"), [
    (ReturnLine("1", 3, 2, 5_000_000, 1_500), 4, lambda r: fee_bp_of(r) == -1),
    (ApprovalRequest("AP-1", "write_off", "adj", 1, "kim", "", holds=((1, 2, 1, 3),),
                     refund_lines=(("1", 2),)), 9,
     lambda r: holds_of(r) == () and refund_lines_of(r) == ()),
    (ApprovalRequest("AP-1", "refund", "R1", 1, "kim", "", refund_lines=(("1", 2),)), 11,
     lambda r: refund_lines_of(r) == ()),
    (Refund("R1", 10, 1, 9, (("1", 2),)), 4, lambda r: lines_of_refund(r) == ()),
    (NetworkSpec(), 5, lambda r: r.keeps_package_services is False),
])
def test_a_record_pickled_before_its_newer_fields_loads_and_pickles_again(record, fields_then,
                                                                         read):
    old = _as_written_before(record, fields_then)
    assert read(old)
    again = loads(dumps(old))  # (what a snapshot does with it)
    assert again == old and read(again)
    assert pickle.loads(pickle.dumps(record)) == record  # (and today's as they are)
    if isinstance(record, NetworkSpec):
        assert pickle.loads(pickle.dumps(record)).keeps_package_services is True
