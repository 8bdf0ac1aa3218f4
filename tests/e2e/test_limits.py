"""Per-caller rate limits and their retry advice."""

from __future__ import annotations

import grpc
from allocd.v1 import diagnostics_service_pb2 as dpb
from allocd.v1 import diagnostics_service_pb2_grpc as dgrpc

from service.limits import TokenBucket
from tests.e2e.conftest import RPC_TIMEOUT_S


def test_a_bucket_lets_a_burst_through_then_refills_at_its_rate():
    now = [0.0]
    bucket = TokenBucket(rate_per_s=2.0, burst=3.0, clock=lambda: now[0])
    assert [bucket.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take("a") == 0.5  # one token comes back in half a second
    assert bucket.take("b") == 0.0  # another caller has its own bucket
    now[0] = 0.5
    assert bucket.take("a") == 0.0


def test_a_caller_over_its_rate_gets_resource_exhausted_with_retry_advice(server_factory):
    api = server_factory(rate_limit_per_s=2.0, rate_limit_burst=3.0)
    stub = dgrpc.DiagnosticsServiceStub(api.channel)
    codes, advice = [], []
    for _ in range(8):
        try:
            stub.Echo(dpb.EchoRequest(payload=b"x"), timeout=RPC_TIMEOUT_S)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            codes.append(error.code())
            advice.extend(v for k, v in (error.trailing_metadata() or ())
                          if k == "retry-after-ms")
    assert codes[:3] == [grpc.StatusCode.OK] * 3
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert advice and all(int(v) > 0 for v in advice)
