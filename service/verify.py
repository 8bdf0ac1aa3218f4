"""`allocd verify`: rebuild the state from a store, check the invariants, print a checksum."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from core.finance import (
    GENESIS,
    Books,
    JournalEntry,
    chain_break,
    decode_segment,
    reconcile,
    segment_digest,
)
from core.ledger import Ledger
from core.model import Bucket
from service.audit import verify_lines
from service.config import Settings
from service.engine import ledger_settings
from service.filestore import FileEventStore, load_for_verify
from service.redisstore import RedisEventStore
from service.store import Recovered, StoreCorrupt


async def _read_redis(url: str, partition: str) -> tuple[Recovered, float]:
    started = time.perf_counter()
    store = RedisEventStore(url, partition, read_only=True)
    recovered = await store.open()  # reads only; nothing is written
    await store.close()
    return recovered, time.perf_counter() - started


async def _redis_segments(url: str, partition: str, firsts: list[int]) -> dict[int, bytes]:
    store = RedisEventStore(url, partition, read_only=True)
    await store.open()
    try:
        found = {}
        for first in firsts:
            with contextlib.suppress(StoreCorrupt):  # (reported as missing)
                found[first] = await store.get_journal(first)
        return found
    finally:
        await store.close()


def closed_entries(books: Books, read: Callable[[int], bytes | None],
                   ) -> tuple[list[JournalEntry], str]:
    """The entries closed into the store, read back segment by segment, and what is wrong
    with them ("" if nothing): a segment missing or not the one closed (its digest), or
    one that does not chain on from the one before (the last to the first entry kept)."""
    entries: list[JournalEntry] = []
    previous = GENESIS
    for first, last, digest in books.closed:
        data = read(first)
        if data is None:
            return entries, f"MISSING the closed segment from entry {first}"
        if segment_digest(data) != digest:
            return entries, f"CHANGED: the closed segment from entry {first}"
        try:
            segment = decode_segment(data)
        except ValueError:
            return entries, f"CHANGED: the closed segment from entry {first}"
        broken = chain_break(segment, first, previous)
        if broken or not segment or segment[-1].number != last:
            return entries, f"CHANGED from entry {broken or first}"
        previous = segment[-1].hash
        entries.extend(segment)
    if previous != books.closed_hash:
        return entries, f"CHANGED from entry {books.closed_through + 1}"
    return entries, ""


def _file_segment(directory: Path, first: int) -> bytes | None:
    try:
        return FileEventStore._get_journal(directory, first)
    except StoreCorrupt:
        return None


def verify(directory: Path, redis_url: str = "", partition: str = "default",
           settings: Settings | None = None) -> int:
    """`settings`: the server's (its shard count: a store without a snapshot is replayed
    into a ledger laid out as the server's, or the checksum could not be compared)."""
    if redis_url:
        recovered, read_s = asyncio.run(_read_redis(redis_url, partition))
        where = f"{redis_url} partition {partition}"
    elif not directory.is_dir():
        print(f"allocd verify: no store at {directory}")
        return 2
    else:
        recovered, read_s = load_for_verify(directory)
        where = str(directory)
    started = time.perf_counter()
    ledger = (recovered.snapshot.ledger if recovered.snapshot
              else Ledger(ledger_settings(settings or Settings(partition=partition))))
    commits = 0
    for commit in recovered.commits:
        ledger.apply(commit.events, replay=True)
        commits += 1
    replay_s = time.perf_counter() - started
    totals = ledger.bucket_totals().tolist()
    inside = sum(totals)
    conserved = inside == ledger.units_in - ledger.units_out
    lowest = ledger.min_quantity()
    snapshot = f"snapshot of event {recovered.snapshot.seq}" if recovered.snapshot else "none"
    print(f"store:        {where}")
    print(f"snapshot:     {snapshot}")
    print(f"log:          {commits} commits after it, up to event {ledger.last_seq}")
    print(f"read:         {read_s:.2f} s; replay {replay_s:.2f} s")
    print(f"catalogue:    {ledger.catalog.n_skus} SKUs, {ledger.catalog.n_nodes} nodes")
    print("buckets:      " + ", ".join(f"{b.name.lower()} {totals[b]}" for b in Bucket
                                        if b != Bucket.EXTERNAL))
    print(f"orders:       {len(ledger.orders.orders)}; open exceptions "
          f"{len(ledger.exceptions.open_ids)}")
    print(f"no negative:  {'ok' if lowest >= 0 else f'FAILED (lowest {lowest})'}")
    print(f"conservation: {'ok' if conserved else 'FAILED'} (inside {inside} = received "
          f"{ledger.units_in} - shipped {ledger.units_out})")
    books = ledger.books
    if redis_url:
        held = asyncio.run(_redis_segments(redis_url, partition,
                                           [first for first, _, _ in books.closed]))
        closed, problem = closed_entries(books, held.get)
    else:
        closed, problem = closed_entries(books, lambda first: _file_segment(directory, first))
    intact, first_bad = books.verify()
    views = not problem and books.views_agree(closed)
    balanced = sum(ledger.books.balances.values()) == 0
    reconciliation = reconcile(ledger)
    print(f"journal:      {books.count} entries ({books.closed_through} closed into the "
          "store), " + (problem if problem else "hash chain intact" if intact
                        else f"CHANGED from entry {first_bad}"))
    print("journal sums: " + ("ok (daily totals and each account's entries)" if views
                              else "FAILED: the daily totals or an account's entries "
                                   "differ from the entries"))
    print(f"trial bal.:   {'balanced' if balanced else 'FAILED: debits differ from credits'}")
    print(f"reconciled:   {'ok' if reconciliation.reconciled else 'FAILED'} (inventory "
          f"{reconciliation.inventory_account} micros, {reconciliation.book_units} units)")
    audit = directory / "audit.log"
    audit_ok = True
    if audit.exists():
        text = audit.read_text()
        lines = text.splitlines()
        torn = bool(text) and not text.endswith("\n")  # cut when the server next starts
        audit_ok, bad_line = verify_lines(lines[:-1] if torn else lines)
        print("audit log:    " + ("hash chain intact" if audit_ok
                                  else f"CHANGED at line {bad_line}")
              + (f"; a torn last line {len(lines)} (an unfinished write)" if torn else ""))
    for note in recovered.notes:
        print(f"note:         {note}")
    print(f"checksum:     {ledger.checksum()}")
    ok = (lowest >= 0 and conserved and intact and not problem and views and balanced
          and reconciliation.reconciled and audit_ok)
    return 0 if ok else 1
