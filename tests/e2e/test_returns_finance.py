"""Returns and finance end to end through gRPC: receive with landed cost, sell, ship,
return, inspect, scrap, refund, vendor claim, approvals - with the trial balance,
valuation, reconciliation and journal verification checked at every step."""

from __future__ import annotations

import functools

import grpc
import pytest
from allocd.v1 import finance_service_pb2 as fpb
from allocd.v1 import finance_service_pb2_grpc as fgrpc
from allocd.v1 import inventory_service_pb2 as inv
from allocd.v1 import returns_service_pb2 as rpb
from allocd.v1 import returns_service_pb2_grpc as rgrpc

from tests.e2e.conftest import RPC_TIMEOUT_S, rid

FAILED = grpc.StatusCode.FAILED_PRECONDITION
CLERK = (("x-allocd-actor", "clerk-1"), ("x-allocd-role", "customer_service"))
FINANCE = (("x-allocd-actor", "controller-2"), ("x-allocd-role", "finance"))


@pytest.fixture(scope="module")
def books(api):
    finance = fgrpc.FinanceServiceStub(api.channel)
    returns = rgrpc.ReturnsServiceStub(api.channel)
    return finance, returns


def assert_books_sound(finance) -> fpb.GetTrialBalanceResponse:
    trial = finance.GetTrialBalance(fpb.GetTrialBalanceRequest(), timeout=RPC_TIMEOUT_S)
    assert trial.balanced and trial.total_debit_micros == trial.total_credit_micros
    valuation = finance.GetInventoryValuation(fpb.GetInventoryValuationRequest(),
                                              timeout=RPC_TIMEOUT_S)
    inventory = next(a.balance_micros for a in trial.accounts if a.name == "INVENTORY")
    assert valuation.total_value_micros == inventory
    reconciliation = finance.GetReconciliation(fpb.GetReconciliationRequest(),
                                               timeout=RPC_TIMEOUT_S)
    assert reconciliation.reconciled, reconciliation
    verified = finance.VerifyJournal(fpb.VerifyJournalRequest(), timeout=RPC_TIMEOUT_S)
    assert verified.intact and verified.first_bad_entry == 0
    # The daily activity sums to the same balances.
    activity = finance.GetAccountActivity(fpb.GetAccountActivityRequest(period_days=1),
                                          timeout=RPC_TIMEOUT_S).activity
    for account in trial.accounts:
        net = sum(a.debit_micros - a.credit_micros for a in activity
                  if a.account == account.account)
        assert net == account.balance_micros
    return trial


def balance(trial, name: str) -> int:
    return next(a.balance_micros for a in trial.accounts if a.name == name)


