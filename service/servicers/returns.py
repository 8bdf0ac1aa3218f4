"""allocd.v1.ReturnsService: returns, refunds and approvals."""

from __future__ import annotations

from typing import TypeVar

from allocd.v1 import returns_service_pb2 as pb
from allocd.v1 import returns_service_pb2_grpc as pb_grpc

from core import commands as c
from core.errors import InvalidArgument, NotFound
from core.ledger import Ledger
from core.operations import Outcome
from core.return_ops import ReturnDecision, ReturnProgress
from core.returns import ReturnPolicy, ReturnRecord
from service.codec import timestamp
from service.engine import Engine
from service.errors import Context, caller, check_count, unary
from service.paging import keep_all, page_listing
from service.servicers.inventory import mutation_result

#: Answers that carry a return's progress.
R = TypeVar("R", pb.ReceiveReturnResponse, pb.InspectReturnResponse)


def return_to_proto(ledger: Ledger, record: ReturnRecord) -> pb.Return:
    auth = record.auth
    grades = {line_id: (grade, disposition)
              for line_id, grade, disposition in (record.inspection.results
                                                  if record.inspection else ())}
    msg = pb.Return(
        rma_id=auth.rma_id, order_id=auth.order_id, customer_id=auth.customer_id,
        status=pb.ReturnStatus.ValueType(int(record.status)),
        receiving_node_id=ledger.catalog.nodes[auth.node].node_id,
        refund_timing=pb.RefundTiming.ValueType(int(auth.refund_timing)),
        expected_refund_micros=auth.refund_micros,
        restocking_fee_micros=auth.restocking_fee_micros,
        refunded_micros=record.refunded_micros, approval_id=record.approval_id,
        create_time=timestamp(record.created_ms))
    for line in auth.lines:
        grade, disposition = grades.get(line.line_id, (0, 0))
        msg.lines.add(line_id=line.line_id, sku_id=ledger.catalog.sku_ids[line.sku],
                      quantity=line.quantity, unit_price_micros=line.unit_price_micros,
                      received_quantity=record.received.get(line.line_id, 0),
                      grade=pb.ReturnGrade.ValueType(int(grade)),
                      disposition=pb.Disposition.ValueType(int(disposition)))
    return msg


def policy_from_proto(msg: pb.ReturnPolicy) -> ReturnPolicy:
    return ReturnPolicy(
        window_days=msg.window_days,
        channel_window_days=tuple((x.name, x.days) for x in msg.channel_windows),
        category_window_days=tuple((x.name, x.days) for x in msg.category_windows),
        final_sale_categories=tuple(msg.final_sale_categories),
        seasonal_categories=tuple(msg.seasonal_categories),
        seasonal_window_days=msg.seasonal_window_days,
        restocking_fee_bp=msg.restocking_fee_basis_points,
        category_restocking_fee_bp=tuple((x.category, x.basis_points)
                                         for x in msg.category_restocking_fees),
        abuse_window_days=msg.abuse_window_days, abuse_review_rate=msg.abuse_review_rate,
        trusted_min_orders=msg.trusted_min_orders, high_value_micros=msg.high_value_micros,
        refund_approval_micros=msg.refund_approval_micros,
        liquidate_above_micros=msg.liquidate_above_micros)


def policy_to_proto(policy: ReturnPolicy) -> pb.ReturnPolicy:
    return pb.ReturnPolicy(
        window_days=policy.window_days,
        channel_windows=[pb.NamedDays(name=n, days=d) for n, d in policy.channel_window_days],
        category_windows=[pb.NamedDays(name=n, days=d)
                          for n, d in policy.category_window_days],
        final_sale_categories=list(policy.final_sale_categories),
        seasonal_categories=list(policy.seasonal_categories),
        seasonal_window_days=policy.seasonal_window_days,
        restocking_fee_basis_points=policy.restocking_fee_bp,
        category_restocking_fees=[pb.NamedBasisPoints(category=n, basis_points=b)
                                  for n, b in policy.category_restocking_fee_bp],
        abuse_window_days=policy.abuse_window_days, abuse_review_rate=policy.abuse_review_rate,
        trusted_min_orders=policy.trusted_min_orders, high_value_micros=policy.high_value_micros,
        refund_approval_micros=policy.refund_approval_micros,
        liquidate_above_micros=policy.liquidate_above_micros)


