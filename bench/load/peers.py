"""The same orders reserved the way users would do it without allocd.

PostgreSQL: one transaction per order; each line's stock rows are locked with
SELECT ... FOR UPDATE (lines in SKU order, a SKU's rows in node order: without the
ORDER BY a scan meets rows in heap order, which updates change, and two orders deadlock),
the first node in the region's order with enough stock takes the line, the stock
rows are decremented and an allocation row is inserted per line; an order some line of
which cannot be served is rolled back whole.

Redis: one Lua script per order (atomic in Redis), the same first-fit rule across the
lines' nodes, decrementing the stock hash and recording the allocation; the client sends
many scripts in one pipeline.

After a run, `check` reads the final stock back: no cell may be negative and, per cell,
the opening stock less the final stock must equal the units recorded as allocated, and
their sum the units the answers acknowledged. Any difference is an oversell.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.load.workload import Catalogue, OrderBlock, WorkloadSpec, blocks_for, build_catalogue

OK = "OK"


class _Rejected(Exception):
    """Some line of the order has no node with enough stock."""


def _first_fit(order: np.ndarray, have: dict[int, int], quantity: int) -> int:
    for node in order.tolist():
        if have.get(node, 0) >= quantity:
            return int(node)
    return -1


class OrderFeed:
    """This process's share of the order stream (the blocks the allocd client gets)."""

    def __init__(self, catalogue: Catalogue, part: int, parts: int, prefix: str = "") -> None:
        self.blocks = blocks_for(catalogue, part, parts)
        self.prefix = prefix
        self.block: OrderBlock | None = None
        self.i = 0

    def next(self) -> tuple[OrderBlock, int]:
        if self.block is None or self.i >= len(self.block):
            self.block, self.i = next(self.blocks), 0
        self.i += 1
        return self.block, self.i - 1


# ---- PostgreSQL ----------------------------------------------------------------------


@dataclass(frozen=True)
class PgPeer:
    """Tables of its own, in a schema of its own, in the database `dsn` names."""

    dsn: str
    schema: str

    def setup(self, catalogue: Catalogue) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
            conn.execute(f"CREATE SCHEMA {self.schema}")
            conn.execute(f"CREATE TABLE {self.schema}.stock (sku integer, node integer, "
                         "qty integer NOT NULL, PRIMARY KEY (sku, node))")
            conn.execute(f"CREATE TABLE {self.schema}.opening (sku integer, node integer, "
                         "qty integer NOT NULL, PRIMARY KEY (sku, node))")
            conn.execute(f"CREATE TABLE {self.schema}.allocation (order_id text, line integer, "
                         "sku integer NOT NULL, node integer NOT NULL, qty integer NOT NULL, "
                         "PRIMARY KEY (order_id, line))")
            skus, nodes = np.nonzero(catalogue.stock)
            for table in ("stock", "opening"):
                with conn.cursor().copy(
                        f"COPY {self.schema}.{table} (sku, node, qty) FROM STDIN") as copy:
                    for s, n in zip(skus.tolist(), nodes.tolist(), strict=True):
                        copy.write_row((s, n, int(catalogue.stock[s, n])))
            conn.execute(f"ANALYZE {self.schema}.stock")

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")

    def check(self, acknowledged_units: int) -> dict[str, Any]:
        import psycopg

        s = self.schema
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            negative = conn.execute(f"SELECT count(*) FROM {s}.stock WHERE qty < 0").fetchone()
            not_conserved = conn.execute(
                f"SELECT count(*) FROM {s}.opening o JOIN {s}.stock f USING (sku, node) "
                f"LEFT JOIN (SELECT sku, node, sum(qty) AS units FROM {s}.allocation "
                "GROUP BY sku, node) a USING (sku, node) "
                "WHERE o.qty - f.qty <> coalesce(a.units, 0)").fetchone()
            allocated = conn.execute(
                f"SELECT coalesce(sum(qty), 0) FROM {s}.allocation").fetchone()
            taken = conn.execute(
                f"SELECT (SELECT sum(qty) FROM {s}.opening) - (SELECT sum(qty) FROM {s}.stock)"
            ).fetchone()
        assert negative and not_conserved and allocated and taken
        mismatch = abs(int(allocated[0]) - acknowledged_units)
        return {"negative_cells": int(negative[0]), "cells_not_conserved": int(not_conserved[0]),
                "allocated_units": int(allocated[0]), "acknowledged_units": acknowledged_units,
                "units_unaccounted": mismatch,
                "oversells": int(negative[0]) + int(not_conserved[0]) + mismatch,
                "units_taken": int(taken[0])}

    def backend_pids(self) -> list[int]:
        from bench.load.resources import pids_named

        return pids_named("postgres")