def test_receive_sell_ship_return_scrap_refund_and_claim(api, demo_world, books):
    finance, returns = books
    w = demo_world
    start = assert_books_sound(finance)
    sku = w.sku(price_micros=40_000_000, unit_cost_micros=15_000_000)
    # Receive 10 at $12 and put $20 of freight on that receipt: $14 a unit.
    po = w.unique("PO")
    api.inventory.ReceiveInventory(inv.ReceiveInventoryRequest(
        request_id=rid(), reference=po, lines=[inv.ReceiptLine(
            sku_id=sku, node_id="IND1", quantity=10, unit_cost_micros=12_000_000)]),
        timeout=RPC_TIMEOUT_S)
    finance.AllocateLandedCost(fpb.AllocateLandedCostRequest(
        request_id=rid(), reference=po, amount_micros=20_000_000, description="freight"),
        timeout=RPC_TIMEOUT_S)
    (valued,) = finance.GetInventoryValuation(fpb.GetInventoryValuationRequest(
        sku_ids=[sku]), timeout=RPC_TIMEOUT_S).skus
    assert (valued.units, valued.average_cost_micros, valued.value_micros) == (
        10, 14_000_000, 140_000_000)
    after_receipt = assert_books_sound(finance)
    assert balance(after_receipt, "ACCOUNTS_PAYABLE") - balance(start, "ACCOUNTS_PAYABLE") \
        == -120_000_000
    assert balance(after_receipt, "ACCRUED_LANDED_COST") - balance(
        start, "ACCRUED_LANDED_COST") == -20_000_000

    # Sell 3 and ship them: COGS at $14, revenue at $40, the carrier's price as expense.
    order = w.order((sku, 3), customer_id="cust-1")
    (package,) = w.allocate(order).allocation.packages
    w.fulfil(package)
    shipped = assert_books_sound(finance)
    assert balance(shipped, "COST_OF_GOODS_SOLD") - balance(after_receipt,
                                                            "COST_OF_GOODS_SOLD") == 42_000_000
    assert balance(shipped, "REVENUE") - balance(after_receipt, "REVENUE") == -120_000_000
    assert balance(shipped, "SHIPPING_EXPENSE") - balance(
        after_receipt, "SHIPPING_EXPENSE") == package.cost.carrier_micros

    # Return 2: eligible, refunded on receipt, goes to the nearest DC.
    created = returns.CreateReturn(rpb.CreateReturnRequest(
        request_id=rid(), rma_id=w.unique("RMA"), order_id=order.order_id,
        lines=[rpb.ReturnLineRequest(line_id="1", quantity=2)], reason="too big"),
        metadata=CLERK, timeout=RPC_TIMEOUT_S)
    assert created.eligible, created.reasons
    rma = getattr(created, "return")
    assert rma.refund_timing == rpb.REFUND_TIMING_ON_RECEIPT
    assert rma.expected_refund_micros == 80_000_000  # home goods: no restocking fee
    # Returning more than shipped is not eligible, and says why.
    too_many = returns.CreateReturn(rpb.CreateReturnRequest(
        request_id=rid(), rma_id=w.unique("RMA"), order_id=order.order_id,
        lines=[rpb.ReturnLineRequest(line_id="1", quantity=2)]), metadata=CLERK,
        timeout=RPC_TIMEOUT_S)
    assert not too_many.eligible and "already returned" in too_many.reasons[0]

    received = returns.ReceiveReturn(rpb.ReceiveReturnRequest(
        request_id=rid(), rma_id=rma.rma_id), metadata=CLERK, timeout=RPC_TIMEOUT_S)
    assert received.refunded_micros == 80_000_000
    level = api.level(sku, rma.receiving_node_id)
    assert level.returned == 2
    refunded = assert_books_sound(finance)
    assert balance(refunded, "SALES_RETURNS") - balance(shipped, "SALES_RETURNS") == 80_000_000
    assert balance(refunded, "REFUNDS_PAYABLE") - balance(shipped, "REFUNDS_PAYABLE") \
        == -80_000_000

    # Inspect: one line damaged -> scrapped (written off at cost).
    inspected = returns.InspectReturn(rpb.InspectReturnRequest(
        request_id=rid(), rma_id=rma.rma_id, grades=[rpb.LineGrade(
            line_id="1", grade=rpb.RETURN_GRADE_DAMAGED)]), metadata=CLERK,
        timeout=RPC_TIMEOUT_S)
    assert getattr(inspected, "return").lines[0].disposition == rpb.DISPOSITION_LIQUIDATE \
        or getattr(inspected, "return").lines[0].disposition == rpb.DISPOSITION_SCRAP
    assert api.level(sku, rma.receiving_node_id).returned == 0
    scrapped = assert_books_sound(finance)
    assert balance(scrapped, "INVENTORY_WRITE_OFFS") - balance(
        refunded, "INVENTORY_WRITE_OFFS") == 28_000_000

    # The last unit comes back defective: returned to the vendor, a vendor claim.
    second = returns.CreateReturn(rpb.CreateReturnRequest(
        request_id=rid(), rma_id=w.unique("RMA"), order_id=order.order_id,
        lines=[rpb.ReturnLineRequest(line_id="1", quantity=1)]), metadata=CLERK,
        timeout=RPC_TIMEOUT_S)
    assert second.eligible
    rma2 = getattr(second, "return").rma_id
    returns.ReceiveReturn(rpb.ReceiveReturnRequest(request_id=rid(), rma_id=rma2),
                          metadata=CLERK, timeout=RPC_TIMEOUT_S)
    returns.InspectReturn(rpb.InspectReturnRequest(
        request_id=rid(), rma_id=rma2, grades=[rpb.LineGrade(
            line_id="1", grade=rpb.RETURN_GRADE_DEFECTIVE)]), metadata=CLERK,
        timeout=RPC_TIMEOUT_S)
    claimed = assert_books_sound(finance)
    assert balance(claimed, "VENDOR_RECEIVABLE") - balance(
        scrapped, "VENDOR_RECEIVABLE") == 14_000_000