class ReturnsServicer(pb_grpc.ReturnsServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.limit = engine.settings.max_lines_per_request

    def _return(self, rma_id: str) -> pb.Return:
        ledger = self.engine.ledger
        return return_to_proto(ledger, ledger.returns.returns[rma_id])

    def _progress(self, response: R, o: Outcome) -> R:
        """Receipt and inspection answers: the return as it stands, any refund issued and
        any approval the refund waits for."""
        if isinstance(o.detail, ReturnProgress):
            getattr(response, "return").CopyFrom(self._return(o.detail.rma_id))
            response.refunded_micros = o.detail.refunded_micros
            response.approval_id = o.detail.approval_id
        return response

    @unary
    async def CreateReturn(self, request: pb.CreateReturnRequest,
                           context: Context) -> pb.CreateReturnResponse:
        actor, _ = caller(context)

        def build() -> c.Command:
            check_count(len(request.lines), self.limit, "lines", "max_lines_per_request")
            skus = tuple(x.sku_id for x in request.lines)
            return c.CreateReturn(request.rma_id or request.request_id, request.order_id,
                                  tuple((x.line_id, x.quantity) for x in request.lines),
                                  request.reason, actor, skus if any(skus) else ())

        def respond(o: Outcome) -> pb.CreateReturnResponse:
            response = pb.CreateReturnResponse(result=mutation_result(o))
            if isinstance(o.detail, ReturnDecision):
                response.eligible = o.detail.eligible
                response.reasons.extend(o.detail.reasons)
                if o.detail.eligible:
                    getattr(response, "return").CopyFrom(self._return(o.detail.rma_id))
            return response

        return await self.engine.mutate("CreateReturn", request, build, respond)

    @unary
    async def ReceiveReturn(self, request: pb.ReceiveReturnRequest,
                            context: Context) -> pb.ReceiveReturnResponse:
        actor, _ = caller(context)

        def build() -> c.Command:
            check_count(len(request.lines), self.limit, "lines", "max_lines_per_request")
            return c.ReceiveReturn(request.rma_id,
                                   tuple((x.line_id, x.quantity) for x in request.lines), actor)

        return await self.engine.mutate(
            "ReceiveReturn", request, build,
            lambda o: self._progress(pb.ReceiveReturnResponse(result=mutation_result(o)), o))

    @unary
    async def InspectReturn(self, request: pb.InspectReturnRequest,
                            context: Context) -> pb.InspectReturnResponse:
        actor, _ = caller(context)

        def build() -> c.Command:
            check_count(len(request.grades), self.limit, "grades", "max_lines_per_request")
            return c.InspectReturn(request.rma_id,
                                   tuple((x.line_id, x.grade) for x in request.grades), actor)

        return await self.engine.mutate(
            "InspectReturn", request, build,
            lambda o: self._progress(pb.InspectReturnResponse(result=mutation_result(o)), o))

    @unary
    async def GetReturn(self, request: pb.GetReturnRequest,
                        context: Context) -> pb.GetReturnResponse:
        if not request.rma_id:
            raise InvalidArgument("rma_id is required", "rma_id")
        if request.rma_id not in self.engine.ledger.returns.returns:
            raise NotFound(f"no return {request.rma_id!r}", "rma_id")
        response = pb.GetReturnResponse()
        getattr(response, "return").CopyFrom(self._return(request.rma_id))
        return response

    def _approval(self, approval_id: str) -> pb.Approval:
        record = self.engine.ledger.approvals.by_id[approval_id]
        request, decision = record.request, record.decision
        return pb.Approval(
            approval_id=approval_id, action=request.action, reference=request.reference,
            amount_micros=request.amount_micros, requested_by=request.requested_by,
            detail=request.detail, decided=decision is not None,
            approved=bool(decision and decision.approved),
            decided_by=decision.decided_by if decision else "",
            create_time=timestamp(record.created_ms), approvals_required=request.required,
            approved_by=[d.decided_by for d in record.approvals])

    @unary
    async def ListApprovals(self, request: pb.ListApprovalsRequest,
                            context: Context) -> pb.ListApprovalsResponse:
        book = self.engine.ledger.approvals
        found, next_token = page_listing(book.by_id, book.pending_places, request, keep_all,
                                         request.include_decided)
        return pb.ListApprovalsResponse(
            approvals=[self._approval(r.request.approval_id) for r in found],
            next_page_token=next_token)

    @unary
    async def DecideApproval(self, request: pb.DecideApprovalRequest,
                             context: Context) -> pb.DecideApprovalResponse:
        actor, role = caller(context)

        def respond(o: Outcome) -> pb.DecideApprovalResponse:
            return pb.DecideApprovalResponse(result=mutation_result(o),
                                             approval=self._approval(request.approval_id))

        return await self.engine.mutate(
            "DecideApproval", request,
            lambda: c.DecideApproval(request.approval_id, request.approve, actor, role,
                                     request.note), respond)

    @unary
    async def SetReturnPolicy(self, request: pb.SetReturnPolicyRequest,
                              context: Context) -> pb.SetReturnPolicyResponse:
        actor, _ = caller(context)
        return await self.engine.mutate(
            "SetReturnPolicy", request, lambda: c.SetReturnPolicy(policy_from_proto(
                request.policy), actor),
            lambda o: pb.SetReturnPolicyResponse(result=mutation_result(o),
                                                 approval_id=o.detail or ""))

    @unary
    async def GetReturnPolicy(self, request: pb.GetReturnPolicyRequest,
                              context: Context) -> pb.GetReturnPolicyResponse:
        return pb.GetReturnPolicyResponse(
            policy=policy_to_proto(self.engine.ledger.returns.policy))
