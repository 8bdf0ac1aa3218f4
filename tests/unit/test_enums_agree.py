"""Core enums and their protobuf twins number the same values the same way."""

from __future__ import annotations

import pytest
from allocd.v1 import operations_service_pb2, order_service_pb2, returns_service_pb2, types_pb2

from core.alerts import ActionType, AlertStatus, RuleKind, TaskType
from core.exceptions import ExceptionType, Resolution
from core.model import AdjustReason, EventKind, NodeType
from core.network import SlaTier
from core.orders import OptionKind, OrderStatus, PackageStatus
from core.returns import Disposition, Grade, RefundTiming, ReturnStatus


@pytest.mark.parametrize(("core_enum", "proto_enum", "prefix", "offset"), [
    (EventKind, types_pb2.EventKind, "EVENT_KIND_", 0),
    (NodeType, types_pb2.NodeType, "NODE_TYPE_", 0),
    (AdjustReason, types_pb2.AdjustmentReason, "ADJUSTMENT_REASON_", 0),
    (SlaTier, types_pb2.SlaTier, "SLA_TIER_", 1),
    (ExceptionType, order_service_pb2.ExceptionType, "EXCEPTION_TYPE_", 0),
    (Resolution, order_service_pb2.Resolution, "RESOLUTION_", 0),
    (OrderStatus, order_service_pb2.OrderStatus, "ORDER_STATUS_", 0),
    (PackageStatus, order_service_pb2.PackageStatus, "PACKAGE_STATUS_", 0),
    (OptionKind, order_service_pb2.OptionKind, "OPTION_KIND_", 0),
    (Grade, returns_service_pb2.ReturnGrade, "RETURN_GRADE_", 0),
    (Disposition, returns_service_pb2.Disposition, "DISPOSITION_", 0),
    (RefundTiming, returns_service_pb2.RefundTiming, "REFUND_TIMING_", 0),
    (ReturnStatus, returns_service_pb2.ReturnStatus, "RETURN_STATUS_", 0),
    (RuleKind, operations_service_pb2.RuleKind, "RULE_KIND_", 0),
    (TaskType, operations_service_pb2.TaskType, "TASK_TYPE_", 0),
    (ActionType, operations_service_pb2.ActionType, "ACTION_TYPE_", 0),
    (AlertStatus, operations_service_pb2.AlertStatus, "ALERT_STATUS_", 0),
])
def test_every_core_value_has_the_same_number_in_the_proto(core_enum, proto_enum, prefix,
                                                           offset):
    for member in core_enum:
        assert proto_enum.Value(prefix + member.name) == int(member) + offset, member
    # ...and the proto has nothing core does not know (besides UNSPECIFIED).
    assert len(proto_enum.keys()) == len(core_enum) + 1
