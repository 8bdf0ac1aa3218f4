"""The load harness's PostgreSQL and Redis peers, really run: on a small, contended order
stream (few SKUs, little stock, many callers) neither may oversell, and the check after
the run finds a deliberate oversell."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.load.driver import LoadShape, drive, merge
from bench.load.peers import PgFactory, PgPeer, RedisFactory, RedisPeer, unique_name
from bench.load.workload import WorkloadSpec, build_catalogue
from tests.integration.conftest import RedisServer

PG_DSN = "host=127.0.0.1 user=postgres dbname=test connect_timeout=5"
# 12 SKUs on 3 nodes with 1..4 units each: the stream sells out early and then keeps
# fighting over the last units.
CONTENDED = WorkloadSpec(seed=5, skus=12, nodes=3, regions=4, min_lines=1, max_lines=3,
                         max_quantity=2, stock_presence=0.8, stock_max=4,
                         popular_stock_units=0, block_size=64)
SHAPE = LoadShape(loop="closed", concurrency=12, count=400, warmup=0)


def _postgres_reachable() -> bool:
    import psycopg

    try:
        psycopg.connect(PG_DSN).close()
        return True
    except psycopg.Error:
        return False


@pytest.fixture(scope="module")
def postgres() -> str:
    """The machine's PostgreSQL (started if it is installed but down)."""
    if not _postgres_reachable() and shutil.which("pg_ctlcluster"):
        versions = sorted(p.name for p in Path("/etc/postgresql").glob("*"))
        if versions:
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1],
                            "main", "start"], check=False, capture_output=True, timeout=60)
    if not _postgres_reachable():
        pytest.fail("PostgreSQL is not reachable at 127.0.0.1:5432 (user postgres, database "
                    "test): the PostgreSQL peer tests need it; start it with "
                    "pg_ctlcluster --skip-systemctl-redirect <version> main start")
    return PG_DSN


@pytest.fixture
def pg_peer(postgres: str) -> Iterator[PgPeer]:
    peer = PgPeer(postgres, unique_name("allocd_load_test"))
    peer.setup(build_catalogue(CONTENDED))
    try:
        yield peer
    finally:
        peer.drop()


def _run(factory, parts: int = 2) -> dict:
    """`parts` client processes' shares, each driven in turn in this process (their calls
    interleave within a share; the shares see the stock the earlier ones left)."""
    async def both() -> list[dict]:
        return list(await asyncio.gather(*(
            drive(factory(part, parts), SHAPE.share(part)) for part in range(parts))))

    return merge(asyncio.run(both()))


def test_postgres_peer_never_oversells_a_contended_stream(pg_peer: PgPeer) -> None:
    result = _run(PgFactory(pg_peer, CONTENDED, connections=6))
    assert result["errors"] == {}
    outcome = result["outcome"]
    assert outcome["filled"] > 20 and outcome["unfilled"] > 100  # it did sell out
    check = pg_peer.check(outcome["units"])
    assert check["oversells"] == 0, check
    assert check["units_taken"] == outcome["units"] == check["allocated_units"]
    catalogue = build_catalogue(CONTENDED)
    assert check["units_taken"] > 0.8 * catalogue.stock.sum()


def test_postgres_check_finds_an_oversell(pg_peer: PgPeer) -> None:
    import psycopg

    with psycopg.connect(pg_peer.dsn, autocommit=True) as conn:
        conn.execute(f"UPDATE {pg_peer.schema}.stock SET qty = -1 "
                     f"WHERE (sku, node) = (SELECT sku, node FROM {pg_peer.schema}.stock "
                     "LIMIT 1)")
    check = pg_peer.check(0)
    assert check["negative_cells"] == 1 and check["oversells"] >= 1


@pytest.fixture
def redis_peer(redis_server: RedisServer) -> RedisPeer:
    peer = RedisPeer(redis_server.url, unique_name("load_test"))
    peer.setup(build_catalogue(CONTENDED))
    return peer


@pytest.mark.parametrize("pipeline", [1, 8])
def test_redis_peer_never_oversells_a_contended_stream(redis_peer: RedisPeer,
                                                       pipeline: int) -> None:
    catalogue = build_catalogue(CONTENDED)
    result = _run(RedisFactory(redis_peer, CONTENDED, pipeline, connections=4))
    assert result["errors"] == {}
    assert result["orders"] == SHAPE.count * pipeline
    outcome = result["outcome"]
    assert outcome["filled"] > 20 and outcome["unfilled"] > 100
    check = redis_peer.check(catalogue, outcome["units"])
    assert check["oversells"] == 0, check
    assert check["units_taken"] == outcome["units"]
    assert check["units_taken"] > 0.8 * catalogue.stock.sum()


def test_redis_check_finds_an_oversell(redis_peer: RedisPeer) -> None:
    import redis

    catalogue = build_catalogue(CONTENDED)
    client = redis.Redis.from_url(redis_peer.url)
    sku = int(catalogue.stock.sum(axis=1).argmax())
    node = int(catalogue.stock[sku].argmax())
    client.hincrby(redis_peer._stock_key(sku), str(node), -1)  # a unit gone, no record
    client.close()
    check = redis_peer.check(catalogue, 0)
    assert check["cells_not_conserved"] == 1 and check["oversells"] == 1
