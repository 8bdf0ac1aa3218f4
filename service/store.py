"""Where acknowledged changes live. A mutating call replies only after `append` returns.

`EventStore` is the interface; `MemoryEventStore` keeps everything in process
memory (nothing survives a restart). The durable stores (embedded file log with
snapshots, Redis Streams) implement the same interface.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from core.model import Event


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The first answer to a request id, so a retry after a restart gets it too."""

    method: str
    request_id: str
    fingerprint: bytes
    response: bytes


@dataclass(frozen=True, slots=True)
class Commit:
    """What one mutating call writes: its events and the answer it gave."""

    events: tuple[Event, ...]
    idempotency: IdempotencyRecord | None = None


class StoreUnavailable(Exception):
    """The store cannot take writes now; the call fails with UNAVAILABLE, nothing applied."""


class ShuttingDown(StoreUnavailable):
    """The server is stopping; callers should retry elsewhere or later (UNAVAILABLE)."""


class EventStore(abc.ABC):
    @abc.abstractmethod
    async def open(self) -> list[Commit]:
        """Open the store and return what it holds, oldest first, for replay."""

    @abc.abstractmethod
    async def append(self, commit: Commit) -> None:
        """Make `commit` durable. Commits are durable in the order they are appended."""

    @abc.abstractmethod
    def read(self, from_seq: int, limit: int) -> Sequence[Event]:
        """Durable events with sequence >= from_seq, at most `limit`, oldest first."""

    @property
    @abc.abstractmethod
    def first_retained_seq(self) -> int:
        """The oldest sequence number `read` can still return."""

    @abc.abstractmethod
    async def close(self) -> None: ...


class MemoryEventStore(EventStore):
    """Keeps every event in a list. Durable only as long as the process lives."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._commits: list[Commit] = []

    async def open(self) -> list[Commit]:
        return list(self._commits)

    async def append(self, commit: Commit) -> None:
        if commit.events:
            expected = (self._events[-1].seq + 1) if self._events else commit.events[0].seq
            if commit.events[0].seq != expected:
                raise StoreUnavailable(
                    f"out-of-order commit: {commit.events[0].seq} after {expected - 1}")
        self._events.extend(commit.events)
        self._commits.append(commit)

    def read(self, from_seq: int, limit: int) -> Sequence[Event]:
        if not self._events:
            return ()
        start = max(from_seq - self._events[0].seq, 0)
        return self._events[start : start + limit]

    @property
    def first_retained_seq(self) -> int:
        return self._events[0].seq if self._events else 1

    async def close(self) -> None:
        return None
