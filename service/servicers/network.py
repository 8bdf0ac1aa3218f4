"""allocd.v1.NetworkService: the cost model allocation decides by."""

from __future__ import annotations

from allocd.v1 import network_service_pb2 as pb
from allocd.v1 import network_service_pb2_grpc as pb_grpc

from core import commands as c
from core.catalog import Catalog
from core.demand import ValuePolicy
from core.inventory_value import Values, forecast_rates
from core.network import NetworkSpec
from core.operations import Outcome
from service.engine import Engine
from service.errors import Context, check_count, unary
from service.inventory_values import InventoryValues
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
        self.values = InventoryValues(engine)

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

    @unary
    async def SetDemandForecast(self, request: pb.SetDemandForecastRequest,
                                context: Context) -> pb.SetDemandForecastResponse:
        def build() -> c.Command:
            check_count(len(request.lines), self.limit, "lines", "max_lines_per_request")
            return c.SetDemandForecast(tuple(
                c.ForecastLine(line.region_id, line.sku_id, line.units_per_day)
                for line in request.lines))

        return await self.engine.mutate(
            "SetDemandForecast", request, build,
            lambda o: pb.SetDemandForecastResponse(result=mutation_result(o)))

    @unary
    async def SetInventoryValuePolicy(self, request: pb.SetInventoryValuePolicyRequest,
                                      context: Context) -> pb.SetInventoryValuePolicyResponse:
        def build() -> c.Command:
            return c.SetValuePolicy(policy_from_proto(request.policy))

        return await self.engine.mutate(
            "SetInventoryValuePolicy", request, build,
            lambda o: pb.SetInventoryValuePolicyResponse(result=mutation_result(o)))

    @unary
    async def RefreshInventoryValues(self, request: pb.RefreshInventoryValuesRequest,
                                     context: Context) -> pb.RefreshInventoryValuesResponse:
        def respond(outcome: Outcome, values: Values) -> pb.RefreshInventoryValuesResponse:
            return pb.RefreshInventoryValuesResponse(
                result=mutation_result(outcome), value_count=len(values.values),
                objective_micros=values.objective, solver_status=values.status,
                solve_seconds=values.solve_seconds)

        return await self.values.refresh("RefreshInventoryValues", request, respond)

    @unary
    async def GetInventoryValues(self, request: pb.GetInventoryValuesRequest,
                                 context: Context) -> pb.GetInventoryValuesResponse:
        ledger = self.engine.ledger
        cat = ledger.catalog
        wanted = {cat.sku(sku_id, f"sku_ids[{i}]") for i, sku_id in enumerate(request.sku_ids)}
        policy = self.values.policy()
        source, rates = forecast_rates(ledger, self.engine.clock())
        return pb.GetInventoryValuesResponse(
            policy=policy_to_proto(policy),
            forecast_source=(pb.FORECAST_SOURCE_SUPPLIED if source == "supplied"
                             else pb.FORECAST_SOURCE_LEARNED),
            forecast=[pb.DemandForecastLine(region_id=region, sku_id=cat.sku_ids[sku],
                                            units_per_day=rate)
                      for (region, sku), rate in sorted(rates.items())
                      if not wanted or sku in wanted],
            values=[pb.OpportunityCost(sku_id=cat.sku_ids[sku],
                                       node_id=cat.nodes[node].node_id, per_unit_micros=micros)
                    for (sku, node), micros in sorted(ledger.opportunity_costs.items())
                    if not wanted or sku in wanted])


def policy_from_proto(message: pb.InventoryValuePolicy) -> ValuePolicy:
    """Unset (zero) tuning fields take the defaults; the switch is as given."""
    default = ValuePolicy()
    return ValuePolicy(
        enabled=message.enabled,
        refresh_interval_s=message.refresh_interval_seconds or default.refresh_interval_s,
        horizon_days=message.horizon_days or default.horizon_days,
        half_life_days=message.half_life_days or default.half_life_days,
        scale=message.scale or default.scale,
        shortage_weight=(message.shortage_weight if message.HasField("shortage_weight")
                         else default.shortage_weight),
        tail_from_draws=message.tail_from_drawn_units)


def policy_to_proto(policy: ValuePolicy) -> pb.InventoryValuePolicy:
    return pb.InventoryValuePolicy(
        enabled=policy.enabled, refresh_interval_seconds=policy.refresh_interval_s,
        horizon_days=policy.horizon_days, half_life_days=policy.half_life_days,
        scale=policy.scale, shortage_weight=policy.shortage_weight,
        tail_from_drawn_units=policy.tail_from_draws)
