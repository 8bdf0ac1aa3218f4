"""The books: a double-entry journal posted from ledger events, with moving-average cost.

Every event that changes what the company owns or owes posts a balanced journal
entry (money in integer micros). Inventory is valued per SKU at moving weighted
average cost, kept exact: the SKU's total value and owned units are tracked, and
issuing q of u units takes value * q // u (the last unit takes what is left), so
the inventory account always equals the sum of the SKUs' values. Entries are
hash-chained: changing any entry breaks the chain from there on.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import zlib
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import TYPE_CHECKING

from core.errors import InvariantViolation
from core.model import Bucket, Event, EventKind, set_fields

if TYPE_CHECKING:
    from core.ledger import Ledger


class Account(IntEnum):
    ACCOUNTS_RECEIVABLE = 1100
    INVENTORY = 1200
    VENDOR_RECEIVABLE = 1300
    ACCOUNTS_PAYABLE = 2000
    ACCRUED_LANDED_COST = 2100
    REFUNDS_PAYABLE = 2200
    CARRIER_PAYABLE = 2300
    REVENUE = 4000
    SALES_RETURNS = 4100
    RESTOCKING_FEES = 4200
    INVENTORY_GAINS = 4900
    COST_OF_GOODS_SOLD = 5000
    SHIPPING_EXPENSE = 5100
    INVENTORY_WRITE_OFFS = 5200


#: Normal balance side: assets and expenses are debit accounts.
DEBIT_NORMAL = frozenset({Account.ACCOUNTS_RECEIVABLE, Account.INVENTORY,
                          Account.VENDOR_RECEIVABLE, Account.SALES_RETURNS,
                          Account.COST_OF_GOODS_SOLD, Account.SHIPPING_EXPENSE,
                          Account.INVENTORY_WRITE_OFFS})

GENESIS = "0" * 32
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class JournalLine:
    account: Account
    debit: int = 0
    credit: int = 0


@dataclass(frozen=True, slots=True)
class JournalEntry:
    number: int
    seq: int  # the event that posted it
    time_ms: int
    kind: str
    memo: str
    sku: int
    lines: tuple[JournalLine, ...]
    prev_hash: str
    hash: str

    def body(self) -> bytes:
        lines = ";".join(f"{int(x.account)}:{x.debit}:{x.credit}" for x in self.lines)
        return (f"{self.number}|{self.seq}|{self.time_ms}|{self.kind}|{self.memo}|{self.sku}|"
                f"{lines}|{self.prev_hash}").encode()


def entry_hash(entry: JournalEntry) -> str:
    return hashlib.blake2b(entry.body(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class JournalClosed:
    """Payload of JOURNAL_CLOSED: entries `first` to `last` left memory for the store's
    journal segment `first` (written before the event), whose bytes hash to `digest`;
    `last_hash` is entry `last`'s hash, which the entries kept chain on from."""

    first: int
    last: int
    last_hash: str
    digest: str


#: The fields of an entry in a segment, in order (a segment names them: readable alone).
SEGMENT_FIELDS = ("number", "seq", "time_ms", "kind", "memo", "sku", "lines", "prev_hash",
                  "hash")


def encode_segment(entries: Iterable[JournalEntry]) -> bytes:
    """Closed entries as the store keeps them: one JSON document, compressed, naming its
    fields and holding each entry as a list of them (the lines as [account, debit,
    credit]). Readable without allocd. (One document: the JSON encoder's C loop writes it,
    several times faster than an object an entry.)"""
    rows = [[e.number, e.seq, e.time_ms, e.kind, e.memo, e.sku,
             [[int(x.account), x.debit, x.credit] for x in e.lines], e.prev_hash, e.hash]
            for e in entries]
    text = json.dumps({"fields": SEGMENT_FIELDS, "entries": rows}, separators=(",", ":"))
    return zlib.compress(text.encode(), 1)  # (the fastest level: a fourth larger than 6)


