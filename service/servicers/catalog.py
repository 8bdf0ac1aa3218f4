"""allocd.v1.CatalogService: SKUs, nodes and channels."""

from __future__ import annotations

from allocd.v1 import catalog_service_pb2 as pb
from allocd.v1 import catalog_service_pb2_grpc as pb_grpc

from core import commands as c
from core.model import ChannelSpec
from service.codec import (
    channel_to_proto,
    node_from_proto,
    node_to_proto,
    sku_from_proto,
    sku_to_proto,
)
from service.engine import Engine
from service.errors import Context, check_count, unary
from service.servicers.inventory import mutation_result


class CatalogServicer(pb_grpc.CatalogServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.limit = engine.settings.max_lines_per_request

    @unary
    async def UpsertSkus(self, request: pb.UpsertSkusRequest,
                         context: Context) -> pb.UpsertSkusResponse:
        def build() -> c.Command:
            check_count(len(request.skus), self.limit, "skus", "max_lines_per_request")
            return c.UpsertSkus(tuple(sku_from_proto(s, f"skus[{i}]")
                                      for i, s in enumerate(request.skus)))

        return await self.engine.mutate(
            "UpsertSkus", request, build,
            lambda o: pb.UpsertSkusResponse(result=mutation_result(o)))

    @unary
    async def GetSkus(self, request: pb.GetSkusRequest,
                      context: Context) -> pb.GetSkusResponse:
        check_count(len(request.sku_ids), self.limit, "sku_ids", "max_lines_per_request")
        catalog = self.engine.ledger.catalog
        dense = catalog.skus(request.sku_ids)
        return pb.GetSkusResponse(skus=[sku_to_proto(catalog.sku_spec(int(d))) for d in dense])

    @unary
    async def UpsertNodes(self, request: pb.UpsertNodesRequest,
                          context: Context) -> pb.UpsertNodesResponse:
        def build() -> c.Command:
            check_count(len(request.nodes), self.limit, "nodes", "max_lines_per_request")
            return c.UpsertNodes(tuple(node_from_proto(n, f"nodes[{i}]")
                                       for i, n in enumerate(request.nodes)))

        return await self.engine.mutate(
            "UpsertNodes", request, build,
            lambda o: pb.UpsertNodesResponse(result=mutation_result(o)))

    @unary
    async def ListNodes(self, request: pb.ListNodesRequest,
                        context: Context) -> pb.ListNodesResponse:
        return pb.ListNodesResponse(
            nodes=[node_to_proto(n) for n in self.engine.ledger.catalog.nodes])

    @unary
    async def UpsertChannels(self, request: pb.UpsertChannelsRequest,
                             context: Context) -> pb.UpsertChannelsResponse:
        def build() -> c.Command:
            check_count(len(request.channels), self.limit, "channels", "max_lines_per_request")
            return c.UpsertChannels(tuple(ChannelSpec(ch.channel_id, ch.name)
                                          for ch in request.channels))

        return await self.engine.mutate(
            "UpsertChannels", request, build,
            lambda o: pb.UpsertChannelsResponse(result=mutation_result(o)))

    @unary
    async def ListChannels(self, request: pb.ListChannelsRequest,
                           context: Context) -> pb.ListChannelsResponse:
        return pb.ListChannelsResponse(
            channels=[channel_to_proto(ch) for ch in self.engine.ledger.catalog.channels])
