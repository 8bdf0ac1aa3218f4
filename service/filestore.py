"""The embedded default store: an append-only log on local disk plus snapshots.

Layout of `<data_dir>/<partition>/`:

    wal-<first seq>.log      log segments: framed records (length, crc32, pickled Commit)
    snapshot-<seq>.bin       a framed pickled Snapshot, written to .tmp then renamed
    journal/<first>.seg      closed journal entries from entry <first> on
                             (finance.encode_segment's bytes), .tmp then renamed
    LOCK                     locked (flock) by the one server writing here; its pid

One writer task owns the log: commits that arrive while a write (and its fsync) is
in flight go out together in the next write (group commit). A snapshot starts a
new segment; once the snapshot is published, the segments before the previous
snapshot's are deleted: the events between the two stay, for watchers that resume
from before the newest snapshot (history), and recovery does not read them.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fcntl
import logging
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.model import Event
from service import logcodec
from service.store import (
    Commit,
    Durability,
    EventStore,
    QueuedWriter,
    Recovered,
    Snapshot,
    StoreCorrupt,
    StoreUnavailable,
)

log = logging.getLogger("allocd.store")

_MARK_EVERY = 64  # history marks where one record in this many starts
_END = 1 << 62  # (sorts after any offset)

_SEGMENT = re.compile(r"^wal-(\d{20})\.log$")
_SNAPSHOT = re.compile(r"^snapshot-(\d{20})\.bin$")


@dataclass(frozen=True, slots=True)
class _Rotate:
    """Queue marker: start a new segment here; every later commit is >= first_seq."""

    first_seq: int


def _is_final_record(data: bytes, offset: int) -> bool:
    """Whether the record at `offset` is the file's last: its header is cut short, its
    length runs past the end, or it ends exactly at the end. Only such a record can be an
    unfinished write; a bad record with data after it is corruption."""
    if offset + logcodec.HEADER_SIZE > len(data):
        return True
    length = int.from_bytes(data[offset:offset + 4], "little")
    return offset + logcodec.HEADER_SIZE + length >= len(data)


def _segment_name(first_seq: int) -> str:
    return f"wal-{first_seq:020d}.log"


def _snapshot_name(seq: int, suffix: str = "bin") -> str:
    return f"snapshot-{seq:020d}.{suffix}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileEventStore(QueuedWriter, EventStore):
    supports_snapshots = True

    def __init__(self, directory: str | Path, durability: Durability = Durability.SYNC,
                 group_window_ms: float = 2.0, group_max_commits: int = 1000) -> None:
        self.directory = Path(directory)
        self.durability = durability
        self.group_window_s = group_window_ms / 1000
        self.group_max = max(1, group_max_commits)
        self._queue: list[object] = []  # (record, future) pairs and _Rotate markers
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._syncer: asyncio.Task[None] | None = None
        self._file: int | None = None  # fd of the current segment
        self._failed: BaseException | None = None
        self._dirty = False
        self._closing = False  # the writer writes what is queued, then leaves
        self._lock: int | None = None  # fd of <directory>/LOCK, held while open
        self._history_pool: ThreadPoolExecutor | None = None
        # Segment name -> (first event, byte offset) of some of its records, ascending.
        self._marks: dict[str, list[tuple[int, int]]] = {}

    # ---- recovery -----------------------------------------------------------------
    async def open(self) -> Recovered:
        await self.close()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_directory(self.directory)
        try:
            recovered = await asyncio.to_thread(self._recover)
        except BaseException:
            self._unlock()
            raise
        self._failed = None
        self._writer = asyncio.create_task(self._write_forever())
        if self.durability == Durability.ASYNC_MAY_LOSE_1S:
            self._syncer = asyncio.create_task(self._sync_every_second())
        return recovered

    def _recover(self) -> Recovered:
        notes: list[str] = []
        for stale in self.directory.glob("snapshot-*.tmp"):
            stale.unlink()
        snapshot = self._newest_snapshot(notes)
        after = snapshot.seq if snapshot else 0
        self._check_covered(after)
        commits = list(self._read_log(after, notes, repair=True))
        last = commits[-1].last_seq if commits else after
        segments = self._segments()
        # Keep appending to the newest segment; a new store starts one.
        path = segments[-1][1] if segments else self.directory / _segment_name(last + 1)
        self._file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        _fsync_dir(self.directory)
        return Recovered(snapshot, commits, notes)

    def _check_covered(self, after: int) -> None:
        """Refuse to start from a snapshot (or from nothing) that leaves a hole before the
        log: publishing a snapshot deletes the segments it covers, so if it cannot be
        read, starting without it would serve a ledger missing everything it held."""
        segments = self._segments()
        snapshots = [p.name for p in self.directory.iterdir() if _SNAPSHOT.match(p.name)]
        first = segments[0][0] if segments else None
        if (first is not None and first > after + 1) or (first is None and snapshots
                                                          and not after):
            raise StoreCorrupt(
                f"no readable snapshot covers the events before "
                f"{first if first is not None else 'the snapshots'} (snapshots: "
                f"{', '.join(sorted(snapshots)) or 'none'}; read from event {after}): "
                "refusing to start without them")

    def _segments(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.directory.iterdir():
            match = _SEGMENT.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def _newest_snapshot(self, notes: list[str]) -> Snapshot | None:
        candidates = sorted(
            ((int(m.group(1)), p) for p in self.directory.iterdir()
             if (m := _SNAPSHOT.match(p.name))), reverse=True)
        for seq, path in candidates:
            try:
                snapshot, _ = logcodec.load_record(path.read_bytes())
            except (logcodec.CorruptRecord, Exception) as error:
                notes.append(f"skipped snapshot {path.name}: {error}")
                log.error("skipped snapshot %s: %s", path.name, error)
                continue
            if not isinstance(snapshot, Snapshot) or snapshot.seq != seq:
                notes.append(f"skipped snapshot {path.name}: not a snapshot of {seq}")
                continue
            return snapshot
        return None

    def _read_log(self, after: int, notes: list[str], repair: bool) -> Iterator[Commit]:
        """Commits after `after`, in order. A torn last record of the last segment (an
        unfinished write) is cut off when `repair`, and reported either way."""
        segments = self._segments()
        expected = after + 1
        for index, (_, path) in enumerate(segments):
            if index + 1 < len(segments) and segments[index + 1][0] <= expected:
                continue  # every event of it is covered (kept for watchers: history)
            data = path.read_bytes()
            offset = 0
            while offset < len(data):
                try:
                    commit, following = logcodec.load_record(data, offset)
                except (logcodec.CorruptRecord, Exception) as error:
                    if index != len(segments) - 1 or not _is_final_record(data, offset):
                        raise StoreCorrupt(
                            f"{path.name}: bad record at byte {offset} ({error}) with data "
                            "after it: not an unfinished write; refusing to guess what was "
                            "lost") from error
                    following = logcodec.record_follows(data, offset)
                    if following >= 0:
                        raise StoreCorrupt(
                            f"{path.name}: bad record at byte {offset} ({error}), and a "
                            f"whole record at byte {following} after it: not an unfinished "
                            "write; refusing to guess what was lost") from error
                    verb = "cut the log" if repair else "the log would be cut:"
                    message = (f"{verb} {path.name} at byte {offset} of {len(data)}: "
                               f"{error}; {len(data) - offset} bytes of an unfinished write "
                               "dropped")
                    log.warning("%s", message)
                    notes.append(message)
                    if repair:
                        with open(path, "r+b") as fh:
                            fh.truncate(offset)
                            fh.flush()
                            os.fsync(fh.fileno())
                    break
                offset = following
                if not isinstance(commit, Commit):
                    raise StoreCorrupt(f"{path.name}: record at byte {offset} is not a commit")
                if not commit.events:
                    yield commit  # an answer to a call that changed nothing
                    continue
                if commit.last_seq < expected:
                    if commit.last_seq <= after:
                        continue  # covered by the snapshot
                    # (Two writers on one directory, each numbering its own events.)
                    raise StoreCorrupt(f"{path.name}: event {commit.events[0].seq} is logged "
                                       "twice: refusing to choose which one holds")
                if commit.events[0].seq != expected:
                    raise StoreCorrupt(f"{path.name}: gap in the log: expected event "
                                       f"{expected}, found {commit.events[0].seq}")
                expected = commit.last_seq + 1
                yield commit

    # ---- appending ----------------------------------------------------------------
    async def append(self, commit: Commit) -> None:
        if self._failed is not None or self._writer is None:
            raise StoreUnavailable(f"the log cannot be written: {self._failed}")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((logcodec.frame(logcodec.dumps(commit)), future))
        self._wake.set()
        await future

    def begin_snapshot(self, seq: int) -> None:
        self._queue.append(_Rotate(seq + 1))
        self._wake.set()

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if (self.durability == Durability.GROUP and self.group_window_s > 0
                    and not self._closing):
                await asyncio.sleep(self.group_window_s)
            batch = self._queue[: self.group_max]
            del self._queue[: self.group_max]
            if self._queue:
                self._wake.set()  # more than one write's worth: go round again
            if batch:
                await self._write_batch(batch)
            if self._closing and not self._queue:
                return

    async def _write_batch(self, batch: list[object]) -> None:
        chunk: list[tuple[bytes, asyncio.Future[None]]] = []
        for item in batch:
            if isinstance(item, _Rotate):
                if chunk:
                    await self._flush(chunk)
                    chunk = []
                if self._failed is None:
                    try:
                        await asyncio.to_thread(self._rotate, item.first_seq)
                    except OSError as error:
                        self._fail(error, [])
            else:
                chunk.append(item)  # type: ignore[arg-type]
        if chunk:
            await self._flush(chunk)

    async def _flush(self, chunk: list[tuple[bytes, asyncio.Future[None]]]) -> None:
        if self._failed is not None:
            self._fail(self._failed, chunk)
            return
        data = b"".join(record for record, _ in chunk)
        sync = self.durability != Durability.ASYNC_MAY_LOSE_1S
        try:
            await asyncio.to_thread(self._write, data, sync)
        except OSError as error:
            self._fail(error, chunk)
            return
        for _, future in chunk:
            if not future.done():
                future.set_result(None)

    def _write(self, data: bytes, sync: bool) -> None:
        assert self._file is not None
        start = os.lseek(self._file, 0, os.SEEK_END)
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._file, view)
                view = view[written:]
            if sync:
                os.fsync(self._file)
            else:
                self._dirty = True
        except OSError:
            # Nothing of a failed write may stay: its calls are answered UNAVAILABLE
            # (nothing applied), and a reload reads back every whole record in the log
            # (a disk that filled part-way through the write, or an fsync that failed).
            try:
                os.ftruncate(self._file, start)
                os.fsync(self._file)
            except OSError as cut:
                log.error("a failed write could not be cut from the log (%s): a reload "
                          "reads back what of it was written", cut)
            raise

    def _fail(self, error: BaseException,
              chunk: list[tuple[bytes, asyncio.Future[None]]]) -> None:
        """A failed write fails it and everything queued after it: the engine reloads."""
        self._failed = error
        log.error("log write failed: %s", error)
        queued: list[tuple[bytes, asyncio.Future[None]]] = [
            i for i in self._queue if not isinstance(i, _Rotate)]  # type: ignore[misc]
        self._queue = []
        for _, future in [*chunk, *queued]:
            if not future.done():
                future.set_exception(StoreUnavailable(f"the log write failed: {error}"))

    def _rotate(self, first_seq: int) -> None:
        if self._file is not None:
            os.fsync(self._file)
            os.close(self._file)
        path = self.directory / _segment_name(first_seq)
        self._file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        _fsync_dir(self.directory)

    async def _sync_every_second(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self._dirty and self._file is not None and self._failed is None:
                self._dirty = False
                try:
                    await asyncio.to_thread(os.fsync, self._file)
                except OSError as error:  # acknowledged writes may be lost: say so, stop
                    self._fail(error, [])

    # ---- snapshots ----------------------------------------------------------------
    def write_snapshot(self, seq: int, blob: bytes) -> None:
        path = self.directory / _snapshot_name(seq, "tmp")
        with open(path, "wb") as fh:
            fh.write(logcodec.frame(blob))
            fh.flush()
            os.fsync(fh.fileno())

    async def publish_snapshot(self, seq: int) -> None:
        await asyncio.to_thread(self._publish, seq)

    def _publish(self, seq: int) -> None:
        tmp = self.directory / _snapshot_name(seq, "tmp")
        final = self.directory / _snapshot_name(seq)
        os.replace(tmp, final)
        _fsync_dir(self.directory)
        previous = 0  # the snapshot before this one's
        for path in self.directory.iterdir():
            match = _SNAPSHOT.match(path.name)
            if match and int(match.group(1)) < seq:
                previous = max(previous, int(match.group(1)))
                path.unlink()
        # Segments that hold only events the snapshot before covered: every one before
        # the segment that snapshot started (its first event is previous + 1 or later).
        # The events since, though this snapshot covers them, stay for watchers that
        # resume from before it (history).
        for first, path in self._segments():
            if first <= previous:
                path.unlink()
        _fsync_dir(self.directory)

    async def discard_snapshot(self, seq: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.directory / _snapshot_name(seq, "tmp")).unlink()

    # ---- closed journal entries -----------------------------------------------------
    def _journal_path(self, first: int, suffix: str = "seg") -> Path:
        return self.directory / "journal" / f"{first:020d}.{suffix}"

    async def put_journal(self, first: int, data: bytes) -> None:
        try:
            await asyncio.to_thread(self._put_journal, first, data)
        except OSError as error:
            raise StoreUnavailable(f"journal segment {first} could not be written: "
                                   f"{error}") from error

    def _put_journal(self, first: int, data: bytes) -> None:
        folder = self.directory / "journal"
        if not folder.is_dir():
            folder.mkdir(exist_ok=True)
            _fsync_dir(self.directory)
        tmp = self._journal_path(first, "tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._journal_path(first))
        _fsync_dir(folder)

    async def get_journal(self, first: int) -> bytes:
        return await asyncio.to_thread(self._get_journal, self.directory, first)

    @staticmethod
    def _get_journal(directory: Path, first: int) -> bytes:
        path = directory / "journal" / f"{first:020d}.seg"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise StoreCorrupt(f"the store holds no journal segment {first}") from None
        except OSError as error:
            raise StoreUnavailable(f"journal segment {first} could not be read: "
                                   f"{error}") from error

    async def history(self, from_seq: int, limit: int) -> list[Event]:
        """In a thread of its own (one: watchers' reads queue behind each other, never
        ahead of the log's writes, which use the loop's pool)."""
        if self._history_pool is None:
            self._history_pool = ThreadPoolExecutor(1, thread_name_prefix="allocd-history")
        return await asyncio.get_running_loop().run_in_executor(
            self._history_pool, self._history, from_seq, limit)

    def _history(self, from_seq: int, limit: int) -> list[Event]:
        """Read from the segment holding event `from_seq` on, as far as the events run
        on without a gap, up to `limit` (the caller asks for no more than is durable: the
        last segment may hold records written and not yet synced). A record not (yet)
        whole ends the reading. Where a record starts is marked as it is passed (one in
        _MARK_EVERY), so that a watcher reading on starts near where it left off, not at
        the top of the segment."""
        segments = self._segments()
        names = {path.name for _, path in segments}
        for name in [n for n in self._marks if n not in names]:  # (deleted segments)
            del self._marks[name]
        start = 0
        for i, (first, _) in enumerate(segments):
            if first <= from_seq:
                start = i
        found: list[Event] = []
        for _, path in segments[start:]:
            want = found[-1].seq + 1 if found else from_seq
            marks = self._marks.setdefault(path.name, [])
            at = bisect.bisect_right(marks, (want, _END)) - 1
            offset = marks[at][1] if at >= 0 else 0
            try:
                with open(path, "rb") as fh:
                    if self._read_on(fh, offset, marks, from_seq, limit, found):
                        return found[:limit]
            except FileNotFoundError:  # (deleted by a snapshot meanwhile)
                return found
        return found

    @staticmethod
    def _read_on(fh: Any, offset: int, marks: list[tuple[int, int]], from_seq: int,
                 limit: int, found: list[Event]) -> bool:
        """Add to `found` the events of the segment from `offset` on, marking where some
        records start; True once no more are to be read (the limit reached, a gap, or a
        record not whole), False at the segment's end."""
        fh.seek(offset)
        passed = 0
        while True:
            header = fh.read(logcodec.HEADER_SIZE)
            if len(header) < logcodec.HEADER_SIZE:
                return bool(header)  # (the end; a part of a header: being written)
            length = int.from_bytes(header[:4], "little")
            if length > logcodec.MAX_RECORD:
                return True
            payload = fh.read(length)
            if len(payload) < length:
                return True  # (being written)
            try:
                commit, _ = logcodec.load_record(header + payload)
            except Exception:  # (torn, or being written: no further)
                return True
            if not isinstance(commit, Commit):
                return True
            if commit.events and commit.last_seq < from_seq + limit:
                # (Only records the caller holds durable: a failed write's are cut off
                # the log, and what is written after them starts where they did.)
                first_seq = commit.events[0].seq
                if passed % _MARK_EVERY == 0 and (not marks or marks[-1][0] < first_seq):
                    marks.append((first_seq, offset))
                passed += 1
            offset += logcodec.HEADER_SIZE + length
            if commit.last_seq < from_seq:
                continue
            for event in commit.events:
                if event.seq < from_seq:
                    continue
                if event.seq != (found[-1].seq + 1 if found else from_seq):
                    return True  # (the store does not hold from_seq, or a gap)
                found.append(event)
            if len(found) >= limit:
                return True

    async def close(self) -> None:
        """Stop writing, once what was queued is written (QueuedWriter): a write cut
        mid-record by a cancel went on in its thread and landed after a reload had cut the
        log there, in the middle of later records."""
        if self._syncer is not None:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
        await self._stop_writer()
        self._syncer = None
        left, self._queue = self._queue, []
        self._refuse_left(item[1] for item in left  # type: ignore[index]
                          if not isinstance(item, _Rotate))
        if self._file is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._file)
                os.close(self._file)
            self._file = None
        if self._history_pool is not None:
            self._history_pool.shutdown(wait=False)  # (a read under way ends on its own)
            self._history_pool = None
        self._unlock()

    def forked(self) -> None:
        """The child's copy of the lock's descriptor, closed: the lock (the open file's, not
        a descriptor's) then goes with the server's own, not with whichever of the two
        lives longer (a reload while a snapshot was being written found it taken)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _unlock(self) -> None:
        """Released explicitly, then closed: a snapshot writer forked a moment ago shares the
        open file (and its lock) until it lets go of its copy (forked), and a reload in
        that moment found the directory "in use by another allocd" (itself)."""
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            os.close(self._lock)
            self._lock = None


def _lock_directory(directory: Path) -> int:
    """An exclusive lock on the store's directory, held until the store closes: a second
    server on the same directory would number its events apart from the first's, and a
    restart would keep one writer's acknowledged changes and drop the other's."""
    fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreUnavailable(f"{directory} is in use by another allocd (process "
                               f"{holder}): one store has one writer") from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def load_for_verify(directory: str | Path) -> tuple[Recovered, float]:
    """Read a store without opening it for writes (allocd verify); returns the time taken."""
    started = time.perf_counter()
    store = FileEventStore(directory)
    notes: list[str] = []
    snapshot = store._newest_snapshot(notes)
    store._check_covered(snapshot.seq if snapshot else 0)
    commits = list(store._read_log(snapshot.seq if snapshot else 0, notes, repair=False))
    return Recovered(snapshot, commits, notes), time.perf_counter() - started
