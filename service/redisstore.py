"""The Redis store: the log in a Redis Stream, snapshots as binary chunks.

Keys carry the partition in a hash tag, so one partition's keys share a slot and
the same layout works on Redis Cluster:

    allocd:{<partition>}:log                 stream; entry id <last event seq>-0,
                                             field "c" = framed pickled Commit
    allocd:{<partition>}:snapshot            hash: seq, chunks (the published snapshot)
    allocd:{<partition>}:snapshot:<seq>:<i>  the snapshot's bytes, in 64 MiB chunks
    allocd:{<partition>}:journal:<first>     closed journal entries from entry <first>
                                             on (finance.encode_segment's bytes)

The log is one stream per partition, not per shard: a commit (an order's events
touch several shards) must be one atomic entry. Entry ids are the commit's last
event sequence, so Redis itself refuses a commit that does not follow the last
one. Acknowledged means Redis accepted the write; for no loss across a Redis
restart, run Redis with `appendonly yes` and `appendfsync always`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis
import redis.asyncio as aioredis

from core.model import Event
from service import logcodec
from service.store import (
    Commit,
    EventStore,
    QueuedWriter,
    Recovered,
    Snapshot,
    StoreCorrupt,
    StoreUnavailable,
)

log = logging.getLogger("allocd.store")

CHUNK = 64 << 20
READ_BATCH = 2000


class RedisEventStore(QueuedWriter, EventStore):
    supports_snapshots = True

    def __init__(self, url: str, partition: str = "default", timeout_s: float = 2.0,
                 read_only: bool = False) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.read_only = read_only  # (allocd verify: deletes nothing, not even strays)
        prefix = f"allocd:{{{partition}}}"
        self.log_key = f"{prefix}:log"
        self.snapshot_key = f"{prefix}:snapshot"
        self._chunk_prefix = f"{prefix}:snapshot:"
        self._journal_prefix = f"{prefix}:journal:"
        self._client: aioredis.Redis | None = None
        self._queue: list[tuple[Commit, bytes, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        self._closing = False  # the writer writes what is queued, then leaves
        self._id_seq = 0
        self._id_k = 0

    def _connect(self) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.url, socket_timeout=self.timeout_s,
                                       socket_connect_timeout=self.timeout_s)

    async def open(self) -> Recovered:
        await self.close()
        # Recovery moves hundreds of megabytes: its own connection, with a long timeout.
        reader = aioredis.Redis.from_url(self.url, socket_timeout=120,
                                         socket_connect_timeout=self.timeout_s)
        try:
            recovered = await self._recover(reader)
        except (redis.RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis at {self.url} is unreachable: {error}") from error
        finally:
            await reader.aclose()
        self._client = self._connect()
        if recovered.snapshot is not None and not self.read_only:
            await self._drop_unpublished(recovered.snapshot.seq)
        try:
            info = await self._client.xinfo_stream(self.log_key)
            last = info["last-generated-id"]
            last = last.decode() if isinstance(last, bytes) else str(last)
            self._id_seq, self._id_k = (int(x) for x in last.split("-"))
        except redis.ResponseError:  # no stream yet
            self._id_seq, self._id_k = 0, 0
        self._failed = None
        self._writer = asyncio.create_task(self._write_forever())
        return recovered

    async def _recover(self, client: aioredis.Redis) -> Recovered:
        notes: list[str] = []
        snapshot: Snapshot | None = None
        meta = await client.hgetall(self.snapshot_key)
        if meta:
            seq, chunks = int(meta[b"seq"]), int(meta[b"chunks"])
            parts = []
            for i in range(chunks):
                part = await client.get(self._chunk(seq, i))
                if not isinstance(part, bytes):
                    raise StoreCorrupt(f"snapshot {seq} is missing chunk {i}")
                parts.append(part)
            blob = b"".join(parts)
            parts.clear()  # hundreds of megabytes: do not hold them twice while unpickling
            try:
                snapshot, _ = logcodec.load_record(blob)
            except logcodec.CorruptRecord as error:
                raise StoreCorrupt(f"snapshot {seq}: {error}") from error
        after = snapshot.seq if snapshot else 0
        commits: list[Commit] = []
        expected = after + 1
        start = f"{after}-1"  # after the snapshot's last commit; answer-only entries too
        while True:
            entries = await client.xrange(self.log_key, min=start, max="+", count=READ_BATCH)
            if not entries:
                break
            for entry_id, fields in entries:
                record = (fields or {}).get(b"c")
                if not isinstance(record, bytes):
                    raise StoreCorrupt(f"log entry {entry_id!r} has no commit")
                try:
                    commit, _ = logcodec.load_record(record)
                except logcodec.CorruptRecord as error:
                    raise StoreCorrupt(f"log entry {entry_id!r}: {error}") from error
                if not isinstance(commit, Commit):
                    raise StoreCorrupt(f"log entry {entry_id!r} is not a commit")
                if not commit.events:
                    commits.append(commit)  # an answer to a call that changed nothing
                    continue
                if commit.last_seq < expected:
                    continue
                if commit.events[0].seq != expected:
                    raise StoreCorrupt(f"gap in the log: expected event {expected}, found "
                                       f"{commit.events[0].seq}")
                expected = commit.last_seq + 1
                commits.append(commit)
            last_id = entries[-1][0]
            start = "(" + (last_id.decode() if isinstance(last_id, bytes) else str(last_id))
        return Recovered(snapshot, commits, notes)

    async def _drop_unpublished(self, published: int) -> None:
        """Delete the chunks of snapshots older than the one published that were never
        published themselves (a server stopped while a checkpoint was being written):
        each is a whole snapshot's size, and nothing else would ever read or delete it. A
        newer one is left alone: it may be one being written now."""
        assert self._client is not None
        stray: list[str] = []
        try:
            async for key in self._client.scan_iter(match=f"{self._chunk_prefix}*",
                                                    count=1000):
                name = key.decode() if isinstance(key, bytes) else str(key)
                seq = name[len(self._chunk_prefix):].split(":", 1)[0]
                if seq.isdigit() and int(seq) < published:
                    stray.append(name)
            for start in range(0, len(stray), 500):
                await self._client.delete(*stray[start:start + 500])
        except (redis.RedisError, OSError) as error:  # only memory is at stake: go on
            log.warning("could not drop unpublished snapshots: %s", error)
            return
        if stray:
            log.warning("dropped %d chunks of snapshots never published", len(stray))

    def _chunk(self, seq: int, index: int | str) -> str:
        return f"{self._chunk_prefix}{seq}:{index}"

    async def append(self, commit: Commit) -> None:
        if self._failed is not None or self._writer is None:
            raise StoreUnavailable(f"Redis cannot be written: {self._failed}")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((commit, logcodec.frame(logcodec.dumps(commit)), future))
        self._wake.set()
        await future

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            if batch:
                await self._write_batch(batch)
            if self._closing and not self._queue:
                return

    async def _write_batch(self, batch: list[tuple[Commit, bytes, asyncio.Future[None]]],
                           ) -> None:
        assert self._client is not None
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for commit, record, _ in batch:
                    pipe.xadd(self.log_key, {"c": record}, id=self._next_id(commit))
                await pipe.execute()
        except (redis.RedisError, OSError) as error:
            self._fail(error, batch)
            return
        for _, _, future in batch:
            if not future.done():
                future.set_result(None)

    def _next_id(self, commit: Commit) -> str:
        """<last event seq>-0 for a commit with events; a commit without (an answer only)
        takes the next sub-id after the last one, so ids always increase."""
        if commit.events:
            self._id_seq, self._id_k = commit.last_seq, 0
        else:
            self._id_k += 1
        return f"{self._id_seq}-{self._id_k}"

    def _fail(self, error: BaseException,
              batch: list[tuple[Commit, bytes, asyncio.Future[None]]]) -> None:
        self._failed = error
        log.error("Redis write failed: %s", error)
        queued, self._queue = self._queue, []
        for _, _, future in [*batch, *queued]:
            if not future.done():
                future.set_exception(StoreUnavailable(f"Redis write failed: {error}"))

    # ---- snapshots ----------------------------------------------------------------
    def write_snapshot(self, seq: int, blob: bytes) -> None:
        """Runs in the forked child: its own synchronous connection."""
        data = logcodec.frame(blob)
        client = redis.Redis.from_url(self.url, socket_timeout=30)
        try:
            pipe = client.pipeline(transaction=False)
            chunks = 0
            for index, start in enumerate(range(0, len(data), CHUNK)):
                pipe.set(self._chunk(seq, index), data[start:start + CHUNK])
                chunks = index + 1
            pipe.set(self._chunk(seq, "count"), chunks)
            pipe.execute()
        finally:
            client.close()

    async def publish_snapshot(self, seq: int) -> None:
        assert self._client is not None
        chunks = int(await self._client.get(self._chunk(seq, "count")) or 0)
        old = await self._client.hgetall(self.snapshot_key)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hset(self.snapshot_key, mapping={"seq": seq, "chunks": chunks})
            pipe.delete(self._chunk(seq, "count"))
            if old:
                # What the snapshot before covered; the events since, though this one
                # covers them, stay for watchers resuming from before it (history).
                pipe.xtrim(self.log_key, minid=f"{int(old[b'seq'])}-1", approximate=False)
            await pipe.execute()
        if old:
            old_seq, old_chunks = int(old[b"seq"]), int(old[b"chunks"])
            if old_seq != seq:
                await self._client.delete(*(self._chunk(old_seq, i) for i in range(old_chunks)))
        await self._drop_unpublished(seq)

    async def history(self, from_seq: int, limit: int) -> list[Event]:
        """Raises StoreUnavailable while the store is not open or Redis does not answer:
        [] would tell the watcher its place is gone for good."""
        if self._client is None:
            raise StoreUnavailable("the Redis store is reconnecting; resume shortly")
        try:
            return await self._history(self._client, from_seq, limit)
        except (redis.RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis: {error}") from error

    async def put_journal(self, first: int, data: bytes) -> None:
        if self._client is None or self.read_only:
            raise StoreUnavailable("the Redis store is not open for writes")
        try:
            await self._client.set(f"{self._journal_prefix}{first}", data)
        except (redis.RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis: {error}") from error

    async def get_journal(self, first: int) -> bytes:
        if self._client is None:
            raise StoreUnavailable("the Redis store is reconnecting; resume shortly")
        try:
            data = await self._client.get(f"{self._journal_prefix}{first}")
        except (redis.RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis: {error}") from error
        if not isinstance(data, bytes):
            raise StoreCorrupt(f"Redis holds no journal segment {first}")
        return data

    async def _history(self, client: aioredis.Redis, from_seq: int,
                       limit: int) -> list[Event]:
        found: list[Event] = []
        start = f"{from_seq}-0"  # (an entry's id is its commit's last event)
        while len(found) < limit:
            entries = await client.xrange(self.log_key, min=start, max="+",
                                          count=min(READ_BATCH, limit - len(found) + 1))
            if not entries:
                break
            for _, fields in entries:
                record = (fields or {}).get(b"c")
                if not isinstance(record, bytes):
                    continue
                commit, _ = logcodec.load_record(record)
                for event in commit.events if isinstance(commit, Commit) else ():
                    if event.seq < from_seq:
                        continue
                    if event.seq != (found[-1].seq + 1 if found else from_seq):
                        return found  # (the log does not hold event from_seq, or a gap)
                    found.append(event)
                if len(found) >= limit:
                    return found[:limit]
            last_id = entries[-1][0]
            start = "(" + (last_id.decode() if isinstance(last_id, bytes) else str(last_id))
        return found

    async def discard_snapshot(self, seq: int) -> None:
        if self._client is None:
            return
        with contextlib.suppress(redis.RedisError, OSError):
            chunks = int(await self._client.get(self._chunk(seq, "count")) or 0)
            await self._client.delete(self._chunk(seq, "count"),
                                      *(self._chunk(seq, i) for i in range(chunks)))

    async def close(self) -> None:
        """Stop writing, once what was queued is written (QueuedWriter): a pipeline
        cancelled midway lost its call's answer."""
        await self._stop_writer()
        left, self._queue = self._queue, []
        self._refuse_left(future for _, _, future in left)
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None

