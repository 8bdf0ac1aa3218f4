"""The ledger engine: single writer, durable before acknowledged, idempotent by request id.

All mutations run on the asyncio event loop as synchronous code (validate, plan,
apply) followed by one await for durability, so one partition has exactly one
writer and needs no locks. A retry with a request id already seen gets the first
answer back; the same id with a different request is refused.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import Message

from core.commands import Command, ExpireReservations
from core.errors import AlreadyExists, InvalidArgument
from core.ledger import Ledger, LedgerSettings
from core.model import Event
from core.operations import MAX_ID_LENGTH, Outcome, execute
from service.config import Settings
from service.store import Commit, EventStore, IdempotencyRecord, ShuttingDown

log = logging.getLogger("allocd.engine")

ResponseT = TypeVar("ResponseT", bound=Message)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class _Answer:
    fingerprint: bytes
    response: bytes | None  # None while the first call is still being made durable
    done: asyncio.Event


def fingerprint(method: str, request: Message) -> bytes:
    """Digest of the whole request. (It includes the request id, which is part of the
    idempotency key anyway, so equal keys with equal digests mean equal requests.)"""
    digest = hashlib.blake2b(method.encode(), digest_size=20)
    digest.update(request.SerializeToString(deterministic=True))
    return digest.digest()


def check_request_id(request_id: str) -> str:
    if not request_id:
        raise InvalidArgument("request_id is required for a mutating call", "request_id")
    if len(request_id) > MAX_ID_LENGTH:
        raise InvalidArgument(f"request_id is longer than {MAX_ID_LENGTH}", "request_id")
    if not request_id.isprintable():
        raise InvalidArgument("request_id contains control characters", "request_id")
    return request_id


class Engine:
    def __init__(self, settings: Settings, store: EventStore,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.ledger = Ledger(LedgerSettings(n_shards=settings.shards,
                                            count_hold_units=settings.count_hold_units,
                                            partition=settings.partition))
        self._answers: OrderedDict[tuple[str, str], _Answer] = OrderedDict()
        self._durable = asyncio.Condition()
        self.durable_seq = 0
        self._closing = False

    async def start(self) -> None:
        """Load what the store holds (replay)."""
        for commit in await self.store.open():
            self.ledger.apply(commit.events, replay=True)
            if commit.idempotency is not None:
                rec = commit.idempotency
                done = asyncio.Event()
                done.set()
                self._remember((rec.method, rec.request_id),
                               _Answer(rec.fingerprint, rec.response, done))
        self.durable_seq = self.ledger.last_seq

    def _remember(self, key: tuple[str, str], answer: _Answer) -> None:
        self._answers[key] = answer
        self._answers.move_to_end(key)
        while len(self._answers) > self.settings.idempotency_capacity:
            self._answers.popitem(last=False)

    async def mutate(self, method: str, request: Message,
                     build: Callable[[], Command],
                     respond: Callable[[Outcome], ResponseT]) -> ResponseT:
        """Run one mutating call: idempotency check, validate+apply, durable, answer."""
        request_id = check_request_id(request.request_id)  # type: ignore[attr-defined]
        key = (method, request_id)
        print_ = fingerprint(method, request)
        answer = self._answers.get(key)
        if answer is not None:
            if answer.fingerprint != print_:
                raise AlreadyExists(
                    f"request_id {request_id!r} was used for a different {method} request",
                    "request_id")
            await answer.done.wait()
            if answer.response is not None:
                return self._replayed(respond, answer.response)
            # The first attempt failed to become durable; this retry runs afresh.
        outcome = execute(self.ledger, build(), self.clock(), request_id)
        response = respond(outcome)
        answer = _Answer(print_, None, asyncio.Event())
        self._remember(key, answer)
        try:
            payload = response.SerializeToString()
            await self._commit(Commit(outcome.events,
                                      IdempotencyRecord(method, request_id, print_, payload)))
            answer.response = payload
        except BaseException:
            self._answers.pop(key, None)
            raise
        finally:
            answer.done.set()
        return response

    @staticmethod
    def _replayed(respond: Callable[[Outcome], ResponseT], payload: bytes) -> ResponseT:
        response = respond(Outcome(()))
        response.ParseFromString(payload)
        if response.HasField("result"):  # type: ignore[arg-type]
            response.result.replayed = True  # type: ignore[attr-defined]
        return response

    async def mutate_internal(self, command: Command, request_id: str) -> Outcome:
        """A mutation the server makes itself (the reservation sweep): no idempotency record."""
        outcome = execute(self.ledger, command, self.clock(), request_id)
        if outcome.events:
            await self._commit(Commit(outcome.events))
        return outcome

    async def _commit(self, commit: Commit) -> None:
        await self.store.append(commit)
        if commit.events:
            async with self._durable:
                self.durable_seq = max(self.durable_seq, commit.events[-1].seq)
                self._durable.notify_all()

    async def sweep_forever(self) -> None:
        """Release expired reservations every `sweep_interval_s`."""
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            try:
                outcome = await self.mutate_internal(
                    ExpireReservations(), f"sweep-{self.clock()}")
                if outcome.events:
                    log.info("expired %d reservations", len(outcome.detail.reservation_ids))
            except Exception:  # a failed sweep is retried at the next tick
                log.exception("reservation sweep failed")

    def _durable_from(self, seq: int) -> bool:
        return self._closing or self.durable_seq >= seq

    async def close_streams(self) -> None:
        """End every `follow` (at shutdown, so open watch streams do not hold it up)."""
        async with self._durable:
            self._closing = True
            self._durable.notify_all()

    async def follow(self, from_seq: int, batch: int = 512) -> AsyncIterator[list[Event]]:
        """Durable events from `from_seq` on, in order, waiting for new ones forever."""
        if from_seq < self.store.first_retained_seq:
            raise InvalidArgument(
                f"from_sequence {from_seq} is older than the retained log, which starts at "
                f"{self.store.first_retained_seq}", "from_sequence")
        next_seq = from_seq
        while True:
            if self._closing:
                raise ShuttingDown(
                    f"the server is shutting down; resume from sequence {next_seq}")
            events = list(self.store.read(next_seq, batch))
            events = [e for e in events if e.seq <= self.durable_seq]
            if events:
                next_seq = events[-1].seq + 1
                yield events
                continue
            async with self._durable:
                await self._durable.wait_for(functools.partial(self._durable_from, next_seq))