@dataclass
class PgTarget:
    peer: PgPeer
    spec: WorkloadSpec
    part: int
    parts: int
    connections: int
    prefix: str = ""

    async def open(self) -> None:
        import psycopg

        self.catalogue = build_catalogue(self.spec)
        self.feed = OrderFeed(self.catalogue, self.part, self.parts, self.prefix)
        self.pool: asyncio.Queue[Any] = asyncio.Queue()
        for _ in range(max(1, self.connections)):
            conn = await psycopg.AsyncConnection.connect(self.peer.dsn)
            self.pool.put_nowait(conn)
        s = self.peer.schema
        self.lock_sql = f"SELECT node, qty FROM {s}.stock WHERE sku = %s ORDER BY node FOR UPDATE"
        self.take_sql = f"UPDATE {s}.stock SET qty = qty - %s WHERE sku = %s AND node = %s"
        self.record_sql = (f"INSERT INTO {s}.allocation (order_id, line, sku, node, qty) "
                           "VALUES (%s, %s, %s, %s, %s)")
        self.counts: dict[str, int] = {"filled": 0, "unfilled": 0, "units": 0}

    async def call(self) -> tuple[str, int]:
        import psycopg

        block, i = self.feed.next()
        order_id = self.feed.prefix + block.order_id(i)
        node_order = self.catalogue.node_order[int(block.region[i])]
        lines = sorted(block.lines(i))
        conn = await self.pool.get()
        try:
            try:
                async with conn.transaction():
                    chosen = []
                    for line, (sku, quantity) in enumerate(lines):
                        cursor = await conn.execute(self.lock_sql, (sku,))
                        have = dict(await cursor.fetchall())
                        node = _first_fit(node_order, have, quantity)
                        if node < 0:
                            raise _Rejected
                        chosen.append((line, sku, node, quantity))
                    async with conn.cursor() as cursor:
                        await cursor.executemany(self.take_sql, [
                            (q, sku, node) for _, sku, node, q in chosen])
                        await cursor.executemany(self.record_sql, [
                            (order_id, line, sku, node, q) for line, sku, node, q in chosen])
            except _Rejected:
                self.counts["unfilled"] += 1
                return OK, 1
            except psycopg.errors.DeadlockDetected:
                return "DEADLOCK", 0
            except psycopg.Error as error:
                return type(error).__name__, 0
        finally:
            self.pool.put_nowait(conn)
        self.counts["filled"] += 1
        self.counts["units"] += sum(q for *_, q in chosen)
        return OK, 1

    async def close(self) -> None:
        while not self.pool.empty():
            await self.pool.get_nowait().close()

    def outcome(self) -> dict[str, int]:
        return dict(self.counts)


@dataclass(frozen=True)
class PgFactory:
    peer: PgPeer
    spec: WorkloadSpec
    connections: int  # per client process
    prefix: str = ""

    def __call__(self, part: int, parts: int) -> PgTarget:
        return PgTarget(self.peer, self.spec, part, parts, self.connections, self.prefix)


# ---- Redis ---------------------------------------------------------------------------

