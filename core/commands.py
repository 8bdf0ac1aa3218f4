"""Commands: what a caller asks the ledger to do, in external ids. Imperative, frozen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.alerts import ActionSpec, Rule
from core.demand import ValuePolicy
from core.exceptions import Resolution
from core.model import AdjustReason, Bucket, ChannelSpec, NodeSpec, SkuSpec
from core.network import NetworkSpec
from core.orders import OrderSpec
from core.returns import ReturnPolicy


@dataclass(frozen=True, slots=True)
class ReceiptLine:
    sku_id: str
    node_id: str
    quantity: int
    to_bucket: Bucket = Bucket.AVAILABLE
    inbound_reference: str = ""  # consume an expected inbound / transfer instead of new units
    unit_cost_micros: int = 0  # 0: the SKU's standard cost


@dataclass(frozen=True, slots=True)
class ReceiveStock:
    lines: tuple[ReceiptLine, ...]
    reference: str = ""


@dataclass(frozen=True, slots=True)
class InboundLine:
    sku_id: str
    node_id: str
    quantity: int
    expected_ms: int
    unit_cost_micros: int = 0  # 0: the SKU's standard cost


@dataclass(frozen=True, slots=True)
class ExpectInbound:
    reference: str
    lines: tuple[InboundLine, ...]


@dataclass(frozen=True, slots=True)
class StockLine:
    """Units of a SKU at a node: what a reservation holds, or inbound stock that will not
    come."""

    sku_id: str
    node_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class CancelInbound:
    """Inbound stock under `reference` that will not come; no lines: all of it."""

    reference: str
    lines: tuple[StockLine, ...] = ()


@dataclass(frozen=True, slots=True)
class AdjustLine:
    sku_id: str
    node_id: str
    delta: int
    reason: AdjustReason
    bucket: Bucket = Bucket.AVAILABLE


@dataclass(frozen=True, slots=True)
class AdjustStock:
    lines: tuple[AdjustLine, ...]
    reference: str = ""
    actor: str = ""
    approved: bool = False  # set when an approver has released it


@dataclass(frozen=True, slots=True)
class MoveLine:
    sku_id: str
    node_id: str
    quantity: int
    from_bucket: Bucket
    to_bucket: Bucket


@dataclass(frozen=True, slots=True)
class MoveStock:
    lines: tuple[MoveLine, ...]
    reference: str = ""


@dataclass(frozen=True, slots=True)
class TransferLine:
    sku_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class TransferStock:
    transfer_id: str
    from_node_id: str
    to_node_id: str
    expected_ms: int
    lines: tuple[TransferLine, ...]


@dataclass(frozen=True, slots=True)
class ReserveStock:
    reservation_id: str
    channel_id: str
    expires_ms: int
    lines: tuple[StockLine, ...]


@dataclass(frozen=True, slots=True)
class ReleaseReservation:
    reservation_id: str


@dataclass(frozen=True, slots=True)
class ExpireReservations:
    """Release every reservation whose expiry is at or before the command's time."""


@dataclass(frozen=True, slots=True)
class CloseJournal:
    """Let journal entries `first` to `last` (the oldest kept) leave memory: the store
    holds them already, as the segment whose bytes hash to `digest`; `last_hash` is
    entry `last`'s hash (refused if the books have changed since it was read)."""

    first: int
    last: int
    last_hash: str
    digest: str


@dataclass(frozen=True, slots=True)
class ArchiveOrders:
    """Archive up to `limit` orders closed (shipped or cancelled whole) more than
    `retention_days` ago, and more than the return policy's longest window: their records
    leave memory, their ids stay taken."""

    retention_days: float
    limit: int = 10_000


@dataclass(frozen=True, slots=True)
class CountLine:
    sku_id: str
    node_id: str
    counted: int


@dataclass(frozen=True, slots=True)
class SubmitCycleCount:
    lines: tuple[CountLine, ...]
    reference: str = ""
    actor: str = ""  # who counted: a variance held for approval is settled by someone else


@dataclass(frozen=True, slots=True)
class SetSafetyStock:
    """Safety stock for a scope: both ids empty is the network default, one of them
    empty a node or SKU default, both set one (SKU, node). `quantity` None clears it."""

    sku_id: str
    node_id: str
    quantity: int | None


@dataclass(frozen=True, slots=True)
class FenceLine:
    sku_id: str
    node_id: str
    channel_id: str
    quantity: int  # 0 removes the fence


@dataclass(frozen=True, slots=True)
class SetRingFence:
    lines: tuple[FenceLine, ...]


@dataclass(frozen=True, slots=True)
class UpsertSkus:
    skus: tuple[SkuSpec, ...]


@dataclass(frozen=True, slots=True)
class UpsertNodes:
    nodes: tuple[NodeSpec, ...]


@dataclass(frozen=True, slots=True)
class UpsertChannels:
    channels: tuple[ChannelSpec, ...]


@dataclass(frozen=True, slots=True)
class SetNetwork:
    spec: NetworkSpec


@dataclass(frozen=True, slots=True)
class OpportunityCostLine:
    sku_id: str
    node_id: str
    per_unit_micros: int  # 0 removes it


@dataclass(frozen=True, slots=True)
class SetOpportunityCosts:
    lines: tuple[OpportunityCostLine, ...]


@dataclass(frozen=True, slots=True)
class ReplaceOpportunityCosts:
    """Make these the only opportunity costs (every other one is removed)."""

    lines: tuple[OpportunityCostLine, ...]


