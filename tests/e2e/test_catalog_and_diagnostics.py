"""CatalogService, DiagnosticsService and the standard health service, end to end."""

from __future__ import annotations

import grpc
import pytest
from allocd.v1 import catalog_service_pb2 as cat_pb
from allocd.v1 import diagnostics_service_pb2 as diag
from allocd.v1 import types_pb2 as types
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

from service.server import SERVICE_NAMES
from tests.e2e.conftest import RUNNING

SERVICES = ("", "allocd.v1.InventoryService", "allocd.v1.CatalogService",
            "allocd.v1.DiagnosticsService")


@pytest.mark.parametrize("service", SERVICES)
def test_the_health_service_reports_every_service_as_serving(api, service):
    answer = api.health.Check(health_pb2.HealthCheckRequest(service=service))
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_upserted_skus_can_be_read_back(api):
    prefix = api.rid()
    sku = types.Sku(sku_id=f"{prefix}-A", name="Kettle", weight_lb=3.0,
                    dimensions=types.Dimensions(length_in=9.5, width_in=7.25, height_in=11.0),
                    unit_cost_micros=12_500_000, price_micros=29_990_000, category="home",
                    substitution_group="kettles")
    plain = types.Sku(sku_id=f"{prefix}-B", name="Mug", dimensions=types.Dimensions())
    before = api.summary()
    answer = api.catalog.UpsertSkus(cat_pb.UpsertSkusRequest(request_id=api.rid(),
                                                            skus=[sku, plain]))
    assert answer.result.event_count == 2
    assert api.summary().sku_count == before.sku_count + 2

    got = api.catalog.GetSkus(cat_pb.GetSkusRequest(sku_ids=[plain.sku_id, sku.sku_id]))
    assert list(got.skus) == [plain, sku]


def test_get_skus_returns_weights_and_dimensions_exactly_as_upserted(api):
    sku = types.Sku(sku_id=f"{api.rid()}-W", name="Scale", weight_lb=2.2,
                    dimensions=types.Dimensions(length_in=10.1, width_in=3.3, height_in=0.7))
    api.catalog.UpsertSkus(cat_pb.UpsertSkusRequest(request_id=api.rid(), skus=[sku]))
    (got,) = api.catalog.GetSkus(cat_pb.GetSkusRequest(sku_ids=[sku.sku_id])).skus
    assert got.weight_lb == 2.2
    assert (got.dimensions.length_in, got.dimensions.width_in, got.dimensions.height_in) == (
        10.1, 3.3, 0.7)


def test_upserting_an_existing_sku_replaces_it(api):
    sku_id = f"{api.rid()}-R"
    api.catalog.UpsertSkus(cat_pb.UpsertSkusRequest(request_id=api.rid(), skus=[
        types.Sku(sku_id=sku_id, name="old name", category="toys", price_micros=1_000_000)]))
    count = api.summary().sku_count
    api.catalog.UpsertSkus(cat_pb.UpsertSkusRequest(request_id=api.rid(), skus=[
        types.Sku(sku_id=sku_id, name="new name", category="games", price_micros=2_000_000)]))
    assert api.summary().sku_count == count
    (got,) = api.catalog.GetSkus(cat_pb.GetSkusRequest(sku_ids=[sku_id])).skus
    assert (got.name, got.category, got.price_micros) == ("new name", "games", 2_000_000)


def test_upserted_nodes_are_listed_with_their_attributes(api):
    prefix = api.rid()
    dc = types.Node(node_id=f"{prefix}-DC", name="Reno DC", type=types.NODE_TYPE_OWNED_DC,
                    latitude=39.5296, longitude=-119.8138, daily_capacity=12_000, enabled=True)
    store = types.Node(node_id=f"{prefix}-ST", name="Soho store", type=types.NODE_TYPE_STORE,
                       latitude=40.7233, longitude=-74.003, daily_capacity=0, enabled=False)
    answer = api.catalog.UpsertNodes(cat_pb.UpsertNodesRequest(request_id=api.rid(),
                                                              nodes=[dc, store]))
    assert answer.result.event_count == 2
    listed = {n.node_id: n for n in api.catalog.ListNodes(cat_pb.ListNodesRequest()).nodes}
    assert listed[dc.node_id] == dc
    assert listed[store.node_id] == store
    assert len(listed) == api.summary().node_count


def test_upserted_channels_are_listed(api):
    channel_id = f"{api.rid()}-app"
    answer = api.catalog.UpsertChannels(cat_pb.UpsertChannelsRequest(
        request_id=api.rid(), channels=[types.Channel(channel_id=channel_id, name="Mobile app")]))
    assert answer.result.event_count == 1
    listed = {c.channel_id: c.name
              for c in api.catalog.ListChannels(cat_pb.ListChannelsRequest()).channels}
    assert listed[channel_id] == "Mobile app"
    api.seed(n_nodes=1, n_skus=1)
    listed = {c.channel_id: c.name
              for c in api.catalog.ListChannels(cat_pb.ListChannelsRequest()).channels}
    assert (listed["web"], listed["marketplace"]) == ("Web store", "Marketplace")


def test_echo_returns_the_payload(api):
    payload = bytes(range(256)) * 4
    assert api.diagnostics.Echo(diag.EchoRequest(payload=payload)).payload == payload


def test_echo_stream_answers_every_message_in_order(api):
    payloads = [f"message {i}".encode() for i in range(20)]
    answers = api.diagnostics.EchoStream(iter(diag.EchoStreamRequest(payload=p) for p in payloads),
                                         timeout=10)
    assert [a.payload for a in answers] == payloads


def test_echo_batch_returns_every_payload_in_order(api):
    payloads = [b"", b"a", b"\x00\xff" * 100, b"z" * 1000]
    answer = api.diagnostics.EchoBatch(diag.EchoBatchRequest(payloads=payloads))
    assert list(answer.payloads) == payloads


def test_an_echo_batch_holds_no_more_items_than_an_allocation_batch(api):
    """Any caller may echo: millions of empty payloads in one message held the server to
    gigabytes. At most max_orders_per_request (1,000), as AllocateOrders."""
    api.diagnostics.EchoBatch(diag.EchoBatchRequest(payloads=[b""] * 1000))
    with pytest.raises(grpc.RpcError) as refused:
        api.diagnostics.EchoBatch(diag.EchoBatchRequest(payloads=[b""] * 1001))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_orders_per_request" in refused.value.details()


def test_every_method_of_every_service_is_routed_by_one_table(allocd_port, api):
    """The server routes through its own table (not gRPC's per-method registration,
    which costs every call a wait on one pending request per method): the table holds
    exactly the methods the services declare, and they answer."""
    pool = descriptor_pool.Default()
    declared = {f"/{name}/{method.name}"
                for name in (*SERVICE_NAMES, "grpc.health.v1.Health", reflection.SERVICE_NAME)
                for method in pool.FindServiceByName(name).methods}
    assert set(RUNNING[allocd_port].routes.handlers) == declared
    echo = api.diagnostics.Echo(diag.EchoRequest(payload=b"x"))
    assert echo.payload == b"x"


def test_a_method_no_service_declares_is_unimplemented(api):
    call = api.channel.unary_unary("/allocd.v1.OrderService/NoSuchMethod")
    with pytest.raises(grpc.RpcError) as refused:
        call(b"", timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
