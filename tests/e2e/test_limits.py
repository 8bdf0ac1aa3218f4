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


def test_a_stream_s_messages_are_held_to_the_caller_s_rate(server_factory):
    """Each message after the first takes a token as a call does: a stream went through at
    any rate while calls were held to it. Over its rate a stream is slowed, not ended."""
    import time

    api = server_factory(rate_limit_per_s=20.0, rate_limit_burst=2.0)
    stub = dgrpc.DiagnosticsServiceStub(api.channel)
    started = time.monotonic()
    answers = list(stub.EchoStream(iter([dpb.EchoStreamRequest(payload=b"x")] * 22),
                                   timeout=30))
    took = time.monotonic() - started
    assert len(answers) == 22
    # The call's token and one more of the burst; the other 20 come at 20 a second.
    assert took >= 0.9, took


def test_without_authentication_a_caller_is_its_address_whatever_its_connection():
    from types import SimpleNamespace

    from service.limits import caller_key

    def peer(text: str) -> SimpleNamespace:
        return SimpleNamespace(peer=lambda: text)

    assert caller_key(peer("ipv4:10.0.0.7:51000")) == caller_key(peer("ipv4:10.0.0.7:51001"))
    assert caller_key(peer("ipv6:[::1]:40000")) == "ipv6:[::1]"
    assert caller_key(peer("ipv4:10.0.0.7:1")) != caller_key(peer("ipv4:10.0.0.8:1"))


def test_the_table_of_buckets_forgets_callers_whose_buckets_filled_up_again():
    now = [0.0]
    bucket = TokenBucket(rate_per_s=10.0, burst=2.0, clock=lambda: now[0])
    for i in range(5000):
        bucket.take(f"caller-{i}")
        now[0] += 0.001
    assert len(bucket) < 2500  # the oldest, full again, were dropped as it grew
    now[0] += 1.0
    assert bucket.take("caller-4999") == 0.0 and bucket.take("caller-4999") == 0.0