def decode_segment(data: bytes) -> list[JournalEntry]:
    """The entries of a segment `encode_segment` wrote. Raises ValueError if it is not one."""
    try:
        document = json.loads(zlib.decompress(data))
        if tuple(document["fields"]) != SEGMENT_FIELDS:
            raise ValueError("its fields are not a journal entry's")
        accounts = {int(a): a for a in Account}
        return [JournalEntry(
            int(number), int(seq), int(time_ms), str(kind), str(memo), int(sku),
            tuple(JournalLine(accounts[a], int(d), int(c)) for a, d, c in lines),
            str(prev_hash), str(entry_hash_))
            for number, seq, time_ms, kind, memo, sku, lines, prev_hash, entry_hash_
            in document["entries"]]
    except (zlib.error, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"not a journal segment: {error}") from None


def segment_digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def chain_break(entries: Iterable[JournalEntry], first: int, previous: str) -> int:
    """The number of the first entry that does not chain on from `previous` (or is not
    numbered in turn from `first`, or whose hash is not its own); 0 if none."""
    number = first
    for entry in entries:
        if (entry.number != number or entry.prev_hash != previous
                or entry_hash(entry) != entry.hash):
            return number
        previous = entry.hash
        number += 1
    return 0


@dataclass(frozen=True, slots=True)
class LandedCost:
    """Payload of LANDED_COST_ALLOCATED: freight or duty on a receipt."""

    reference: str
    amount_micros: int
    description: str