def test_a_large_refund_waits_for_a_finance_approval_by_someone_else(api, demo_world, books):
    finance, returns = books
    w = demo_world
    sku = w.sku(price_micros=700_000_000, unit_cost_micros=300_000_000)  # $700 each
    w.stock(sku, "IND1", 2)
    order = w.order((sku, 1), customer_id="cust-2")
    (package,) = w.allocate(order).allocation.packages
    w.fulfil(package)
    created = returns.CreateReturn(rpb.CreateReturnRequest(
        request_id=rid(), rma_id=w.unique("RMA"), order_id=order.order_id,
        lines=[rpb.ReturnLineRequest(line_id="1", quantity=1)]), metadata=CLERK,
        timeout=RPC_TIMEOUT_S)
    rma = getattr(created, "return")
    assert rma.refund_timing == rpb.REFUND_TIMING_ON_INSPECTION  # high value
    returns.ReceiveReturn(rpb.ReceiveReturnRequest(request_id=rid(), rma_id=rma.rma_id),
                          metadata=CLERK, timeout=RPC_TIMEOUT_S)
    inspected = returns.InspectReturn(rpb.InspectReturnRequest(
        request_id=rid(), rma_id=rma.rma_id, grades=[rpb.LineGrade(
            line_id="1", grade=rpb.RETURN_GRADE_LIKE_NEW)]), metadata=FINANCE,
        timeout=RPC_TIMEOUT_S)
    assert inspected.refunded_micros == 0 and inspected.approval_id
    before = assert_books_sound(finance)
    decide = rpb.DecideApprovalRequest(approval_id=inspected.approval_id, approve=True)
    # The requester may not approve, nor may a role without the right.
    for metadata, code in ((FINANCE, FAILED), (CLERK, grpc.StatusCode.PERMISSION_DENIED)):
        decide.request_id = rid()
        with pytest.raises(grpc.RpcError) as refused:
            returns.DecideApproval(decide, metadata=metadata, timeout=RPC_TIMEOUT_S)
        assert refused.value.code() == code
    assert assert_books_sound(finance).accounts == before.accounts  # nothing took effect
    decide.request_id = rid()
    approved = returns.DecideApproval(
        decide, metadata=(("x-allocd-actor", "cfo-3"), ("x-allocd-role", "finance")),
        timeout=RPC_TIMEOUT_S)
    assert approved.approval.approved and approved.approval.decided_by == "cfo-3"
    after = assert_books_sound(finance)
    assert balance(after, "SALES_RETURNS") - balance(before, "SALES_RETURNS") == 700_000_000
    assert api.level(sku, rma.receiving_node_id).available >= 1  # like new: restocked


def test_a_changed_journal_entry_is_detected(allocd_port, api, demo_world, books):
    import dataclasses

    from tests.e2e import conftest

    finance, _ = books
    assert finance.VerifyJournal(fpb.VerifyJournalRequest(), timeout=RPC_TIMEOUT_S).intact
    server = conftest.RUNNING[allocd_port]
    entries = server.engine.ledger.books.entries
    original = entries[0]
    tampered = dataclasses.replace(original, memo=original.memo + " (edited)")
    entries[0] = tampered
    try:
        verified = finance.VerifyJournal(fpb.VerifyJournalRequest(), timeout=RPC_TIMEOUT_S)
        assert not verified.intact and verified.first_bad_entry == 1
    finally:
        entries[0] = original


