"""Many clients racing for the last units: exactly the stock on hand is reserved."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from allocd.v1 import inventory_service_pb2 as inv
from allocd.v1 import inventory_service_pb2_grpc as inv_grpc

CLIENTS = 200
UNITS = 50


@pytest.mark.timeout(300)  # CLIENTS channels and threads: slow on a loaded machine
@pytest.mark.parametrize("n_nodes", [1, 5], ids=["one-node", "five-nodes"])
def test_concurrent_clients_reserve_exactly_the_units_available(api, n_nodes):
    cat = api.seed(n_nodes=n_nodes, n_skus=1)
    sku = cat.skus[0]
    per_node = UNITS // n_nodes
    for node in cat.nodes:
        api.receive(sku, node, per_node)
    barrier = threading.Barrier(CLIENTS)

    def client(i: int) -> tuple[str, grpc.StatusCode]:
        node = cat.nodes[i % n_nodes]
        with grpc.insecure_channel(api.target) as channel:
            grpc.channel_ready_future(channel).result(timeout=20)
            stub = inv_grpc.InventoryServiceStub(channel)
            request = inv.ReserveInventoryRequest(request_id=api.rid(), lines=[
                inv.ReservationLine(sku_id=sku, node_id=node, quantity=1)])
            barrier.wait(timeout=30)
            try:
                stub.ReserveInventory(request, timeout=30)
            except grpc.RpcError as error:
                return node, error.code()
            return node, grpc.StatusCode.OK

    with ThreadPoolExecutor(CLIENTS) as pool:
        outcomes = list(pool.map(client, range(CLIENTS)))

    codes = Counter(code for _, code in outcomes)
    assert codes == {grpc.StatusCode.OK: UNITS,
                     grpc.StatusCode.FAILED_PRECONDITION: CLIENTS - UNITS}
    won = Counter(node for node, code in outcomes if code == grpc.StatusCode.OK)
    assert won == dict.fromkeys(cat.nodes, per_node)
    levels = api.inventory.GetStockLevels(inv.GetStockLevelsRequest(
        sku_ids=[sku], node_ids=cat.nodes)).levels
    assert [(lv.available, lv.reserved) for lv in levels] == [(0, per_node)] * n_nodes
    assert api.sellable(sku, cat.nodes) == 0
