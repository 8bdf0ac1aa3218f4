"""Where acknowledged changes live. A mutating call replies only after `append` returns.

`EventStore` is the interface: an append-only log of commits (a call's events and
its answer) plus snapshots of the whole state. `MemoryEventStore` keeps the log in
process memory (nothing survives a restart; for tests and throwaway runs);
`FileEventStore` (service/filestore.py) is the embedded default, and the Redis
store implements the same interface.
"""

from __future__ import annotations

import abc
import asyncio
import bisect
import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from core.ledger import Ledger
from core.model import Event
from core.orders import event_columns, events_from_columns


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The first answer to a request id, so a retry after a restart gets it too."""

    method: str
    request_id: str
    fingerprint: bytes
    response: bytes

    def __reduce__(self) -> tuple[type[IdempotencyRecord], tuple[str, str, bytes, bytes]]:
        """Pickled (into the log, one a call) as its class and fields. The dataclass's own
        form calls its `__getstate__`, interpreted, walking `fields()`: a commit of 8
        answers took ~15 µs to pickle that way, ~5 this way. Logs written in that form
        still read (its `__setstate__` is kept)."""
        return IdempotencyRecord, (self.method, self.request_id, self.fingerprint,
                                   self.response)


@dataclass(frozen=True, slots=True)
class Commit:
    """What one mutating call writes: its events and the answer it gave. Calls answered
    together write one commit holding all their answers (a tuple: a single record is
    what older logs hold)."""

    events: tuple[Event, ...]
    idempotency: IdempotencyRecord | tuple[IdempotencyRecord, ...] | None = None

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else 0

    def __reduce__(self) -> tuple[Any, ...]:
        """Written with its events as columns (core.orders.event_columns) when they fit;
        else event by event. Logs written before, either way, still read."""
        try:
            columns = event_columns(self.events)
        except (TypeError, ValueError, KeyError, AttributeError):  # a value kept as it is
            columns = None
        if columns is None:
            return Commit, (self.events, self.idempotency)
        return ColumnsCommit, (columns, self.idempotency)

    @property
    def answers(self) -> tuple[IdempotencyRecord, ...]:
        record = self.idempotency
        if record is None:
            return ()
        return record if isinstance(record, tuple) else (record,)


class ColumnsCommit:
    """How a commit written as columns reads back: calling it makes the Commit (the log's
    reader only calls classes, so this is one, whose instances are Commits)."""

    def __new__(  # type: ignore[misc]  # (a Commit, not an instance of this class)
            cls, columns: tuple[Any, ...],
            idempotency: IdempotencyRecord | tuple[IdempotencyRecord, ...] | None) -> Commit:
        return Commit(events_from_columns(columns), idempotency)


@dataclass(slots=True)
class Snapshot:
    """The whole state as of event `seq`, with the answers retries may still ask for."""

    seq: int
    ledger: Ledger
    answers: list[IdempotencyRecord] = field(default_factory=list)


@dataclass(slots=True)
class Recovered:
    """What a store holds: the newest valid snapshot and the commits after it, in order."""

    snapshot: Snapshot | None
    commits: Iterable[Commit]
    notes: list[str] = field(default_factory=list)  # what recovery had to do (cut a tail...)


class Durability(StrEnum):
    """When an append counts as done."""

    # Each commit is on disk (fsync) before the call is answered; commits that arrive
    # while a write is in flight share the next write.
    SYNC = "sync"
    # As SYNC, but a write waits up to group_commit_window_ms to gather more commits.
    GROUP = "group"
    # Answered once written to the operating system, fsync once a second: an OS crash
    # or power loss can lose up to the last second of acknowledged writes.
    ASYNC_MAY_LOSE_1S = "async-may-lose-1s"


class StoreUnavailable(Exception):
    """The store cannot take writes now; the call fails with UNAVAILABLE, nothing applied."""


class ShuttingDown(StoreUnavailable):
    """The server is stopping; callers should retry elsewhere or later (UNAVAILABLE)."""


class StoreCorrupt(Exception):
    """The store holds data recovery must not guess about (not a torn tail)."""


class EventStore(abc.ABC):
    #: Whether `write_snapshot` works (the in-memory store has nothing to snapshot to).
    supports_snapshots = False

    @abc.abstractmethod
    async def open(self) -> Recovered:
        """Open (or reopen after a failure) and return what the store holds."""

    @abc.abstractmethod
    async def append(self, commit: Commit) -> None:
        """Make `commit` durable. Commits are durable in the order they are appended.
        Raises StoreUnavailable if it cannot; then every later pending append fails too."""

    def begin_snapshot(self, seq: int) -> None:
        """Start a new log segment: commits appended from now on all come after `seq`."""
        return None

    def forked(self) -> None:
        """In a child forked from the server (a snapshot's writer): let go of what only the
        server may hold (the file store's directory lock)."""
        return None

    def write_snapshot(self, seq: int, blob: bytes) -> None:
        """Write a snapshot (not yet visible). Synchronous: it runs in a forked child."""
        raise NotImplementedError

    async def publish_snapshot(self, seq: int) -> None:
        """Make the snapshot of `seq` the one recovery starts from; drop what it covers."""
        return None

    async def discard_snapshot(self, seq: int) -> None:
        """Throw away an unpublished snapshot."""
        return None

    async def history(self, from_seq: int, limit: int) -> list[Event]:
        """Up to `limit` logged events from `from_seq` on, in order, for a watcher behind
        the events the engine keeps in memory (after a restart, those after the
        snapshot): [] if the store no longer holds event `from_seq`. The caller asks for
        no more than is durable (the log may hold records written and not yet synced).
        The file and Redis stores keep the log from the snapshot before the newest on;
        raises StoreUnavailable when the store cannot be read just now."""
        return []

    async def put_journal(self, first: int, data: bytes) -> None:
        """Keep a segment of closed journal entries (those from entry `first` on), durably,
        before the books let them go. A segment written again replaces it (the same
        entries: a close that did not land is tried again). Raises StoreUnavailable."""
        raise StoreUnavailable("this store keeps no journal segments")

    async def get_journal(self, first: int) -> bytes:
        """The journal segment from entry `first` on. Raises StoreCorrupt if the store
        does not hold it, StoreUnavailable if it cannot be read just now."""
        raise StoreCorrupt(f"this store holds no journal segment {first}")

    @abc.abstractmethod
    async def close(self) -> None: ...


def events_from(commits: Iterable[Commit], from_seq: int, limit: int) -> list[Event]:
    """Up to `limit` events from `from_seq` on out of `commits` (in order); [] unless the
    first of them is event `from_seq` itself (else some were not held)."""
    found: list[Event] = []
    for commit in commits:
        if not commit.events or commit.last_seq < from_seq:
            continue
        for event in commit.events:
            if event.seq >= from_seq:
                if not found and event.seq != from_seq:
                    return []
                found.append(event)
        if len(found) >= limit:
            break
    return found[:limit]


class QueuedWriter:
    """For a store whose one writer task writes what `append` queues (file, Redis): its
    writer leaves once `_closing` is set and the queue is empty."""

    _writer: asyncio.Task[None] | None
    _wake: asyncio.Event
    _closing: bool

    async def _stop_writer(self) -> None:
        """Let the writer write what is queued (or fail it, if the store has failed), then
        leave: every commit taken is answered, and none lands once this returns (after it,
        a reopen, the engine's reload, reads the log). A write is never cut short: one
        cancelled midway went on in its thread, or lost its answer."""
        if self._writer is None:
            return
        self._closing = True
        self._wake.set()
        try:
            await self._writer
        except Exception as error:  # (a writer that died: what it held is refused below)
            logging.getLogger("allocd.store").error("the store's writer had stopped: %r",
                                                    error)
        finally:
            self._closing = False
        self._writer = None

    @staticmethod
    def _refuse_left(futures: Iterable[asyncio.Future[None]]) -> None:
        """Commits appended while the writer left: refused, never half-taken."""
        for future in futures:
            if not future.done():
                future.set_exception(StoreUnavailable("the store closed before this was "
                                                      "written"))


class MemoryEventStore(EventStore):
    """Keeps every commit in a list. Durable only as long as the process lives."""

    def __init__(self) -> None:
        self._commits: list[Commit] = []
        self._last_seqs: list[int] = []  # each commit's last event (0: none), ascending
        self._journal: dict[int, bytes] = {}

    async def open(self) -> Recovered:
        return Recovered(None, list(self._commits))

    async def append(self, commit: Commit) -> None:
        self._commits.append(commit)
        self._last_seqs.append(commit.last_seq or (self._last_seqs[-1] if self._last_seqs
                                                   else 0))

    async def put_journal(self, first: int, data: bytes) -> None:
        self._journal[first] = data

    async def get_journal(self, first: int) -> bytes:
        found = self._journal.get(first)
        if found is None:
            raise StoreCorrupt(f"the store holds no journal segment {first}")
        return found

    async def history(self, from_seq: int, limit: int) -> list[Event]:
        # (From the first commit that holds from_seq: a search, not a walk of them all.)
        first = bisect.bisect_left(self._last_seqs, from_seq)
        return events_from(itertools.islice(self._commits, first, None), from_seq, limit)

    async def close(self) -> None:
        return None