def test_an_accounts_journal_and_activity_agree_with_the_whole_journal(api, demo_world,
                                                                       books):
    """GetJournal filtered by an account, page by page, and GetAccountActivity over
    periods of several days read the same postings as the whole journal read through."""
    finance, _ = books
    w = demo_world
    for k in range(3):  # some postings of our own: receipts, 2 entries each
        sku = w.sku(unit_cost_micros=(k + 1) * 1_000_000)
        api.inventory.ReceiveInventory(inv.ReceiveInventoryRequest(
            request_id=rid(), reference=w.unique("PO"), lines=[inv.ReceiptLine(
                sku_id=sku, node_id="IND1", quantity=5 + k)]), timeout=RPC_TIMEOUT_S)
    everything, number = [], 1
    while number:
        page = finance.GetJournal(fpb.GetJournalRequest(from_number=number, page_size=7),
                                  timeout=RPC_TIMEOUT_S)
        everything += page.entries
        number = page.next_number
    assert [e.number for e in everything] == list(range(1, len(everything) + 1))
    for account in (1200, 2000, 5000):  # inventory, payables, cost of goods sold
        expected = [e.number for e in everything
                    if any(x.account == account for x in e.lines)]
        read, number = [], 1
        while number:
            page = finance.GetJournal(fpb.GetJournalRequest(
                account=account, from_number=number, page_size=2), timeout=RPC_TIMEOUT_S)
            assert len(page.entries) <= 2
            read += [e.number for e in page.entries]
            number = page.next_number
        assert read == expected and expected
        week = 7 * 86_400
        totals: dict[int, list[int]] = {}
        for entry in everything:
            start = entry.time.seconds - entry.time.seconds % week
            for x in entry.lines:
                if x.account == account:
                    row = totals.setdefault(start, [0, 0, 0])
                    row[0] += x.debit_micros
                    row[1] += x.credit_micros
                    row[2] += 1
        activity = finance.GetAccountActivity(fpb.GetAccountActivityRequest(
            period_days=7, account=account), timeout=RPC_TIMEOUT_S).activity
        assert {a.period_start.seconds: [a.debit_micros, a.credit_micros, a.entries]
                for a in activity} == totals
        assert all(a.account == account for a in activity)


def test_a_receipt_worth_more_than_the_books_can_total_is_refused_and_they_still_read(
        api, books):
    finance, _ = books
    cat = api.seed(n_nodes=1, n_skus=1)
    error = api.rejects(grpc.StatusCode.INVALID_ARGUMENT, api.inventory.ReceiveInventory,
                        inv.ReceiveInventoryRequest(request_id=rid(), lines=[
                            inv.ReceiptLine(sku_id=cat.skus[0], node_id=cat.nodes[0],
                                            quantity=10**7, unit_cost_micros=10**12)]))
    assert "lines[0]" in error.details()
    assert api.level(cat.skus[0], cat.nodes[0]).available == 0
    assert_books_sound(finance)  # (one such line made every finance read fail: UNKNOWN)


def test_revenue_and_refunds_are_at_the_price_the_order_line_gives(api, demo_world, books):
    finance, returns = books
    w = demo_world
    sku = w.sku(price_micros=40_000_000, unit_cost_micros=15_000_000)
    free = w.sku(price_micros=5_000_000, unit_cost_micros=1_000_000)
    api.inventory.ReceiveInventory(inv.ReceiveInventoryRequest(
        request_id=rid(), reference=w.unique("PO"), lines=[
            inv.ReceiptLine(sku_id=s, node_id="IND1", quantity=10) for s in (sku, free)]),
        timeout=RPC_TIMEOUT_S)
    start = assert_books_sound(finance)
    # A promotion: $31.50 a unit instead of the $40 list price, and a free gift.
    order = w.order((sku, 2), (free, 1))
    order.lines[0].unit_price_micros = 31_500_000
    order.lines[1].unit_price_micros = 0
    (package,) = w.allocate(order).allocation.packages
    kept = w.get(order.order_id).order
    assert [line.unit_price_micros for line in kept.lines] == [31_500_000, 0]
    assert all(line.HasField("unit_price_micros") for line in kept.lines)
    w.fulfil(package)
    shipped = assert_books_sound(finance)
    assert balance(shipped, "REVENUE") - balance(start, "REVENUE") == -63_000_000
    assert balance(shipped, "ACCOUNTS_RECEIVABLE") - balance(
        start, "ACCOUNTS_RECEIVABLE") == 63_000_000
    assert balance(shipped, "COST_OF_GOODS_SOLD") - balance(
        start, "COST_OF_GOODS_SOLD") == 2 * 15_000_000 + 1_000_000
    created = returns.CreateReturn(rpb.CreateReturnRequest(
        request_id=rid(), rma_id=w.unique("RMA"), order_id=order.order_id,
        lines=[rpb.ReturnLineRequest(line_id="1", quantity=1),
               rpb.ReturnLineRequest(line_id="2", quantity=1)]),
        metadata=CLERK, timeout=RPC_TIMEOUT_S)
    assert created.eligible, created.reasons
    assert getattr(created, "return").expected_refund_micros == 31_500_000
    # A line given no price is booked at the catalogue price, as before.
    plain = w.order((sku, 1))
    (package,) = w.allocate(plain).allocation.packages
    assert not w.get(plain.order_id).order.lines[0].HasField("unit_price_micros")
    w.fulfil(package)
    assert balance(assert_books_sound(finance), "REVENUE") - balance(
        shipped, "REVENUE") == -40_000_000


