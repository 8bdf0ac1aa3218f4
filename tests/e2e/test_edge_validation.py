"""Whatever the field, control characters, oversize strings, NaN/infinity and undefined
enum values are refused at the edge with INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import math

import grpc
import pytest
from allocd.v1 import catalog_service_pb2 as cpb
from allocd.v1 import order_service_pb2 as opb
from allocd.v1 import types_pb2

from core.model import SKU_SIDE_MAX_IN, SKU_WEIGHT_MAX_LB
from tests.e2e.conftest import RPC_TIMEOUT_S, rid

BAD = grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(("sku", "field"), [
    (types_pb2.Sku(sku_id="S-EDGE", name="bell" + chr(7)), "skus[0].name"),
    (types_pb2.Sku(sku_id="S-EDGE", category="x" * 5000), "skus[0].category"),
    (types_pb2.Sku(sku_id="S-EDGE", weight_lb=math.inf), "skus[0].weight_lb"),
    (types_pb2.Sku(sku_id="S-EDGE", dimensions=types_pb2.Dimensions(length_in=math.nan)),
     "skus[0].dimensions.length_in"),
    # Past the SKU's limits (core.model): an order's weights would pass what a float holds.
    (types_pb2.Sku(sku_id="S-EDGE", weight_lb=SKU_WEIGHT_MAX_LB * 1.01), "skus[0].weight_lb"),
    (types_pb2.Sku(sku_id="S-EDGE", dimensions=types_pb2.Dimensions(
        width_in=SKU_SIDE_MAX_IN + 1)), "skus[0].dimensions.width_in"),
])
def test_bad_values_anywhere_are_refused_naming_the_field(api, sku, field):
    with pytest.raises(grpc.RpcError) as refused:
        api.catalog.UpsertSkus(cpb.UpsertSkusRequest(request_id=rid(), skus=[sku]),
                               timeout=RPC_TIMEOUT_S)
    assert refused.value.code() == BAD and field in refused.value.details()


def test_an_undefined_enum_value_is_refused_naming_the_field(api):
    order = opb.Order(order_id="o-edge", sla_tier=77,
                      lines=[opb.OrderLine(sku_id="x", quantity=1)])
    with pytest.raises(grpc.RpcError) as refused:
        api.orders.QuotePromise(opb.QuotePromiseRequest(order=order), timeout=RPC_TIMEOUT_S)
    assert refused.value.code() == BAD and "order.sla_tier" in refused.value.details()
