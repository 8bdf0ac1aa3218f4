"""Translation between allocd.v1 protobuf messages and core types."""

from __future__ import annotations

import math

from allocd.v1 import types_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp

from core.catalog import Catalog
from core.errors import InvalidArgument
from core.model import (
    SKU_SIDE_MAX_IN,
    SKU_WEIGHT_MAX_LB,
    AdjustReason,
    Bucket,
    ChannelSpec,
    Event,
    EventKind,
    NodeSpec,
    NodeType,
    SkuSpec,
)

# Proto enums number from 1 where core starts at 0 (proto reserves 0 for UNSPECIFIED).
_BUCKET_FROM_PROTO: dict[int, Bucket] = {int(b) + 1: b for b in Bucket if b >= 0}
_BUCKET_TO_PROTO: dict[Bucket, pb.Bucket.ValueType] = {
    b: pb.Bucket.ValueType(v) for v, b in _BUCKET_FROM_PROTO.items()}
_BUCKET_TO_PROTO[Bucket.EXTERNAL] = pb.BUCKET_EXTERNAL
MAX_TIMESTAMP_S = 253402300799  # 9999-12-31T23:59:59Z


def bucket_from_proto(value: int, field: str, default: Bucket | None = None) -> Bucket:
    if value == pb.BUCKET_UNSPECIFIED and default is not None:
        return default
    bucket = _BUCKET_FROM_PROTO.get(value)
    if bucket is None:
        raise InvalidArgument(f"{field}: {value} is not a ledger bucket", field)
    return bucket


def bucket_to_proto(bucket: Bucket) -> pb.Bucket.ValueType:
    return _BUCKET_TO_PROTO[bucket]


def reason_from_proto(value: int, field: str) -> AdjustReason:
    try:
        return AdjustReason(value)
    except ValueError:
        raise InvalidArgument(f"{field}: a reason code is required", field) from None


def node_type_from_proto(value: int, field: str) -> NodeType:
    if value == pb.NODE_TYPE_UNSPECIFIED:
        return NodeType.OWNED_DC
    try:
        return NodeType(value)
    except ValueError:
        raise InvalidArgument(f"{field}: {value} is not a node type", field) from None


def ms_from_timestamp(ts: Timestamp, field: str) -> int:
    """Milliseconds since the epoch; 0 when unset."""
    if ts.seconds < 0 or ts.seconds > MAX_TIMESTAMP_S or not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidArgument(f"{field}: timestamp out of range", field)
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def timestamp(ms: int) -> Timestamp:
    seconds, millis = divmod(ms, 1000)
    return Timestamp(seconds=seconds, nanos=millis * 1_000_000)


def _number(value: float, field: str, limit: float = math.inf) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(f"{field} must be finite", field)
    if value > limit:  # (core refuses it too, by its own name for the field)
        raise InvalidArgument(f"{field} must be at most {limit:g}", field)
    return value


def sku_from_proto(msg: pb.Sku, field: str) -> SkuSpec:
    dims = msg.dimensions
    return SkuSpec(
        sku_id=msg.sku_id,
        name=msg.name,
        weight_lb=_number(msg.weight_lb, f"{field}.weight_lb", SKU_WEIGHT_MAX_LB),
        length_in=_number(dims.length_in, f"{field}.dimensions.length_in", SKU_SIDE_MAX_IN),
        width_in=_number(dims.width_in, f"{field}.dimensions.width_in", SKU_SIDE_MAX_IN),
        height_in=_number(dims.height_in, f"{field}.dimensions.height_in", SKU_SIDE_MAX_IN),
        unit_cost_micros=msg.unit_cost_micros,
        price_micros=msg.price_micros,
        category=msg.category,
        substitution_group=msg.substitution_group,
    )


def sku_to_proto(spec: SkuSpec) -> pb.Sku:
    return pb.Sku(
        sku_id=spec.sku_id, name=spec.name, weight_lb=spec.weight_lb,
        dimensions=pb.Dimensions(length_in=spec.length_in, width_in=spec.width_in,
                                 height_in=spec.height_in),
        unit_cost_micros=spec.unit_cost_micros, price_micros=spec.price_micros,
        category=spec.category, substitution_group=spec.substitution_group,
    )


def node_from_proto(msg: pb.Node, field: str) -> NodeSpec:
    return NodeSpec(
        node_id=msg.node_id, name=msg.name,
        node_type=node_type_from_proto(msg.type, f"{field}.type"),
        latitude=_number(msg.latitude, f"{field}.latitude"),
        longitude=_number(msg.longitude, f"{field}.longitude"),
        daily_capacity=msg.daily_capacity, enabled=msg.enabled,
    )


def node_to_proto(spec: NodeSpec) -> pb.Node:
    return pb.Node(node_id=spec.node_id, name=spec.name, type=pb.NodeType.ValueType(spec.node_type),
                   latitude=spec.latitude, longitude=spec.longitude,
                   daily_capacity=spec.daily_capacity, enabled=spec.enabled)


def channel_to_proto(spec: ChannelSpec) -> pb.Channel:
    return pb.Channel(channel_id=spec.channel_id, name=spec.name)


def event_to_proto(event: Event, catalog: Catalog) -> pb.InventoryEvent:
    msg = pb.InventoryEvent(
        sequence=event.seq,
        kind=pb.EventKind.ValueType(event.kind),
        quantity=event.quantity,
        reference=event.reference,
        request_id=event.request_id,
        time=timestamp(event.time_ms),
    )
    if event.sku >= 0 and event.kind != EventKind.SKU_UPSERTED:
        msg.sku_id = catalog.sku_ids[event.sku]
    if event.node >= 0 and event.kind != EventKind.NODE_UPSERTED:
        msg.node_id = catalog.nodes[event.node].node_id
    if event.channel >= 0 and event.kind != EventKind.CHANNEL_UPSERTED:
        msg.channel_id = catalog.channels[event.channel].channel_id
    if event.is_move:
        msg.from_bucket = bucket_to_proto(event.from_bucket)
        msg.to_bucket = bucket_to_proto(event.to_bucket)
    if event.due_ms:
        msg.due_time.CopyFrom(timestamp(event.due_ms))
    if event.reason:
        msg.reason = pb.AdjustmentReason.ValueType(event.reason)
    if event.amount:
        msg.amount_micros = event.amount
    if event.counted >= 0:
        msg.counted_quantity = event.counted
        msg.expected_quantity = event.expected
    payload = event.payload
    if isinstance(payload, SkuSpec):
        msg.sku.CopyFrom(sku_to_proto(payload))
        msg.sku_id = payload.sku_id
    elif isinstance(payload, NodeSpec):
        msg.node.CopyFrom(node_to_proto(payload))
        msg.node_id = payload.node_id
    elif isinstance(payload, ChannelSpec):
        msg.channel.CopyFrom(channel_to_proto(payload))
        msg.channel_id = payload.channel_id
    return msg