@dataclass(frozen=True, slots=True)
class ForecastLine:
    region_id: str
    sku_id: str
    units_per_day: float


@dataclass(frozen=True, slots=True)
class SetDemandForecast:
    """Replace the supplied forecast; empty: use the one learned from orders."""

    lines: tuple[ForecastLine, ...]


@dataclass(frozen=True, slots=True)
class SetValuePolicy:
    policy: ValuePolicy


@dataclass(frozen=True, slots=True)
class AllocateOrders:
    orders: tuple[OrderSpec, ...]
    fraud_threshold: float = 0.8
    # Calls answered together: the request id of each order's own call (its events carry
    # it, and a refusal names the field "order"). Empty: one call asked for them all.
    request_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CancelOrder:
    order_id: str
    lines: tuple[tuple[str, int], ...] = ()  # (line_id, quantity); empty: everything open


@dataclass(frozen=True, slots=True)
class ReleaseWave:
    node_id: str
    max_packages: int = 0  # 0: the node's daily capacity


@dataclass(frozen=True, slots=True)
class ConfirmPick:
    package_id: str
    picked: tuple[tuple[str, int], ...]  # (line_id, picked); lines not listed: picked in full


@dataclass(frozen=True, slots=True)
class ConfirmPack:
    package_id: str
    scanned: tuple[tuple[str, int], ...]  # (sku_id, quantity)


@dataclass(frozen=True, slots=True)
class ConfirmShipment:
    package_id: str
    tracking_number: str


@dataclass(frozen=True, slots=True)
class ResolveException:
    exception_id: str
    resolution: Resolution
    note: str = ""
    fraud_threshold: float = 0.8
    actor: str = ""
    role: str = ""


@dataclass(frozen=True, slots=True)
class AllocateLandedCost:
    """Freight or duty on a receipt, capitalised into the units it brought."""

    reference: str
    amount_micros: int
    description: str = "freight"


@dataclass(frozen=True, slots=True)
class CreateReturn:
    rma_id: str
    order_id: str
    lines: tuple[tuple[str, int], ...]  # (line_id, quantity)
    reason: str = ""
    actor: str = ""
    # The SKU id coming back for each line ("": the line's, which it shipped as alone);
    # empty when no line names one.
    skus: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceiveReturn:
    rma_id: str
    lines: tuple[tuple[str, int], ...] = ()  # empty: everything still expected
    actor: str = ""


@dataclass(frozen=True, slots=True)
class InspectReturn:
    rma_id: str
    grades: tuple[tuple[str, int], ...]  # (line_id, Grade)
    actor: str = ""


@dataclass(frozen=True, slots=True)
class DecideApproval:
    approval_id: str
    approve: bool
    actor: str
    role: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class SetReturnPolicy:
    policy: ReturnPolicy
    actor: str = ""
    approved: bool = False  # set when two approvers have released it


@dataclass(frozen=True, slots=True)
class RevokeToken:
    """Refuse a credential from now on (kept in the log, so it survives restarts)."""

    token_id: str


@dataclass(frozen=True, slots=True)
class Replan:
    """A re-optimised plan for one order: its units by (line, node), valid only while the
    order is still as it was (`version`, see core.reopt.order_version)."""

    order_id: str
    version: tuple[Any, ...]
    takes: tuple[tuple[str, int, int], ...]  # (line_id, dense node, units)
    old_cost_micros: int


@dataclass(frozen=True, slots=True)
class ApplyReoptimization:
    """Apply re-optimised plans together; orders that changed meanwhile keep theirs."""

    plans: tuple[Replan, ...]


@dataclass(frozen=True, slots=True)
class SetRules:
    """Replace the rule set; refused unless `expected_version` is the one in force. A set
    that lets a rule act without approval where none did waits for an approver first
    (`approved` is set only by that approval)."""

    rules: tuple[Rule, ...]
    expected_version: int
    actor: str = ""
    approved: bool = False


@dataclass(frozen=True, slots=True)
class AcknowledgeAlert:
    alert_id: str
    actor: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class CompleteTask:
    task_id: str
    actor: str = ""
    role: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class ReverseAction:
    action_id: str
    actor: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class RequestEmergencyChange:
    """An emergency policy change: applies once someone else with an approver role
    approves it."""

    spec: ActionSpec
    actor: str = ""


Command = (
    ReceiveStock
    | ExpectInbound
    | CancelInbound
    | AdjustStock
    | MoveStock
    | TransferStock
    | ReserveStock
    | ArchiveOrders
    | CloseJournal
    | ReleaseReservation
    | ExpireReservations
    | SubmitCycleCount
    | SetSafetyStock
    | SetRingFence
    | UpsertSkus
    | UpsertNodes
    | UpsertChannels
    | SetNetwork
    | SetOpportunityCosts
    | ReplaceOpportunityCosts
    | SetDemandForecast
    | SetValuePolicy
    | AllocateOrders
    | CancelOrder
    | ReleaseWave
    | ConfirmPick
    | ConfirmPack
    | ConfirmShipment
    | ResolveException
    | AllocateLandedCost
    | CreateReturn
    | ReceiveReturn
    | InspectReturn
    | DecideApproval
    | SetReturnPolicy
    | RevokeToken
    | ApplyReoptimization
    | SetRules
    | AcknowledgeAlert
    | CompleteTask
    | ReverseAction
    | RequestEmergencyChange
)
