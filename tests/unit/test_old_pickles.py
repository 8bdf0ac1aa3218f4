"""Frozen records pickled before fields were added to them (in the log, in snapshots)
load with those fields at the values they stood for then, and pickle again: a snapshot
holding one used to fail (dataclasses' own __getstate__ reads every field)."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from core.alerts import Rule, RuleKind
from core.approvals import ApprovalRequest, holds_of, refund_lines_of
from core.model import SkuSpec
from core.network import CarrierService, NetworkSpec
from core.returns import Refund, ReturnLine, ReturnPolicy, fee_bp_of
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


@pytest.mark.parametrize(("record", "fields_then"), [
    (SkuSpec("s1", weight_lb=2.0, substitution_group="g"), 8),
    (CarrierService("ground", "Acme", ((1,),), (2,), name="Ground"), 7),
    (Rule("r", RuleKind.LATE_SHIPMENTS, requires_approval=True), 8),
    (ReturnPolicy(), 10),
])
def test_any_frozen_record_of_an_older_log_loads_from_the_store_and_pickles_again(
        record, fields_then, monkeypatch):
    """Every frozen record the store reads, not only those that say so themselves: the
    fields added since take their defaults."""
    state = [getattr(record, f.name) for f in dataclasses.fields(record)][:fields_then]
    with monkeypatch.context() as then:  # (pickled as it was with fewer fields)
        then.setattr(type(record), "__getstate__", lambda self: state)
        written = dumps(record)
    old = loads(written)
    assert type(old) is type(record)
    names = [f.name for f in dataclasses.fields(record)]
    for f in dataclasses.fields(record)[fields_then:]:
        assert getattr(old, f.name) == (f.default if f.default is not dataclasses.MISSING
                                        else f.default_factory()), f.name
    for name in names[:fields_then]:
        assert getattr(old, name) == getattr(record, name)
    assert loads(dumps(old)) == old  # (a snapshot holding it)


def test_a_frozen_record_written_by_name_loads_by_name(monkeypatch):
    """A state of {field: value} (a record written when its class kept a __dict__) sets
    the fields it names and defaults the rest."""
    record = SkuSpec("s1", weight_lb=2.0, substitution_group="g")
    with monkeypatch.context() as then:
        then.setattr(SkuSpec, "__getstate__",
                     lambda self: {"sku_id": "s1", "weight_lb": 2.0, "gone": 1})
        written = dumps(record)
    old = loads(written)
    assert (old.sku_id, old.weight_lb, old.substitution_group) == ("s1", 2.0, "")
    assert loads(dumps(old)) == old
