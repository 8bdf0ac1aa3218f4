"""allocd.v1.FinanceService: the journal, trial balance, valuation and reconciliation."""

from __future__ import annotations

import asyncio

import grpc
from allocd.v1 import finance_service_pb2 as pb
from allocd.v1 import finance_service_pb2_grpc as pb_grpc

from core import commands as c
from core.errors import InvalidArgument
from core.finance import GENESIS, Account, Books, JournalEntry, chain_break, reconcile
from service.codec import timestamp
from service.engine import Engine
from service.errors import Context, check_count, unary
from service.paging import page_size
from service.servicers.inventory import mutation_result
from service.store import StoreCorrupt

#: Journal entries VerifyJournal checks between two turns of the loop (~10 ms of work).
VERIFY_STEP = 1000


class FinanceServicer(pb_grpc.FinanceServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @unary
    async def AllocateLandedCost(self, request: pb.AllocateLandedCostRequest,
                                 context: Context) -> pb.AllocateLandedCostResponse:
        return await self.engine.mutate(
            "AllocateLandedCost", request,
            lambda: c.AllocateLandedCost(request.reference, request.amount_micros,
                                         request.description or "freight"),
            lambda o: pb.AllocateLandedCostResponse(result=mutation_result(o)))

    @unary
    async def GetJournal(self, request: pb.GetJournalRequest,
                         context: Context) -> pb.GetJournalResponse:
        if request.from_number < 0:
            raise InvalidArgument("from_number must be >= 0", "from_number")
        account = _account(request.account)
        size = page_size(request)
        books = self.engine.ledger.books
        skus = self.engine.ledger.catalog.sku_ids
        response = pb.GetJournalResponse()
        number = max(request.from_number, 1)
        count = books.count
        if account is None:
            numbers = list(range(number, min(number + size, count + 1)))
            after = numbers[-1] + 1 if numbers else 0
            next_number = after if 0 < after <= count else 0
        else:  # (the account's own entries, not a scan for them)
            numbers, next_number = books.entry_numbers(account, number, size)
        # Entries closed into the store are read from their segments (after the wait, the
        # books may have closed more: those read before stand).
        kept = {n: e for n in numbers if (e := books.entry(n)) is not None}
        closed: dict[int, JournalEntry] = {}
        for first in sorted({segment[0] for n in numbers if n not in kept
                             and (segment := books.segment_of(n)) is not None}):
            try:
                segment_entries = await self.engine.journal_segment(first)
            except StoreCorrupt as error:
                await context.abort(grpc.StatusCode.DATA_LOSS, str(error))
            closed.update((e.number, e) for e in segment_entries)
        for number in numbers:
            entry = kept.get(number) or closed[number]
            response.entries.add(
                number=entry.number, sequence=entry.seq, time=timestamp(entry.time_ms),
                kind=entry.kind, memo=entry.memo,
                sku_id=skus[entry.sku] if entry.sku >= 0 else "",
                lines=[pb.JournalLine(account=int(x.account), account_name=x.account.name,
                                      debit_micros=x.debit, credit_micros=x.credit)
                       for x in entry.lines],
                previous_hash=entry.prev_hash, hash=entry.hash)
        response.next_number = next_number
        return response

    @unary
    async def GetTrialBalance(self, request: pb.GetTrialBalanceRequest,
                              context: Context) -> pb.GetTrialBalanceResponse:
        balances = self.engine.ledger.books.trial_balance()
        debit = sum(v for v in balances.values() if v > 0)
        credit = -sum(v for v in balances.values() if v < 0)
        return pb.GetTrialBalanceResponse(
            accounts=[pb.AccountBalance(account=int(a), name=a.name, balance_micros=v)
                      for a, v in balances.items()],
            total_debit_micros=debit, total_credit_micros=credit, balanced=debit == credit)

    @unary
    async def GetInventoryValuation(self, request: pb.GetInventoryValuationRequest,
                                    context: Context) -> pb.GetInventoryValuationResponse:
        ledger = self.engine.ledger
        books = ledger.books
        check_count(len(request.sku_ids), self.engine.settings.max_lines_per_request,
                    "sku_ids", "max_lines_per_request")
        skus = (ledger.catalog.skus(request.sku_ids).tolist() if request.sku_ids
                else sorted(s for s in set(books.units) | set(books.value)
                            if books.units.get(s) or books.value.get(s)))
        response = pb.GetInventoryValuationResponse()
        for sku in skus:
            value = books.value.get(sku, 0)
            response.skus.add(sku_id=ledger.catalog.sku_ids[sku], units=books.units.get(sku, 0),
                              average_cost_micros=books.average_cost(sku), value_micros=value)
            response.total_value_micros += value
        return response

    @unary
    async def GetReconciliation(self, request: pb.GetReconciliationRequest,
                                context: Context) -> pb.GetReconciliationResponse:
        ledger = self.engine.ledger
        result = reconcile(ledger)
        return pb.GetReconciliationResponse(
            inventory_account_micros=result.inventory_account,
            sum_of_sku_values_micros=result.sum_of_values,
            ledger_owned_units=result.ledger_units, book_units=result.book_units,
            differences=[pb.ReconciliationDifference(
                sku_id=ledger.catalog.sku_ids[sku], ledger_units=a, book_units=b)
                for sku, a, b in result.differences],
            reconciled=result.reconciled)

    @unary
    async def VerifyJournal(self, request: pb.VerifyJournalRequest,
                            context: Context) -> pb.VerifyJournalResponse:
        # In steps, the loop free between them: checking 1,000,000 entries takes ~2-10 s,
        # which every call in flight waited out when it ran in one go. The journal checked
        # is the one there was when the check began (entries added since extend it); if
        # the state was reloaded from the store meanwhile, the reloaded one is checked.
        while True:
            books = self.engine.ledger.books
            entries, last_hash, closed = books.count, books.last_hash, books.closed_through
            result: tuple[bool, int] | None = await self._verify_closed(books, context)
            if result is not None and result[0]:
                steps = books.verify_steps(VERIFY_STEP)
                while (result := next(steps)) is None:
                    await asyncio.sleep(0)
            if self.engine.ledger.books is books:
                break
        assert result is not None
        intact, first_bad = result
        return pb.VerifyJournalResponse(intact=intact, entries=entries,
                                        first_bad_entry=first_bad, last_hash=last_hash,
                                        closed_entries=closed)

    async def _verify_closed(self, books: Books, context: Context) -> tuple[bool, int]:
        """The segments closed into the store, read back: each the one closed (its
        digest), chained on from the one before, the last to the first entry kept."""
        previous = GENESIS
        for first, last, _ in list(books.closed):
            try:
                segment = await self.engine.journal_segment(first)
            except StoreCorrupt as error:
                await context.abort(grpc.StatusCode.DATA_LOSS, str(error))
            broken = await asyncio.to_thread(chain_break, segment, first, previous)
            if broken or not segment or segment[-1].number != last:
                return False, broken or first
            previous = segment[-1].hash
            await asyncio.sleep(0)
        return previous == books.closed_hash, 0 if previous == books.closed_hash else (
            books.closed_through + 1)

    @unary
    async def GetAccountActivity(self, request: pb.GetAccountActivityRequest,
                                 context: Context) -> pb.GetAccountActivityResponse:
        days = request.period_days or 1
        if not 1 <= days <= 3660:
            raise InvalidArgument("period_days must be between 1 and 3660", "period_days")
        account = _account(request.account)
        rows = self.engine.ledger.books.activity(days, account)
        return pb.GetAccountActivityResponse(activity=[
            pb.AccountActivity(period_start=timestamp(start), account=int(acct),
                               account_name=acct.name, debit_micros=d, credit_micros=cr,
                               entries=n)
            for start, acct, d, cr, n in rows])


def _account(number: int) -> Account | None:
    """The account a query filters on (its number); None (0) for all."""
    if not number:
        return None
    try:
        return Account(number)
    except ValueError:
        raise InvalidArgument(f"no account {number}", "account") from None