def test_books_grown_past_int64_answer_out_of_range_saying_so(server_factory):
    # Each line within its bound (10^16), 923 of them: the inventory's value passes int64
    # (9.22 x 10^18). Reads whose answer holds it say so; the rest still answer.
    api = server_factory(max_lines_per_request=1000)
    finance = fgrpc.FinanceServiceStub(api.channel)
    cat = api.seed(n_nodes=1, n_skus=1)
    line = inv.ReceiptLine(sku_id=cat.skus[0], node_id=cat.nodes[0], quantity=10**4,
                           unit_cost_micros=10**12)
    assert_books_sound(finance)
    api.inventory.ReceiveInventory(inv.ReceiveInventoryRequest(
        request_id=rid(), lines=[line] * 924), timeout=RPC_TIMEOUT_S)
    error = api.rejects(grpc.StatusCode.OUT_OF_RANGE, finance.GetTrialBalance,
                        fpb.GetTrialBalanceRequest())
    assert "GetTrialBalance" in error.details() and "64-bit" in error.details()
    assert api.level(cat.skus[0], cat.nodes[0]).available == 924 * 10**4


def test_a_line_shipped_partly_as_a_substitute_comes_back_by_the_sku_named(api, demo_world,
                                                                          books):
    _, returns = books
    w = demo_world
    group = w.unique("group")
    wanted, substitute = w.sku(group=group), w.sku(group=group)
    w.stock(wanted, "IND1", 1)
    w.stock(substitute, "IND1", 5)
    alloc = w.allocate(w.order((wanted, 3), allow_substitution=True)).allocation
    shipped: dict[str, int] = {}
    released = set(w.release("IND1").package_ids)
    for package in alloc.packages:
        assert package.package_id in released
        w.pick(package.package_id, {line.line_id: line.quantity for line in package.lines})
        contents = {line.sku_id: line.quantity for line in package.lines}
        assert w.pack(package.package_id, contents).matched
        w.ship(package.package_id)
        for sku_id, quantity in contents.items():
            shipped[sku_id] = shipped.get(sku_id, 0) + quantity
    assert shipped == {wanted: 1, substitute: 2}

    def ask(quantity: int, sku_id: str = "") -> rpb.CreateReturnResponse:
        return returns.CreateReturn(rpb.CreateReturnRequest(
            request_id=rid(), rma_id=w.unique("RMA"), order_id=alloc.order_id,
            lines=[rpb.ReturnLineRequest(line_id="1", quantity=quantity, sku_id=sku_id)]),
            metadata=CLERK, timeout=RPC_TIMEOUT_S)

    unnamed = ask(1)
    assert not unnamed.eligible and "name the SKU coming back" in unnamed.reasons[0]
    back = ask(2, substitute)
    assert back.eligible, back.reasons
    assert getattr(back, "return").lines[0].sku_id == substitute
    assert not ask(1, substitute).eligible
    assert ask(1, wanted).eligible
    api.rejects(grpc.StatusCode.NOT_FOUND,
                functools.partial(returns.CreateReturn, metadata=CLERK),
                rpb.CreateReturnRequest(
                    request_id=rid(), rma_id=w.unique("RMA"), order_id=alloc.order_id,
                    lines=[rpb.ReturnLineRequest(line_id="1", quantity=1,
                                                 sku_id="NO-SUCH-SKU")]),
                details="NO-SUCH-SKU")