#: KEYS: the stock hash of each line, the allocation hash of each line, the order list.
#: ARGV: line count, order id, the nodes in first-fit order (comma-separated), quantities.
RESERVE_LUA = """
local n = tonumber(ARGV[1])
local nodes = {}
for node in string.gmatch(ARGV[3], '[^,]+') do nodes[#nodes + 1] = node end
local chosen = {}
for i = 1, n do
  local q = tonumber(ARGV[3 + i])
  local have = redis.call('HMGET', KEYS[i], unpack(nodes))
  for j = 1, #nodes do
    if have[j] and tonumber(have[j]) >= q then chosen[i] = nodes[j] break end
  end
  if not chosen[i] then return 0 end
end
for i = 1, n do
  local q = tonumber(ARGV[3 + i])
  redis.call('HINCRBY', KEYS[i], chosen[i], -q)
  redis.call('HINCRBY', KEYS[n + i], chosen[i], q)
end
redis.call('RPUSH', KEYS[2 * n + 1], ARGV[2] .. '@' .. table.concat(chosen, ','))
return 1
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis_server(binary: str, port: int, directory: str, fsync: str = "always",
                       timeout_s: float = 20.0) -> tuple[subprocess.Popen[bytes], bool]:
    """redis-server on 127.0.0.1:`port`, snapshots off, the append-only file synced per
    `fsync` ("always", "everysec", or "off" for none); waits until it answers PING.
    Returns the process and whether it answered (if not, it is left to the caller)."""
    import redis

    aof = ("--appendonly", "no") if fsync == "off" else (
        "--appendonly", "yes", "--appendfsync", fsync)
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *aof,
         "--dir", directory, "--protected-mode", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_timeout=1)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                client.ping()
                return process, True
            except redis.RedisError:
                if time.monotonic() > deadline or process.poll() is not None:
                    return process, False
                time.sleep(0.05)
    finally:
        client.close()


class RedisServer:
    """A redis-server of the harness's own on a free loopback port; `fsync` is its
    appendfsync policy (always: acknowledged writes survive a crash, like the others)."""

    def __init__(self, fsync: str = "always") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.directory = tempfile.TemporaryDirectory(prefix="allocd-load-redis-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process, answered = start_redis_server(binary, self.port, self.directory.name,
                                                    fsync)
        self.pid = self.process.pid
        if not answered:
            self.stop()
            raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.directory.cleanup()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class RedisPeer:
    url: str
    prefix: str

    def _stock_key(self, sku: int) -> str:
        return f"{self.prefix}:stock:{sku}"

    def _alloc_key(self, sku: int) -> str:
        return f"{self.prefix}:alloc:{sku}"

    def setup(self, catalogue: Catalogue) -> None:
        import redis

        client = redis.Redis.from_url(self.url)
        pipe = client.pipeline(transaction=False)
        for s in range(catalogue.stock.shape[0]):
            row = catalogue.stock[s]
            pipe.delete(self._stock_key(s), self._alloc_key(s))
            pipe.hset(self._stock_key(s), mapping={str(n): int(q) for n, q in enumerate(row)
                                                   if q > 0})
            if len(pipe) > 5000:
                pipe.execute()
        pipe.delete(f"{self.prefix}:orders")
        pipe.execute()
        client.close()

    def check(self, catalogue: Catalogue, acknowledged_units: int) -> dict[str, Any]:
        import redis

        client = redis.Redis.from_url(self.url)
        final = np.zeros_like(catalogue.stock)
        allocated = np.zeros_like(catalogue.stock)
        n_skus = catalogue.stock.shape[0]
        for start in range(0, n_skus, 2000):
            pipe = client.pipeline(transaction=False)
            for s in range(start, min(start + 2000, n_skus)):
                pipe.hgetall(self._stock_key(s))
                pipe.hgetall(self._alloc_key(s))
            replies = pipe.execute()
            for k, s in enumerate(range(start, min(start + 2000, n_skus))):
                for node, qty in replies[2 * k].items():
                    final[s, int(node)] = int(qty)
                for node, qty in replies[2 * k + 1].items():
                    allocated[s, int(node)] = int(qty)
        client.close()
        negative = int((final < 0).sum())
        not_conserved = int(((catalogue.stock - final) != allocated).sum())
        units = int(allocated.sum())
        mismatch = abs(units - acknowledged_units)
        return {"negative_cells": negative, "cells_not_conserved": not_conserved,
                "allocated_units": units, "acknowledged_units": acknowledged_units,
                "units_unaccounted": mismatch, "oversells": negative + not_conserved + mismatch,
                "units_taken": int((catalogue.stock - final).sum())}


@dataclass
class RedisTarget:
    peer: RedisPeer
    spec: WorkloadSpec
    part: int
    parts: int
    pipeline: int  # scripts per round trip
    connections: int
    prefix: str = ""

    async def open(self) -> None:
        import redis.asyncio as aioredis

        self.catalogue = build_catalogue(self.spec)
        self.feed = OrderFeed(self.catalogue, self.part, self.parts, self.prefix)
        # Calls beyond the connections wait for one (and the wait shows in the latency).
        pool = aioredis.BlockingConnectionPool.from_url(
            self.peer.url, max_connections=max(1, self.connections), timeout=None)
        self.client = aioredis.Redis(connection_pool=pool)
        self.sha = await self.client.script_load(RESERVE_LUA)
        self.orders_key = f"{self.peer.prefix}:orders"
        self.node_lists = [",".join(str(n) for n in row)
                           for row in self.catalogue.node_order.tolist()]
        self.counts: dict[str, int] = {"filled": 0, "unfilled": 0, "units": 0}

    def _args(self, block: OrderBlock, i: int) -> tuple[list[str], list[Any]]:
        lines = block.lines(i)
        keys = ([self.peer._stock_key(s) for s, _ in lines]
                + [self.peer._alloc_key(s) for s, _ in lines] + [self.orders_key])
        args: list[Any] = [len(lines), self.feed.prefix + block.order_id(i),
                           self.node_lists[int(block.region[i])]]
        args += [q for _, q in lines]
        return keys, args

    async def call(self) -> tuple[str, int]:
        import redis

        work = [self.feed.next() for _ in range(self.pipeline)]
        try:
            if self.pipeline == 1:
                keys, args = self._args(*work[0])
                replies = [await self.client.evalsha(self.sha, len(keys), *keys, *args)]
            else:
                pipe = self.client.pipeline(transaction=False)
                for block, i in work:
                    keys, args = self._args(block, i)
                    pipe.evalsha(self.sha, len(keys), *keys, *args)
                replies = await pipe.execute()
        except redis.RedisError as error:
            return type(error).__name__, 0
        for (block, i), reply in zip(work, replies, strict=True):
            if reply == 1:
                self.counts["filled"] += 1
                self.counts["units"] += int(block.quantity[i].sum())
            else:
                self.counts["unfilled"] += 1
        return OK, len(work)

    async def close(self) -> None:
        await self.client.aclose()
        await self.client.connection_pool.disconnect()

    def outcome(self) -> dict[str, int]:
        return dict(self.counts)


@dataclass(frozen=True)
class RedisFactory:
    peer: RedisPeer
    spec: WorkloadSpec
    pipeline: int
    connections: int  # per client process
    prefix: str = ""

    def __call__(self, part: int, parts: int) -> RedisTarget:
        return RedisTarget(self.peer, self.spec, part, parts, self.pipeline, self.connections,
                           self.prefix)


def unique_name(stem: str) -> str:
    return f"{stem}_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
