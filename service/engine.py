"""The ledger engine: single writer, durable before acknowledged, idempotent by request id.

All mutations run on the asyncio event loop as synchronous code (validate, plan,
apply) followed by one await for durability, so one partition has exactly one
writer and needs no locks. A retry with a request id already seen gets the first
answer back; the same id with a different request is refused.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from google.protobuf.message import Message

from core.commands import ArchiveOrders, CloseJournal, Command, ExpireReservations
from core.errors import AlreadyExists, ApplyFailed, DomainError, InvalidArgument
from core.finance import JournalEntry, decode_segment, encode_segment, segment_digest
from core.ledger import Ledger, LedgerSettings
from core.model import Event
from core.operations import Outcome, execute, without_collections
from core.validation import check_identifier
from service.audit import AuditLog
from service.config import Settings
from service.logcodec import dumps
from service.store import (
    Commit,
    EventStore,
    IdempotencyRecord,
    ShuttingDown,
    Snapshot,
    StoreCorrupt,
    StoreUnavailable,
)

#: Journal entries closed into one store segment at most (~0.4 MiB compressed; written and
#: read in a thread, ~50-150 ms of work a segment, so that calls run meanwhile).
JOURNAL_SEGMENT_ENTRIES = 10_000

log = logging.getLogger("allocd.engine")

# (bytes: a response already written as its message's bytes; see Engine.mutate)
ResponseT = TypeVar("ResponseT", bound=Message | bytes)

#: Joined commands run between probes (a command of one or two calls that waits for
#: company): at first, and at most (each probe that finds none doubles the gap).
PROBE_EVERY = 4
PROBE_EVERY_MAX = 256


def ledger_settings(s: Settings) -> LedgerSettings:
    """The ledger a server with these settings starts from (its shard layout is part of
    the state's checksum)."""
    return LedgerSettings(n_shards=s.shards, count_hold_units=s.count_hold_units,
                          count_hold_percent=s.count_hold_percent, partition=s.partition,
                          write_off_approval_micros=s.write_off_approval_micros)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class _Answer:
    """A call's answer, kept for its request id (up to `idempotency_capacity` of them).
    Settled once the call is durable or has failed; a retry that comes before then
    waits for it. (The waiting is made only when a retry needs it: an asyncio.Event
    for each would hold ~0.85 KB, 170 MB for a full table.)"""

    fingerprint: bytes
    response: bytes | None  # the answer (set before it is durable)
    durable: bool = False
    settled: bool = False
    waiters: list[asyncio.Future[None]] | None = None

    def settle(self) -> None:
        self.settled = True
        waiters, self.waiters = self.waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        """Until the call is settled."""
        if self.settled:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.waiters is None:
            self.waiters = []
        self.waiters.append(waiter)
        await waiter


def _done_answer(record: IdempotencyRecord) -> _Answer:
    return _Answer(record.fingerprint, record.response, durable=True, settled=True)


class Joiner(Protocol):
    """How calls of one kind are answered together: the parts of the calls that arrived
    in the same turn of the event loop make one command, whose outcome is split back
    into each call's own share."""

    name: str  # what its calls are, for the metrics (unary, stream)
    limit: int  # calls per command, at most
    window_ms: float  # under load, how long calls may wait for company, at most

    def combine(self, parts: list[Any], request_ids: list[str]) -> Command: ...

    def share(self, outcome: Outcome, index: int) -> Outcome:
        """The `index`-th call's part of `outcome`; raises the DomainError that refused
        that call (nothing of it was recorded)."""
        ...


@dataclass(slots=True)
class _Joined:
    key: tuple[str, str]
    answer: _Answer
    part: Any
    respond: Callable[[Outcome], Message | bytes]
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _JoinPace:
    """How one kind of joined call comes (Engine._schedule_joined). Once `probe_every`
    commands have run since the last probe, the next command of one or two calls waits
    for company (a probe, so that a growing load is noticed); a probe that found none
    doubles the gap (one caller at a time is not kept waiting again and again), one that
    found some brings it back. Kept apart for each joiner: a probe is judged by the next
    command of its own kind."""

    size: int = 0  # calls in this kind's last joined command
    probe_every: int = PROBE_EVERY
    since_probe: int = 0  # this kind's joined commands since its last probe
    probe_from: int = 0  # calls queued when the pending probe began; 0: none pending
    first_at: float = 0.0  # loop time the waiting calls began to wait
    last_at: float = 0.0  # loop time the last of them was queued


def fingerprint(method: str, request: Message) -> bytes:
    """Digest of the whole request. (It includes the request id, which is part of the
    idempotency key anyway, so equal keys with equal digests mean equal requests.)"""
    return fingerprint_of(method, request.SerializeToString(deterministic=True))


def fingerprint_of(method: str, deterministic: bytes) -> bytes:
    """`fingerprint` of the request whose deterministic serialization is given (for a
    caller that has it already)."""
    digest = hashlib.blake2b(method.encode(), digest_size=20)
    digest.update(deterministic)
    return digest.digest()


def check_request_id(request_id: str) -> str:
    return check_identifier(request_id, "request_id")


def _read_segment(data: bytes, first: int, digest: str) -> list[JournalEntry]:
    """A closed journal segment's entries, if it is the one closed (its digest)."""
    if segment_digest(data) != digest:
        raise StoreCorrupt(f"journal segment {first} is not the one closed")
    try:
        return decode_segment(data)
    except ValueError as error:
        raise StoreCorrupt(f"journal segment {first}: {error}") from error


class Engine:
    def __init__(self, settings: Settings, store: EventStore,
                 clock: Callable[[], int] = wall_clock_ms,
                 audit_path: Path | None = None) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.ledger = self._new_ledger()
        self._answers: OrderedDict[tuple[str, str], _Answer] = OrderedDict()
        self._durable = asyncio.Condition()
        self.durable_seq = 0
        self._closing = False
        # Recent durable events for watchers: _recent[i] has sequence _recent_first + i.
        self._recent: list[Event] = []
        self._recent_first = 1
        self._early: dict[int, tuple[Event, ...]] = {}  # durable out of order, waiting
        self.broken = ""  # why writes are refused until the state is reloaded
        self._reload_task: asyncio.Task[None] | None = None
        self.snapshot_seq = 0
        self.snapshot_time = time.monotonic()
        self.snapshot_took_s = 0.0  # the last attempt's time, fork to published (or not)
        self.snapshot_rest_until = 0.0  # (monotonic) none due before, but checkpoint_max_events
        self.recovery_notes: list[str] = []
        self.last_fork_pause_ms = 0.0
        self.generation = 0  # bumped by every store failure
        self.audit = AuditLog(audit_path)
        self._joining: dict[Joiner, list[_Joined]] = {}
        self._join_timers: dict[Joiner, asyncio.Handle] = {}
        # How busy the server is, whatever kind of call: the loop time of the last joined
        # command, and the seconds it took.
        self._joined_at = -1e9
        self._joined_took = 0.0
        # How each kind's callers come (a few in step, or many): see _JoinPace.
        self._pace: dict[Joiner, _JoinPace] = {}
        self.joined_calls = 0  # calls answered through joined commands, and the commands
        self.joined_commands = 0
        self.joined_waits = 0  # joined commands whose calls waited for company
        # The same three counts by joiner (Joiner.name): [calls, commands, waits].
        self.joined_by: dict[str, list[int]] = {}
        # Orders allocated because a command's units served their backorders
        # (Outcome.filled), since the server started.
        self.backorders_filled = 0
        self._journal_closing = asyncio.Lock()  # one close at a time
        # Closed journal segments read back lately: (first, last, digest) -> entries.
        self._segments: dict[tuple[int, int, str], list[JournalEntry]] = {}

    def _new_ledger(self) -> Ledger:
        return Ledger(ledger_settings(self.settings))

    async def start(self) -> None:
        """Load what the store holds: the newest snapshot, then the commits after it."""
        recovered = await self.store.open()
        ledger = self._new_ledger()
        answers: OrderedDict[tuple[str, str], _Answer] = OrderedDict()
        if recovered.snapshot is not None:
            ledger = recovered.snapshot.ledger
            for record in recovered.snapshot.answers:
                answers[(record.method, record.request_id)] = _done_answer(record)
        replayed: list[Event] = []
        for commit in recovered.commits:
            ledger.apply(commit.events, replay=True)
            replayed.extend(commit.events)
            for record in commit.answers:
                answers[(record.method, record.request_id)] = _done_answer(record)
        self.ledger = ledger
        self._answers = answers
        self._trim_answers()
        self.durable_seq = ledger.last_seq
        self._early.clear()
        keep = replayed[-self.settings.watch_buffer_events:]
        self._recent = keep
        self._recent_first = keep[0].seq if keep else ledger.last_seq + 1
        self.snapshot_seq = recovered.snapshot.seq if recovered.snapshot else 0
        self.snapshot_time = time.monotonic()
        self.recovery_notes = recovered.notes
        self.broken = ""

    def _trim_answers(self) -> None:
        # Oldest first; an answer still in flight is never forgotten (a retry of it must
        # wait for it, not run again).
        while len(self._answers) > self.settings.idempotency_capacity:
            oldest = next(iter(self._answers.values()))
            if not oldest.settled:
                break
            self._answers.popitem(last=False)

    def _remember(self, key: tuple[str, str], answer: _Answer) -> None:
        self._answers[key] = answer
        self._answers.move_to_end(key)
        self._trim_answers()

    def _writable(self) -> None:
        if self.broken:
            raise StoreUnavailable(f"writes are paused: {self.broken}")

    async def mutate(self, method: str, request: Message,
                     build: Callable[[], Command],
                     respond: Callable[[Outcome], ResponseT]) -> ResponseT:
        """Run one mutating call: idempotency check, validate+apply, durable, answer.

        `respond` may give the response already written as bytes (the server sends bytes
        as they are: see service.server.Routes); given an outcome without events or
        detail (to read a replayed answer into), it must give the message."""
        key, print_, replayed = await self._earlier(method, request, respond)
        if replayed is not None:
            return replayed
        self._writable()
        outcome = self._execute(build, key[1])
        try:
            response = respond(outcome)
            payload = response if isinstance(response, bytes) else response.SerializeToString()
        except BaseException as error:
            # The ledger has this call's events but they cannot be answered or recorded:
            # reload from the store (which does not have them) before anything else runs.
            if outcome.events:
                self._break(f"a change could not be answered: {error!r}")
            raise
        answer = _Answer(print_, payload)
        self._remember(key, answer)
        commit = Commit(outcome.events, IdempotencyRecord(method, key[1], print_, payload))
        # Shielded: once applied, a change is made durable and its answer recorded even if
        # the caller goes away (a cancelled call must not leave a change without its answer).
        await asyncio.shield(asyncio.ensure_future(self._settle(key, answer, commit)))
        return response

    def _execute(self, build: Callable[[], Command], request_id: str) -> Outcome:
        """`execute` the command built. A refusal (DomainError) changed nothing, nor did an
        error in planning it; one that struck while its events were being applied
        (ApplyFailed) may have left some applied, so the state is reloaded from the store
        (which has none of them) before anything else runs."""
        try:
            # (Reading the call into a command too: a collection then walks it all alive.)
            outcome = without_collections(
                lambda: execute(self.ledger, build(), self.clock(), request_id))
        except ApplyFailed as error:
            self._break(str(error))
            raise
        self.backorders_filled += len(outcome.filled)
        return outcome

    async def _earlier(self, method: str, request: Message,
                       respond: Callable[[Outcome], ResponseT],
                       ) -> tuple[tuple[str, str], bytes, ResponseT | None]:
        """The call's idempotency key and fingerprint, and the answer of an earlier durable
        call with its request id (waiting for one still in flight), if there is one."""
        request_id = check_request_id(request.request_id)  # type: ignore[attr-defined]
        key = (method, request_id)
        print_ = fingerprint(method, request)
        answer = self._answers.get(key)
        if answer is not None:
            if answer.fingerprint != print_:
                raise AlreadyExists(
                    f"request_id {request_id!r} was used for a different {method} request",
                    "request_id")
            await answer.wait()
            if answer.durable and answer.response is not None:
                return key, print_, self._replayed(respond, answer.response)
            # The first attempt failed to become durable; this retry runs afresh.
        return key, print_, None

    async def mutate_joined(self, method: str, request: Message, part: Callable[[], Any],
                            respond: Callable[[Outcome], ResponseT],
                            joiner: Joiner) -> ResponseT:
        """`mutate` for calls that may be answered together: the calls that arrive in the
        same turn of the event loop are validated, decided and applied as one command
        (`joiner` combines them) and made durable in one commit holding every answer.
        Each call still gets its own answer, its own events and its own refusal; when
        the joined command fails as a whole, each call runs again alone, so only the
        one at fault is refused."""
        key, print_, replayed = await self._earlier(method, request, respond)
        if replayed is not None:
            return replayed
        # Shielded: the joined command answers and records this call even if the caller
        # goes away.
        return cast(ResponseT, await asyncio.shield(
            self._join(key, print_, part, respond, joiner)))

    def submit_joined(self, method: str, request: Message, part: Callable[[], Any],
                      respond: Callable[[Outcome], Message | bytes],
                      joiner: Joiner, deterministic: bytes | None = None,
                      ) -> asyncio.Future[Any] | None:
        """`mutate_joined` without a coroutine, for callers that queue many calls in a row
        (a stream): the call is queued now and its answer comes in the future returned.
        None when a call with this request id is known already: then `mutate_joined`,
        which waits for that call's answer, must be used. The call is answered and
        recorded even if the future is cancelled. `deterministic`, if given, is the
        request's deterministic serialization (its fingerprint is taken from it)."""
        key = (method, check_request_id(request.request_id))  # type: ignore[attr-defined]
        if key in self._answers:
            return None
        print_ = (fingerprint(method, request) if deterministic is None
                  else fingerprint_of(method, deterministic))
        return self._join(key, print_, part, respond, joiner)

    def _join(self, key: tuple[str, str], print_: bytes, part: Callable[[], Any],
              respond: Callable[[Outcome], Message | bytes],
              joiner: Joiner) -> asyncio.Future[Any]:
        """Queue a call for the next joined command; its answer comes in the future."""
        self._writable()
        value = part()  # a refusal here queues nothing
        answer = _Answer(print_, None)
        self._remember(key, answer)  # a retry arriving meanwhile waits for this call
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        queue = self._joining.setdefault(joiner, [])
        queue.append(_Joined(key, answer, value, respond, future))
        self._schedule_joined(loop, joiner, len(queue))
        return future

    def _schedule_joined(self, loop: asyncio.AbstractEventLoop, joiner: Joiner,
                         queued: int) -> None:
        """When the queued calls run. At once when the server is idle (no joined command
        within the window) or the queue is full. At once, too, when the last joined
        command had at most two calls and as many are queued again (a few callers in
        step are not kept waiting for others), except for a probe now and then, which
        waits so that a growing load is noticed: once four commands have run since the
        last probe, and twice as many after each probe that found no company (at most
        256; one that found some, or a command of more than two calls, brings it back to
        four). Otherwise they wait for company while it comes: until no call has joined
        them for the quiet time (_quiet), at most the window (_joined_due)."""
        window = max(joiner.window_ms, 0.0) / 1000
        timer = self._join_timers.get(joiner)
        now = loop.time()
        pace = self._pace.get(joiner)
        if pace is None:
            pace = self._pace[joiner] = _JoinPace()
        few = queued >= pace.size and pace.size <= 2
        at_once = queued >= joiner.limit or window == 0 or (
            timer is None and now - self._joined_at > window) or (
            few and pace.since_probe < pace.probe_every)
        if at_once:
            if timer is not None:
                timer.cancel()
            self._join_timers[joiner] = loop.call_soon(self._run_joined, joiner)
        elif timer is None:
            pace.first_at = pace.last_at = now
            self._join_timers[joiner] = loop.call_later(min(self._quiet(), window),
                                                        self._joined_due, joiner)
            pace.probe_from = queued if few else 0
            self.joined_waits += 1
            self._joined_counts(joiner)[2] += 1
        else:
            pace.last_at = now

    def _quiet(self) -> float:
        """How long waiting calls wait for the next to join them, in seconds: join_quiet_ms,
        or twice what the last joined command took to run if longer (a busy server,
        whose commands grow, waits longer and decides more calls together)."""
        return max(self.settings.join_quiet_ms / 1000, 2 * self._joined_took, 0.0)

    def _joined_due(self, joiner: Joiner) -> None:
        """The waiting calls' timer: they run now unless a call joined them within the quiet
        time (_quiet) and the window is not up, in which case the timer is set again.
        (Timers fire only when the loop is free: while calls keep arriving, the loop is
        busy receiving them and they join; once it has been quiet that long, the burst is
        over.)"""
        loop = asyncio.get_running_loop()
        pace = self._pace[joiner]
        window = max(joiner.window_ms, 0.0) / 1000
        due = min(pace.last_at + self._quiet(), pace.first_at + window)
        if due > loop.time():
            self._join_timers[joiner] = loop.call_at(due, self._joined_due, joiner)
            return
        self._run_joined(joiner)

    def _run_joined(self, joiner: Joiner) -> None:
        self._join_timers.pop(joiner, None)
        self._joined_at = asyncio.get_running_loop().time()
        calls = self._joining.pop(joiner, [])
        pace = self._pace.get(joiner)
        if pace is None:
            pace = self._pace[joiner] = _JoinPace()
        pace.size = len(calls)
        pace.since_probe += 1
        if pace.probe_from:  # a probe: did company come?
            pace.probe_every = (PROBE_EVERY if len(calls) > pace.probe_from
                                else min(2 * pace.probe_every, PROBE_EVERY_MAX))
            pace.since_probe = pace.probe_from = 0
        elif len(calls) > 2:  # busy: probe every fourth again once it calms down
            pace.probe_every = PROBE_EVERY
        started = time.perf_counter()
        try:
            for start in range(0, len(calls), joiner.limit):
                self._run_together(joiner, calls[start:start + joiner.limit])
            self._joined_took = time.perf_counter() - started
        except BaseException as error:  # never leave a caller waiting
            for joined in calls:
                if not joined.future.done():
                    self._refuse(joined, error)
            raise

    def _run_together(self, joiner: Joiner, calls: list[_Joined]) -> None:
        try:
            self._writable()
            outcome = self._execute(
                lambda: joiner.combine([j.part for j in calls], [j.key[1] for j in calls]),
                calls[0].key[1])
        except Exception as error:
            if self.broken:  # not a refusal: the state is being reloaded
                for joined in calls:
                    self._refuse(joined, error)
                return
            if len(calls) > 1:  # nothing changed: run each alone, refusing only the culprit
                for joined in calls:
                    self._run_together(joiner, [joined])
                return
            self._refuse(calls[0], error)
            return
        answered: list[tuple[_Joined, Message | bytes]] = []
        records: list[IdempotencyRecord] = []
        for index, joined in enumerate(calls):
            try:
                share = joiner.share(outcome, index)
            except DomainError as error:  # this call's order was refused: nothing recorded
                self._refuse(joined, error)
                continue
            try:
                response = joined.respond(share)
                payload = (response if isinstance(response, bytes)
                           else response.SerializeToString())
            except Exception as error:
                # Applied but not answerable: reload from the store, which lacks it.
                if outcome.events:
                    self._break(f"a change could not be answered: {error!r}")
                for later in calls[index:]:
                    self._refuse(later, error)
                for earlier, _ in answered:
                    self._refuse(earlier, error)
                return
            joined.answer.response = payload
            records.append(IdempotencyRecord(joined.key[0], joined.key[1],
                                             joined.answer.fingerprint, payload))
            answered.append((joined, response))
        self.joined_calls += len(calls)
        self.joined_commands += 1
        counts = self._joined_counts(joiner)
        counts[0] += len(calls)
        counts[1] += 1
        if not answered and not outcome.events:
            return
        commit = Commit(outcome.events, tuple(records))
        asyncio.get_running_loop().create_task(self._settle_joined(answered, commit))

    def _joined_counts(self, joiner: Joiner) -> list[int]:
        counts = self.joined_by.get(joiner.name)
        if counts is None:
            counts = self.joined_by[joiner.name] = [0, 0, 0]
        return counts

    def _refuse(self, joined: _Joined, error: BaseException) -> None:
        if self._answers.get(joined.key) is joined.answer:
            del self._answers[joined.key]
        joined.answer.settle()
        if not joined.future.done():
            joined.future.set_exception(error)

    async def _settle_joined(self, answered: list[tuple[_Joined, Message | bytes]],
                             commit: Commit) -> None:
        try:
            await self._commit(commit)
        except BaseException as error:
            for joined, _ in answered:
                self._refuse(joined, error)
            return
        for joined, response in answered:
            joined.answer.durable = True
            joined.answer.settle()
            if not joined.future.done():
                joined.future.set_result(response)

    async def _settle(self, key: tuple[str, str], answer: _Answer, commit: Commit) -> None:
        try:
            await self._commit(commit)
            answer.durable = True
        except BaseException:
            self._answers.pop(key, None)
            raise
        finally:
            answer.settle()

    def recorded(self, method: str, request: Message,
                  respond: Callable[[Outcome], ResponseT]) -> ResponseT | None:
        """The stored answer to an earlier durable call with this request id, if any (for
        calls that do long work before they mutate, such as Reoptimize)."""
        key = (method, check_request_id(request.request_id))  # type: ignore[attr-defined]
        answer = self._answers.get(key)
        if answer is None or not answer.durable or answer.response is None:
            return None
        if answer.fingerprint != fingerprint(method, request):
            raise AlreadyExists(
                f"request_id {key[1]!r} was used for a different {method} request",
                "request_id")
        return self._replayed(respond, answer.response)

    @staticmethod
    def _replayed(respond: Callable[[Outcome], ResponseT], payload: bytes) -> ResponseT:
        response = respond(Outcome(()))
        assert isinstance(response, Message)  # (an empty outcome is answered as a message)
        response.ParseFromString(payload)
        if response.HasField("result"):  # type: ignore[arg-type]
            response.result.replayed = True  # type: ignore[attr-defined]
        return response

    async def mutate_internal(self, command: Command, request_id: str) -> Outcome:
        """A mutation the server makes itself (the reservation sweep): no idempotency record."""
        self._writable()
        outcome = self._execute(lambda: command, request_id)
        if outcome.events:
            await asyncio.shield(asyncio.ensure_future(self._commit(Commit(outcome.events))))
        return outcome

    async def _commit(self, commit: Commit) -> None:
        try:
            await self.store.append(commit)
        except Exception as error:
            # The ledger holds this commit (and maybe later ones) but the store does not:
            # refuse writes and rebuild the state from the store, which is the truth.
            self._break(f"the store failed: {error}")
            raise StoreUnavailable(f"the store could not record the change: {error}") from None
        if commit.events:
            await self._publish(commit.events)

    async def _publish(self, events: tuple[Event, ...]) -> None:
        """Make durable events visible to watchers, in sequence order."""
        self._early[events[0].seq] = events
        async with self._durable:
            while (ready := self._early.pop(self.durable_seq + 1, None)) is not None:
                self._recent.extend(ready)
                self.durable_seq = ready[-1].seq
            limit = self.settings.watch_buffer_events
            if len(self._recent) > 2 * limit:
                drop = len(self._recent) - limit
                del self._recent[:drop]
                self._recent_first += drop
            self._durable.notify_all()

    def _break(self, reason: str) -> None:
        self.generation += 1  # anything started before this (a snapshot) is void
        if not self.broken:
            self.broken = reason
            log.error("writes paused: %s; reloading from the store", reason)
        asyncio.get_running_loop().create_task(self._wake_waiters())
        if self._reload_task is None or self._reload_task.done():
            self._reload_task = asyncio.create_task(self._reload_until_done())

    async def _wake_waiters(self) -> None:
        async with self._durable:
            self._durable.notify_all()

    async def _reload_until_done(self) -> None:
        """Rebuild the state from the store (it lost nothing acknowledged), retrying until
        the store answers; writes resume once it has."""
        delay = 0.2
        while True:
            await asyncio.sleep(delay)
            try:
                await self.start()
            except Exception as error:  # the store is still away: try again
                log.warning("reload from the store failed: %s", error)
                delay = min(delay * 2, 5.0)
                continue
            log.info("state reloaded from the store at event %d; writes resume",
                     self.ledger.last_seq)
            return

    # ---- checkpoints -------------------------------------------------------------------
    def checkpoint_due(self) -> bool:
        """A snapshot is due once `checkpoint_every_events` events or `checkpoint_every_s`
        seconds have passed since the last one, and the rest after the last attempt has:
        `checkpoint_rest_factor` times as long as that took, published or not. Whatever
        the rest, once the log has grown by `checkpoint_max_events` (a restart replays it;
        never fewer than `checkpoint_every_events`)."""
        s = self.settings
        if not self.store.supports_snapshots or self.broken:
            return False
        behind = self.durable_seq - self.snapshot_seq
        if behind <= 0:
            return False
        if behind >= max(s.checkpoint_max_events, s.checkpoint_every_events):
            return True
        now = time.monotonic()
        if now < self.snapshot_rest_until:
            return False
        return (behind >= s.checkpoint_every_events
                or now - self.snapshot_time >= s.checkpoint_every_s)

    async def checkpoint(self) -> bool:
        """Snapshot the state without pausing requests: a forked child writes the
        copy-on-write image of the moment; the snapshot is published once every event
        it holds is durable. Returns whether it was published."""
        seq = self.ledger.last_seq
        generation = self.generation
        self.store.begin_snapshot(seq)
        forked = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the child writes the image as of the fork, then leaves at once
            # No collections in the child: it lives only to write the image, and a
            # collection would walk (and so copy) every page of the parent's objects and
            # run finalizers of objects that are the parent's business.
            gc.disable()
            self.store.forked()
            # Below the server in the scheduler's eyes: where the cores are shared (the
            # load harness's clients run beside it), the server's loop keeps its share
            # and the image is written with what is left; an idle core runs it at once.
            os.nice(self.settings.snapshot_nice)
            code = 1
            try:
                # The remembered answers, as of the fork, go in too, those of calls still
                # in flight with them: their events are in the image, and the snapshot is
                # published only once those are durable. Listed here, in the child: with
                # the table full (idempotency_capacity, 200,000) listing them took the
                # server's loop ~0.2 s, a pause every call in flight waited out.
                answers = [IdempotencyRecord(m, r, a.fingerprint, a.response)
                           for (m, r), a in self._answers.items() if a.response is not None]
                self.store.write_snapshot(seq, dumps(Snapshot(seq, self.ledger, answers)))
                code = 0
            finally:
                os._exit(code)
        # The only pause request handling sees: copying the page tables.
        self.last_fork_pause_ms = (time.perf_counter() - forked) * 1000
        _, status = await asyncio.to_thread(os.waitpid, pid, 0)
        async with self._durable:
            await self._durable.wait_for(
                lambda: self.durable_seq >= seq or self.generation != generation)
        # The rest after it, published or not: a snapshot that keeps failing (a full disk)
        # is not retried back to back either.
        self.snapshot_took_s = time.perf_counter() - forked
        self.snapshot_rest_until = (time.monotonic()
                                    + self.settings.checkpoint_rest_factor * self.snapshot_took_s)
        if status != 0 or self.generation != generation:
            await self.store.discard_snapshot(seq)
            log.error("snapshot of event %d not published (child status %d%s)", seq, status,
                      f"; {self.broken}" if self.broken else "")
            return False
        await self.store.publish_snapshot(seq)
        self.snapshot_seq = seq
        self.snapshot_time = time.monotonic()
        log.info("snapshot of event %d published", seq)
        return True

    async def checkpoint_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.checkpoint_due():
                try:
                    await self.checkpoint()
                except Exception:  # retried at the next tick
                    log.exception("snapshot failed")

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

    async def audit_sync_forever(self) -> None:
        """Sync the audit log's file every `audit_sync_interval_s` (0: only as it
        closes), in a thread (a sync waits for the disk)."""
        interval = self.settings.audit_sync_interval_s
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.audit.sync)

    @staticmethod
    async def _every(interval: float, job: Callable[[], Awaitable[object]],
                     failed: str) -> None:
        """Run `job` every `interval` seconds (0: never); a run that fails is logged as
        `failed`, and the next tick tries again."""
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except Exception:
                log.exception(failed)

    async def archive_forever(self) -> None:
        """Archive the orders past their retention every `archive_interval_s` (0: never)."""
        await self._every(self.settings.archive_interval_s, self.archive_due,
                          "archiving orders failed")

    async def archive_due(self, limit: int = 10_000) -> int:
        """Archive every order past its retention, `limit` to a command (other calls run
        between them). Returns how many were archived."""
        archived = 0
        while True:
            outcome = await self.mutate_internal(
                ArchiveOrders(self.settings.order_retention_days, limit),
                f"archive-{self.clock()}")
            found = len(outcome.detail.order_ids)
            archived += found
            if found < limit:
                if archived:
                    log.info("archived %d closed orders", archived)
                return archived

    async def close_journal_forever(self) -> None:
        """Close the journal entries past their retention into the store every
        `journal_close_interval_s` (0: never)."""
        await self._every(self.settings.journal_close_interval_s, self.close_journal_due,
                          "closing journal entries failed")

    async def close_journal_due(self, limit: int = JOURNAL_SEGMENT_ENTRIES) -> int:
        """Close every journal entry posted more than `journal_retention_days` ago, in
        segments of up to `limit` entries: each is written to the store first, then the
        books let its entries go (JOURNAL_CLOSED). Returns how many were closed."""
        closed = 0
        async with self._journal_closing:
            while True:
                before_ms = self.clock() - round(self.settings.journal_retention_days
                                                 * 86_400_000)
                entries = self.ledger.books.closable(before_ms, limit)
                if not entries:
                    break
                data = await asyncio.to_thread(encode_segment, entries)
                first, last = entries[0], entries[-1]
                await self.store.put_journal(first.number, data)
                await self.mutate_internal(
                    CloseJournal(first.number, last.number, last.hash, segment_digest(data)),
                    f"journal-{first.number}-{last.number}")
                closed += len(entries)
                if len(entries) < limit:
                    break
        if closed:
            log.info("closed %d journal entries into the store", closed)
        return closed

    async def journal_segment(self, first: int) -> list[JournalEntry]:
        """The closed entries of the segment from entry `first` on, read from the store
        (the last few read are kept) and checked against the digest the books hold."""
        books = self.ledger.books
        found = books.segment_of(first)
        if found is None or found[0] != first:
            raise InvalidArgument(f"no closed journal segment starts at {first}", "number")
        cached = self._segments.get(found)
        if cached is not None:
            return cached
        data = await self.store.get_journal(first)
        entries = await asyncio.to_thread(_read_segment, data, first, found[2])
        if len(self._segments) >= 8:
            self._segments.pop(next(iter(self._segments)))
        self._segments[found] = entries
        return entries

    def _durable_from(self, seq: int) -> bool:
        return self._closing or self.durable_seq >= seq

    async def close_streams(self) -> None:
        """End every `follow` (at shutdown, so open watch streams do not hold it up)."""
        async with self._durable:
            self._closing = True
            self._durable.notify_all()

    async def follow(self, from_seq: int, batch: int = 512) -> AsyncIterator[list[Event]]:
        """Durable events from `from_seq` on, in order, waiting for new ones forever."""
        next_seq = from_seq
        while True:
            if self._closing:
                raise ShuttingDown(
                    f"the server is shutting down; resume from sequence {next_seq}")
            if next_seq < self._recent_first:
                # Behind the events kept in memory (after a restart: those since the
                # snapshot): read from the log, while the store holds it.
                first = self._recent_first
                older = await self.store.history(next_seq, min(first - next_seq, 16 * batch))
                older = [e for e in older if e.seq < first]
                if not older:
                    raise InvalidArgument(
                        f"from_sequence {next_seq} is older than the events kept for "
                        f"watchers, which start at {self._recent_first}", "from_sequence")
                for i in range(0, len(older), batch):
                    yield older[i:i + batch]
                next_seq = older[-1].seq + 1
                continue
            start = next_seq - self._recent_first
            events = self._recent[start:start + batch]
            if events:
                next_seq = events[-1].seq + 1
                yield events
                continue
            async with self._durable:
                await self._durable.wait_for(functools.partial(self._durable_from, next_seq))
