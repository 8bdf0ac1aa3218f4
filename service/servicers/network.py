"""allocd.v1.NetworkService: the cost model allocation decides by."""

from __future__ import annotations

from allocd.v1 import network_service_pb2 as pb
from allocd.v1 import network_service_pb2_grpc as pb_grpc

from core import commands as c
from core.catalog import Catalog
from core.network import NetworkSpec
from service.engine import Engine
from service.errors import Context, check_count, unary
from service.network_codec import network_from_proto, network_to_proto, prefixed
from service.servicers.inventory import mutation_result


def check_references(spec: NetworkSpec, catalog: Catalog) -> None:
    """Resolve node and channel ids before the command runs, so that errors name the
    request's fields; executing SetNetwork checks them again when it compiles."""
    with prefixed("network"):
        for i, lane in enumerate(spec.lanes):
            catalog.node(lane.node_id, f"lanes[{i}].node_id")
        for i, costs in enumerate(spec.node_costs):
            catalog.node(costs.node_id, f"node_costs[{i}].node_id")
            for k, channel_id in enumerate(costs.blocked_channels):
                catalog.channel(channel_id, f"node_costs[{i}].blocked_channel_ids[{k}]")


class NetworkServicer(pb_grpc.NetworkServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.limit = engine.settings.max_lines_per_request

    @unary
    async def SetNetwork(self, request: pb.SetNetworkRequest,
                         context: Context) -> pb.SetNetworkResponse:
        def build() -> c.Command:
            spec = network_from_proto(request.network)
            check_references(spec, self.engine.ledger.catalog)
            return c.SetNetwork(spec)

        return await self.engine.mutate(
            "SetNetwork", request, build,
            lambda o: pb.SetNetworkResponse(result=mutation_result(o)))

    @unary
    async def GetNetwork(self, request: pb.GetNetworkRequest,
                         context: Context) -> pb.GetNetworkResponse:
        return pb.GetNetworkResponse(network=network_to_proto(self.engine.ledger.network_spec))

    @unary
    async def SetOpportunityCosts(self, request: pb.SetOpportunityCostsRequest,
                                  context: Context) -> pb.SetOpportunityCostsResponse:
        def build() -> c.Command:
            check_count(len(request.costs), self.limit, "costs", "max_lines_per_request")
            return c.SetOpportunityCosts(tuple(
                c.OpportunityCostLine(cost.sku_id, cost.node_id, cost.per_unit_micros)
                for cost in request.costs))

        return await self.engine.mutate(
            "SetOpportunityCosts", request, build,
            lambda o: pb.SetOpportunityCostsResponse(result=mutation_result(o)))
