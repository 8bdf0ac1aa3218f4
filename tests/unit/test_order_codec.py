"""The allocation view a request asks for (the edge refuses undefined enum values over
gRPC; this check stands for callers in process too)."""

from __future__ import annotations

import pytest
from allocd.v1 import order_service_pb2 as pb

from core.errors import InvalidArgument
from service.order_codec import full_view


@pytest.mark.parametrize(("view", "explain", "full"), [
    (pb.ALLOCATION_VIEW_UNSPECIFIED, False, True), (pb.ALLOCATION_VIEW_UNSPECIFIED, True, True),
    (pb.ALLOCATION_VIEW_FULL, True, True), (pb.ALLOCATION_VIEW_BASIC, False, False)])
def test_the_view_asked_for(view, explain, full):
    assert full_view(view, explain) is full


@pytest.mark.parametrize(("view", "explain", "field"), [
    (pb.ALLOCATION_VIEW_BASIC, True, "explain"), (7, False, "view"), (-1, False, "view")])
def test_a_view_that_cannot_be_given_is_refused(view, explain, field):
    with pytest.raises(InvalidArgument) as caught:
        full_view(view, explain)
    assert caught.value.field == field