@dataclass(slots=True)
class Books:
    entries: list[JournalEntry] = field(default_factory=list)
    balances: dict[Account, int] = field(default_factory=dict)  # debit minus credit
    value: dict[int, int] = field(default_factory=dict)  # sku -> inventory value, micros
    units: dict[int, int] = field(default_factory=dict)  # sku -> owned units
    # (Books from older snapshots only: (po, sku) -> the unit cost of its last line.)
    po_cost: dict[tuple[str, int], int] = field(default_factory=dict)
    # (po, sku, node) -> [units still expected, their value]: each line at its own cost.
    po_lines: dict[tuple[str, int, int], list[int]] = field(default_factory=dict)
    transfers: set[str] = field(default_factory=set)
    # reference -> sku -> [units received, their value]: what landed cost is shared by.
    receipts: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    # A count's found units waiting for approval: exception id -> the gain booked for them.
    held_gains: dict[str, int] = field(default_factory=dict)
    # What the units of an order's line cost as they shipped: order id -> (line id, SKU) ->
    # [units, their cost]. A return brings them back at that cost (until it is archived).
    shipped_cost: dict[str, dict[tuple[str, int], list[int]]] = field(default_factory=dict)
    last_hash: str = GENESIS
    # Kept as entries are posted, so that a query reads what it asks for instead of the
    # whole journal (at 1,000,000 entries a walk held the server ~3 s):
    # (day since the epoch, account) -> [debits, credits, lines] ...
    days: dict[tuple[int, Account], list[int]] = field(default_factory=dict)
    # ... and account -> the numbers of the entries with a line in it, ascending.
    numbers_by_account: dict[Account, array[int]] = field(default_factory=dict)
    # Entries closed into the store (JOURNAL_CLOSED): (first, last, digest) of each
    # segment, ascending; `entries` holds those after them. The hash of the last closed
    # entry, which the first kept one chains on from.
    closed: list[tuple[int, int, str]] = field(default_factory=list)
    closed_hash: str = GENESIS

    def __getstate__(self) -> dict[str, object]:
        state = {name: getattr(self, name) for name in self.__slots__}
        # (As bytes: the store unpickles no array.)
        state["numbers_by_account"] = {account: numbers.tobytes()
                                       for account, numbers in self.numbers_by_account.items()}
        return state

    def __setstate__(self, state: object) -> None:
        # (Books from older snapshots lack the later fields, and list a receipt's SKUs
        # without what came: landed cost on those is shared as it was then.)
        self.po_lines, self.held_gains, self.shipped_cost = {}, {}, {}
        self.closed, self.closed_hash = [], GENESIS
        set_fields(self, state)
        for reference, skus in self.receipts.items():
            if isinstance(skus, list):
                self.receipts[reference] = {sku: [0, 0] for sku in skus}
        if hasattr(self, "days") and hasattr(self, "numbers_by_account"):
            kept: dict[Account, bytes] = self.numbers_by_account  # type: ignore[assignment]
            self.numbers_by_account = {account: array("q", numbers)
                                       for account, numbers in kept.items()}
        else:  # books from a snapshot written before the kept views: built from the entries
            self.days, self.numbers_by_account = {}, {}
            for entry in self.entries:
                self._index(entry)

    # ---- posting --------------------------------------------------------------------
    def _post(self, event: Event, kind: str, memo: str, sku: int,
              lines: Iterable[JournalLine]) -> None:
        kept = tuple(x for x in lines if x.debit or x.credit)
        if not kept:
            return
        debit = sum(x.debit for x in kept)
        credit = sum(x.credit for x in kept)
        if debit != credit:  # pragma: no cover - every rule below posts both sides
            raise ValueError(f"unbalanced entry {kind}: {debit} != {credit}")
        entry = JournalEntry(self.count + 1, event.seq, event.time_ms, kind, memo, sku,
                             kept, self.last_hash, "")
        entry = replace(entry, hash=entry_hash(entry))
        self.entries.append(entry)
        self.last_hash = entry.hash
        for x in kept:
            self.balances[x.account] = self.balances.get(x.account, 0) + x.debit - x.credit
        self._index(entry)

    def _index(self, entry: JournalEntry) -> None:
        """Count the entry into the daily totals and the accounts' entry lists."""
        day = entry.time_ms // DAY_MS
        seen: set[Account] = set()
        for x in entry.lines:
            row = self.days.get((day, x.account))
            if row is None:
                row = self.days[(day, x.account)] = [0, 0, 0]
            row[0] += x.debit
            row[1] += x.credit
            row[2] += 1
            if x.account not in seen:
                seen.add(x.account)
                numbers = self.numbers_by_account.get(x.account)
                if numbers is None:
                    numbers = self.numbers_by_account[x.account] = array("q")
                numbers.append(entry.number)

    def _receive(self, sku: int, qty: int, unit_cost: int) -> int:
        return self._receive_value(sku, qty, qty * unit_cost)

    def _receive_value(self, sku: int, qty: int, amount: int) -> int:
        self.units[sku] = self.units.get(sku, 0) + qty
        self.value[sku] = self.value.get(sku, 0) + amount
        return amount

    def _received(self, reference: str, sku: int, qty: int, amount: int) -> None:
        """Note what a receipt brought in, for landed cost on it later."""
        row = self.receipts.setdefault(reference, {}).setdefault(sku, [0, 0])
        row[0] += qty
        row[1] += amount

    def _po_value(self, e: Event, standard: int) -> int:
        """The value of units received against a purchase: their share of the value of
        the line still expected (every line at its own cost)."""
        key = (e.reference, e.sku, e.node)
        line = self.po_lines.get(key)
        if line is None:  # (a line expected before lines kept their own value)
            return e.quantity * self.po_cost.get((e.reference, e.sku), standard)
        units, value = line
        if e.quantity >= units:
            del self.po_lines[key]
            return value
        share = value * e.quantity // units
        line[0], line[1] = units - e.quantity, value - share
        return share

    def _issue(self, sku: int, qty: int) -> int:
        """The value of `qty` units leaving inventory at moving average cost."""
        units = self.units.get(sku, 0)
        value = self.value.get(sku, 0)
        if units <= 0:
            return 0
        qty = min(qty, units)
        cost = value if qty == units else value * qty // units
        self.units[sku] = units - qty
        self.value[sku] = value - cost
        return cost

    def shipped_unit_cost(self, order_id: str, line_id: str, sku: int) -> int:
        """What a unit of the order's line cost as it shipped as `sku`; 0 if not known."""
        row = self.shipped_cost.get(order_id, {}).get((line_id, sku))
        return row[1] // row[0] if row and row[0] else 0

    def average_cost(self, sku: int) -> int:
        units = self.units.get(sku, 0)
        return self.value.get(sku, 0) // units if units else 0

    def post_event(self, ledger: Ledger, e: Event) -> None:
        """Post what `e` means in money (called by Ledger.apply, in event order)."""
        kind = e.kind
        cat = ledger.catalog
        standard = int(cat.unit_cost_micros[e.sku]) if e.sku >= 0 and e.sku < cat.n_skus else 0
        inv, ap = Account.INVENTORY, Account.ACCOUNTS_PAYABLE
        if kind == EventKind.RECEIVED:
            amount = self._receive(e.sku, e.quantity, e.amount or standard)
            self._received(e.reference, e.sku, e.quantity, amount)
            self._post(e, "receipt", e.reference, e.sku,
                       (JournalLine(inv, debit=amount), JournalLine(ap, credit=amount)))
        elif kind == EventKind.INBOUND_EXPECTED:
            key = (e.reference, e.sku, e.node)
            line = self.po_lines.get(key)
            if line is None:
                line = self.po_lines[key] = [0, 0]
                legacy = self.po_cost.get((e.reference, e.sku))
                expected = ledger.inbound.get(key)  # (with this event's units already)
                if legacy is not None and expected is not None:
                    # Units of the line expected before lines kept their own value (books
                    # from an older snapshot): at the cost the line had then.
                    earlier = max(expected.remaining - e.quantity, 0)
                    line[0], line[1] = earlier, earlier * legacy
            line[0] += e.quantity
            line[1] += e.quantity * (e.amount or standard)
        elif kind == EventKind.INBOUND_CANCELLED:
            # Nothing was booked when it was expected: the line's value for the units that
            # will not come goes, and later receipts are valued at what is left of it.
            self._po_value(e, standard)
        elif kind in (EventKind.TRANSFER_SHIPPED, EventKind.TRANSFER_IN_TRANSIT):
            self.transfers.add(e.reference)
        elif kind == EventKind.INBOUND_RECEIVED and e.reference not in self.transfers:
            amount = self._receive_value(e.sku, e.quantity, self._po_value(e, standard))
            self._received(e.reference, e.sku, e.quantity, amount)
            self._post(e, "receipt", e.reference, e.sku,
                       (JournalLine(inv, debit=amount), JournalLine(ap, credit=amount)))
        elif kind == EventKind.COUNT_VARIANCE_SETTLED and e.reference in self.held_gains:
            gain = self.held_gains.pop(e.reference)
            if e.to_bucket == Bucket.EXTERNAL:  # found units refused: the gain taken back
                self._gain_reversed(e, gain)
        elif kind in (EventKind.ADJUSTED, EventKind.COUNT_ADJUSTED,
                      EventKind.COUNT_VARIANCE_HELD, EventKind.COUNT_VARIANCE_SETTLED,
                      EventKind.PICK_SHORTAGE):
            if e.from_bucket == Bucket.EXTERNAL:  # found units
                amount = self._receive(e.sku, e.quantity, self.average_cost(e.sku) or standard)
                if kind == EventKind.COUNT_VARIANCE_HELD:
                    self.held_gains[e.reference] = amount  # (reversed as booked if refused)
                self._post(e, "inventory gain", kind.name.lower(), e.sku, (
                    JournalLine(inv, debit=amount),
                    JournalLine(Account.INVENTORY_GAINS, credit=amount)))
            elif e.to_bucket == Bucket.EXTERNAL:  # lost, damaged, scrapped
                amount = self._issue(e.sku, e.quantity)
                self._post(e, "write-off", kind.name.lower(), e.sku, (
                    JournalLine(Account.INVENTORY_WRITE_OFFS, debit=amount),
                    JournalLine(inv, credit=amount)))
        elif kind == EventKind.ORDER_UNITS_SHIPPED:
            cost = self._issue(e.sku, e.quantity)
            package = ledger.orders.packages.get(e.reference)
            if isinstance(e.payload, str) and package is not None:
                # At what the line was charged (set as its package shipped, just before).
                price = package.unit_prices[e.payload] * e.quantity
                row = self.shipped_cost.setdefault(package.order_id, {}).setdefault(
                    (e.payload, e.sku), [0, 0])
                row[0] += e.quantity
                row[1] += cost
            else:  # (shipped before events named their line: the catalogue price then)
                price = int(cat.price_micros[e.sku]) * e.quantity
            self._post(e, "shipment", e.reference, e.sku, (
                JournalLine(Account.COST_OF_GOODS_SOLD, debit=cost),
                JournalLine(inv, credit=cost),
                JournalLine(Account.ACCOUNTS_RECEIVABLE, debit=price),
                JournalLine(Account.REVENUE, credit=price)))
        elif kind == EventKind.PACKAGE_SHIPPED:
            state = ledger.orders.packages.get(e.reference)
            carrier = state.plan.carrier_micros if state is not None else 0
            self._post(e, "carrier cost", e.reference, -1, (
                JournalLine(Account.SHIPPING_EXPENSE, debit=carrier),
                JournalLine(Account.CARRIER_PAYABLE, credit=carrier)))
        elif kind == EventKind.LANDED_COST_ALLOCATED:
            self._landed_cost(e)
        elif kind == EventKind.RETURN_RECEIVED:  # back in stock, out of cost of sales
            # At what the units cost as they shipped (the event carries it); a return
            # logged before it did, at today's average cost, else the standard cost.
            amount = self._receive(e.sku, e.quantity,
                                   e.amount or self.average_cost(e.sku) or standard)
            self._post(e, "return received", e.reference, e.sku, (
                JournalLine(inv, debit=amount),
                JournalLine(Account.COST_OF_GOODS_SOLD, credit=amount)))
        elif kind == EventKind.RETURN_DISPOSED and e.to_bucket == Bucket.EXTERNAL:
            amount = self._issue(e.sku, e.quantity)
            vendor = e.reason == RETURN_TO_VENDOR
            self._post(e, "vendor claim" if vendor else "write-off", e.reference, e.sku, (
                JournalLine(Account.VENDOR_RECEIVABLE if vendor
                            else Account.INVENTORY_WRITE_OFFS, debit=amount),
                JournalLine(inv, credit=amount)))
        elif kind == EventKind.ORDER_ARCHIVED:
            self.shipped_cost.pop(e.reference, None)
        elif kind == EventKind.JOURNAL_CLOSED:
            self.close(e.payload)
        elif kind == EventKind.REFUND_ISSUED:
            refund = e.payload
            self._post(e, "refund", e.reference, -1, (
                JournalLine(Account.SALES_RETURNS, debit=refund.gross_micros),
                JournalLine(Account.REFUNDS_PAYABLE, credit=refund.net_micros),
                JournalLine(Account.RESTOCKING_FEES, credit=refund.fee_micros)))

    def _gain_reversed(self, e: Event, gain: int) -> None:
        """Found units a count held, refused: the gain booked for them is reversed as it
        was booked, not written off at today's average cost. What their leaving takes
        from the SKU's value differs from the gain only where the average has moved
        since (or the last units leave): that difference is cost of goods sold."""
        units = self.units.get(e.sku, 0)
        value = self.value.get(e.sku, 0)
        taken = value if e.quantity >= units else min(gain, value)
        self.units[e.sku] = max(units - e.quantity, 0)
        self.value[e.sku] = value - taken
        self._post(e, "inventory gain reversed", e.reference, e.sku, (
            JournalLine(Account.INVENTORY_GAINS, debit=gain),
            JournalLine(Account.COST_OF_GOODS_SOLD, debit=max(taken - gain, 0),
                        credit=max(gain - taken, 0)),
            JournalLine(Account.INVENTORY, credit=taken)))

    def _landed_cost(self, e: Event) -> None:
        """Share freight or duty among the receipt's SKUs by the value each brought in
        (by units where that is 0), and capitalise each share into the part of what came
        that is still on hand; the rest (gone already) goes to cost of goods sold."""
        landed: LandedCost = e.payload
        received = self.receipts.get(landed.reference, {})
        skus = sorted(received)
        weights = [received[s][1] for s in skus]
        if not sum(weights):
            weights = [received[s][0] for s in skus]
        legacy = not sum(weights)  # (a receipt noted before receipts kept what came)
        if legacy:
            weights = [max(self.value.get(s, 0), 0) for s in skus]
        total = sum(weights)
        remaining = landed.amount_micros
        lines: list[JournalLine] = []
        for i, (sku, weight) in enumerate(zip(skus, weights, strict=True)):
            share = remaining if i == len(skus) - 1 else (
                landed.amount_micros * weight // total if total else
                landed.amount_micros // len(skus))
            remaining -= share
            on_hand = self.units.get(sku, 0)
            came = received[sku][0]
            kept = (share if on_hand > 0 else 0) if legacy or not came else (
                share * min(on_hand, came) // came)
            if kept:
                self.value[sku] = self.value.get(sku, 0) + kept
                lines.append(JournalLine(Account.INVENTORY, debit=kept))
            if share - kept:
                lines.append(JournalLine(Account.COST_OF_GOODS_SOLD, debit=share - kept))
        lines.append(JournalLine(Account.ACCRUED_LANDED_COST, credit=landed.amount_micros))
        self._post(e, "landed cost", f"{landed.description} on {landed.reference}", -1, lines)

    # ---- closing entries into the store ----------------------------------------------
    @property
    def closed_through(self) -> int:
        """The number of the last entry closed into the store (0: none)."""
        return self.closed[-1][1] if self.closed else 0

    @property
    def count(self) -> int:
        """Entries posted, closed or kept."""
        return self.closed_through + len(self.entries)

    def entry(self, number: int) -> JournalEntry | None:
        """Entry `number` if it is kept in memory (None once closed, or past the last)."""
        index = number - self.closed_through - 1
        return self.entries[index] if 0 <= index < len(self.entries) else None

    def segment_of(self, number: int) -> tuple[int, int, str] | None:
        """The closed segment (first, last, digest) that holds entry `number`, if any."""
        at = bisect.bisect_right(self.closed, (number, 1 << 62, ""))
        if at and self.closed[at - 1][0] <= number <= self.closed[at - 1][1]:
            return self.closed[at - 1]
        return None

    def closable(self, before_ms: int, limit: int) -> list[JournalEntry]:
        """The oldest kept entries, up to `limit`, posted before `before_ms` (in number
        order, stopping at the first that is not)."""
        out: list[JournalEntry] = []
        for entry in self.entries[:limit]:
            if entry.time_ms >= before_ms:
                break
            out.append(entry)
        return out

    def close(self, closed: JournalClosed) -> None:
        """Let entries `first`..`last` go (JOURNAL_CLOSED): the store holds them now. Their
        totals stay in the daily views and the balances, their numbers in the accounts'
        lists (paged as before, read from the store)."""
        count = closed.last - closed.first + 1
        if (closed.first != self.closed_through + 1 or not 0 < count <= len(self.entries)
                or self.entries[count - 1].hash != closed.last_hash):
            raise InvariantViolation(f"journal entries {closed.first}..{closed.last} are "
                                     "not the oldest kept ones")
        del self.entries[:count]
        self.closed.append((closed.first, closed.last, closed.digest))
        self.closed_hash = closed.last_hash

    # ---- views ----------------------------------------------------------------------
    def trial_balance(self) -> dict[Account, int]:
        return {account: self.balances.get(account, 0) for account in Account}

    def activity(self, period_days: int, account: Account | None = None
                 ) -> list[tuple[int, Account, int, int, int]]:
        """(period start in ms, account, debits, credits, lines) per period of
        `period_days` days (counted from the epoch) and account, from the daily totals:
        as many steps as days with postings, whatever the journal's length."""
        totals: dict[tuple[int, Account], list[int]] = {}
        for (day, acct), (debit, credit, lines) in self.days.items():
            if account is not None and acct != account:
                continue
            key = (day - day % period_days, acct)
            row = totals.get(key)
            if row is None:
                totals[key] = [debit, credit, lines]
            else:
                row[0] += debit
                row[1] += credit
                row[2] += lines
        return [(day * DAY_MS, acct, d, cr, n)
                for (day, acct), (d, cr, n) in sorted(totals.items())]

    def entry_numbers(self, account: Account, from_number: int, count: int
                      ) -> tuple[list[int], int]:
        """Up to `count` numbers of the entries with a line in `account`, from
        `from_number` on, and the number after them (0 if none is left)."""
        numbers = self.numbers_by_account.get(account, array("q"))
        start = bisect.bisect_left(numbers, from_number)
        page = numbers[start:start + count].tolist()
        after = start + count
        return page, numbers[after] if after < len(numbers) else 0

    def views_agree(self, closed: Iterable[JournalEntry] = ()) -> bool:
        """Whether the kept views (daily totals, each account's entries) are what the
        entries give, counted afresh: the hash chain covers the entries, not them.
        `closed`: the entries closed into the store, read back, in order."""
        fresh = Books.__new__(Books)
        fresh.days, fresh.numbers_by_account = {}, {}
        for entry in closed:
            fresh._index(entry)
        for entry in self.entries:
            fresh._index(entry)
        return (fresh.days == self.days
                and fresh.numbers_by_account == self.numbers_by_account)

    def verify(self) -> tuple[bool, int]:
        """(whether the chain of the entries kept is intact, from the last closed one's
        hash on; the first entry number that is not; 0 if none)."""
        for result in self.verify_steps(len(self.entries) + 1):
            if result is not None:
                return result
        raise AssertionError("verify_steps ends with a result")  # pragma: no cover

    def verify_steps(self, chunk: int) -> Iterator[tuple[bool, int] | None]:
        """`verify` in steps of `chunk` entries: None after each step but the last, then
        the result. The entries there were when it started are checked (later ones extend
        the chain from the last of those); a caller may do other work between steps."""
        entries = self.entries
        count = len(entries)
        previous = self.closed_hash
        first = self.closed_through + 1
        for start in range(0, count, chunk):
            step = entries[start:min(start + chunk, count)]
            broken = chain_break(step, first + start, previous)
            if broken:
                yield False, broken
                return
            if step:
                previous = step[-1].hash
            if start + chunk < count:
                yield None
        yield True, 0


WATCHED_KINDS = frozenset({
    EventKind.RECEIVED, EventKind.INBOUND_EXPECTED, EventKind.INBOUND_CANCELLED,
    EventKind.TRANSFER_SHIPPED,
    EventKind.TRANSFER_IN_TRANSIT, EventKind.INBOUND_RECEIVED, EventKind.ADJUSTED,
    EventKind.COUNT_ADJUSTED, EventKind.COUNT_VARIANCE_HELD, EventKind.COUNT_VARIANCE_SETTLED,
    EventKind.PICK_SHORTAGE, EventKind.ORDER_UNITS_SHIPPED, EventKind.PACKAGE_SHIPPED,
    EventKind.LANDED_COST_ALLOCATED, EventKind.RETURN_RECEIVED, EventKind.RETURN_DISPOSED,
    EventKind.REFUND_ISSUED, EventKind.ORDER_ARCHIVED, EventKind.JOURNAL_CLOSED,
})
RETURN_TO_VENDOR = 5  # returns.Disposition.RETURN_TO_VENDOR (kept here: no import cycle)


@dataclass(frozen=True, slots=True)
class Reconciliation:
    inventory_account: int
    sum_of_values: int
    ledger_units: int
    book_units: int
    differences: tuple[tuple[int, int, int], ...]  # (sku, ledger units, book units)

    @property
    def reconciled(self) -> bool:
        return not self.differences and self.inventory_account == self.sum_of_values


def owned_units(ledger: Ledger) -> dict[int, int]:
    """Units the company owns per SKU: every bucket, less purchase orders not yet received
    (in transit to us, but still the supplier's)."""
    books = ledger.books
    owned: dict[int, int] = {}
    n_nodes = ledger.catalog.n_nodes
    for shard_no, shard in enumerate(ledger.shards):
        if not shard.n_skus or not n_nodes:
            continue
        totals = shard.qty[: shard.n_skus, :n_nodes].sum(axis=(1, 2)).tolist()
        for local, units in enumerate(totals):
            if units:
                owned[local * ledger.n_shards + shard_no] = int(units)
    for (reference, sku, _), line in ledger.inbound.items():
        if reference not in books.transfers:
            owned[sku] = owned.get(sku, 0) - line.remaining
    return {sku: units for sku, units in owned.items() if units}


def reconcile(ledger: Ledger) -> Reconciliation:
    books = ledger.books
    ledger_units = owned_units(ledger)
    book_units = {s: u for s, u in books.units.items() if u}
    differences = tuple(sorted(
        (sku, ledger_units.get(sku, 0), book_units.get(sku, 0))
        for sku in set(ledger_units) | set(book_units)
        if ledger_units.get(sku, 0) != book_units.get(sku, 0)))
    return Reconciliation(books.balances.get(Account.INVENTORY, 0), sum(books.value.values()),
                          sum(ledger_units.values()), sum(book_units.values()), differences)
