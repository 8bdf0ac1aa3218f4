"""Every RPC x every role (and no token, expired, revoked, forged) against a real server
with authentication on: the status each must get."""

from __future__ import annotations

import time

import grpc
import pytest
from allocd.v1 import access_service_pb2 as apb
from allocd.v1 import access_service_pb2_grpc as agrpc

from service.auth import POLICY, ROLES, issue_token
from tests.e2e.conftest import RPC_TIMEOUT_S, e2e_settings, rid, start_server
from tests.unit.test_auth import MODULES

SECRET = "matrix-secret-0123456789abcdef"
DENIED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


def _methods():
    """(service/method, full path, client streaming, server streaming)."""
    found = []
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found.append((f"{service.name}/{method.name}",
                              f"/{service.full_name}/{method.name}",
                              method.client_streaming, method.server_streaming))
    return found


METHODS = _methods()


@pytest.fixture(scope="module")
def secured():
    settings = e2e_settings(auth="token", auth_secret=SECRET)
    with start_server(settings) as port:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        yield channel
        channel.close()


def token(roles, ttl=600, secret=SECRET, now=None):
    value, token_id = issue_token(secret.encode(), f"p-{'-'.join(roles)}", roles, ttl,
                                  int(now or time.time()))
    return value, token_id


def call(channel, path, client_streaming, server_streaming, bearer):
    """The status of calling `path` with an empty request; OK if it answered."""
    metadata = (("authorization", f"Bearer {bearer}"),) if bearer is not None else ()
    raw = {"request_serializer": lambda m: m, "response_deserializer": lambda b: b}
    try:
        if client_streaming:
            responses = channel.stream_stream(path, **raw)(
                iter([b""]), metadata=metadata, timeout=RPC_TIMEOUT_S)
            next(iter(responses), None)
        elif server_streaming:
            responses = channel.unary_stream(path, **raw)(b"", metadata=metadata, timeout=1.0)
            next(iter(responses), None)
        else:
            channel.unary_unary(path, **raw)(b"", metadata=metadata, timeout=RPC_TIMEOUT_S)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("role", sorted(ROLES))
def test_each_role_reaches_exactly_the_methods_the_policy_gives_it(secured, role):
    bearer, _ = token([role])
    for key, path, client_streaming, server_streaming in METHODS:
        code = call(secured, path, client_streaming, server_streaming, bearer)
        if role in POLICY[key]:
            assert code not in DENIED, (role, key, code)  # may still be INVALID_ARGUMENT
        else:
            assert code == grpc.StatusCode.PERMISSION_DENIED, (role, key, code)


def test_no_token_an_expired_a_forged_or_a_revoked_one_is_unauthenticated(secured):
    admin, _ = token(["admin"])
    expired, _ = token(["admin"], ttl=1, now=time.time() - 10)
    forged, _ = token(["admin"], secret="someone-elses-secret-0123456789")
    revoked, revoked_id = token(["admin"])
    agrpc.AccessServiceStub(secured).RevokeToken(
        apb.RevokeTokenRequest(request_id=rid(), token_id=revoked_id),
        metadata=(("authorization", f"Bearer {admin}"),), timeout=RPC_TIMEOUT_S)
    for bearer in (None, "", "garbage", expired, forged, revoked):
        for _, path, client_streaming, server_streaming in METHODS:
            code = call(secured, path, client_streaming, server_streaming, bearer)
            assert code == grpc.StatusCode.UNAUTHENTICATED, (bearer and bearer[:12], path, code)


def test_health_and_reflection_need_no_token(secured):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    status = health_pb2_grpc.HealthStub(secured).Check(health_pb2.HealthCheckRequest(),
                                                       timeout=RPC_TIMEOUT_S).status
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_approvals_use_the_authenticated_identity_not_the_metadata(secured):
    """With authentication on, x-allocd-actor/x-allocd-role metadata proves nothing."""
    from allocd.v1 import returns_service_pb2 as rpb
    from allocd.v1 import returns_service_pb2_grpc as rgrpc

    clerk, _ = token(["customer_service"])
    stub = rgrpc.ReturnsServiceStub(secured)
    with pytest.raises(grpc.RpcError) as refused:
        stub.SetReturnPolicy(rpb.SetReturnPolicyRequest(
            request_id=rid(), policy=rpb.ReturnPolicy(window_days=7)),
            metadata=(("authorization", f"Bearer {clerk}"), ("x-allocd-role", "finance")),
            timeout=RPC_TIMEOUT_S)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_get_kpis_shows_the_reconciliation_only_to_the_roles_that_may_reconcile(secured):
    """GetKpis is for every role; its include_reconciliation only for the roles of
    FinanceService/GetReconciliation."""
    from allocd.v1 import operations_service_pb2 as ops
    from allocd.v1 import operations_service_pb2_grpc as ops_grpc

    stub = ops_grpc.OperationsServiceStub(secured)
    allowed = POLICY["FinanceService/GetReconciliation"]
    assert "finance" in allowed and "oms" not in allowed
    for role in sorted(ROLES):
        bearer = (("authorization", f"Bearer {token([role])[0]}"),)
        plain = stub.GetKpis(ops.GetKpisRequest(names=["fill_rate"]), metadata=bearer,
                             timeout=RPC_TIMEOUT_S)
        assert not plain.HasField("reconciliation"), role
        request = ops.GetKpisRequest(names=["fill_rate"], include_reconciliation=True)
        if role in allowed:
            answer = stub.GetKpis(request, metadata=bearer, timeout=RPC_TIMEOUT_S)
            assert answer.HasField("reconciliation") and answer.reconciliation.reconciled
            continue
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetKpis(request, metadata=bearer, timeout=RPC_TIMEOUT_S)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, role
        assert "include_reconciliation" in (refused.value.details() or "")


def test_an_exception_is_resolved_only_by_its_owner_role_or_a_supervisor():
    """A fraud hold is released by fraud review (or operations, or admin): not by the
    warehouse, and not by customer service, whatever metadata they add."""
    from allocd.v1 import order_service_pb2 as opb
    from allocd.v1 import order_service_pb2_grpc as ogrpc

    settings = e2e_settings(auth="token", auth_secret=SECRET, demo=True, demo_skus=50)
    with start_server(settings) as port, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        orders = ogrpc.OrderServiceStub(channel)

        def bearer(*roles: str) -> tuple[tuple[str, str], ...]:
            return (("authorization", f"Bearer {token(list(roles))[0]}"),
                    ("x-allocd-role", "admin"))

        risky = opb.Order(order_id="RISKY-1", channel_id="web", fraud_score=0.95,
                          ship_to=opb.ShipTo(postal_code="10001"),
                          lines=[opb.OrderLine(sku_id="SKU-000001", quantity=1)])
        held = orders.AllocateOrder(opb.AllocateOrderRequest(request_id=rid(), order=risky),
                                    metadata=bearer("oms"), timeout=RPC_TIMEOUT_S).allocation
        assert held.exception_type == opb.EXCEPTION_TYPE_FRAUD_REVIEW
        for roles in (["warehouse"], ["customer_service", "finance"]):
            with pytest.raises(grpc.RpcError) as refused:
                orders.ResolveException(opb.ResolveExceptionRequest(
                    request_id=rid(), exception_id=held.exception_id,
                    resolution=opb.RESOLUTION_RELEASE), metadata=bearer(*roles),
                    timeout=RPC_TIMEOUT_S)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, roles
            assert "fraud_review" in (refused.value.details() or "")
            still = orders.GetOrder(opb.GetOrderRequest(order_id="RISKY-1"),
                                    metadata=bearer("oms"), timeout=RPC_TIMEOUT_S).allocation
            assert still.status == opb.ORDER_STATUS_HELD, roles
        orders.ResolveException(opb.ResolveExceptionRequest(
            request_id=rid(), exception_id=held.exception_id,
            resolution=opb.RESOLUTION_RELEASE), metadata=bearer("fraud_review"),
            timeout=RPC_TIMEOUT_S)
        released = orders.GetOrder(opb.GetOrderRequest(order_id="RISKY-1"),
                                   metadata=bearer("oms"), timeout=RPC_TIMEOUT_S).allocation
        assert released.status == opb.ORDER_STATUS_ALLOCATED


def test_a_stream_open_when_its_token_is_revoked_or_expires_stops_at_its_next_message(
        secured):
    """A token is checked again at each message of a stream: revoking a leaked token, or
    its expiry, stops a stream already open, which otherwise went on changing state."""
    import queue

    from allocd.v1 import order_service_pb2 as opb
    from allocd.v1 import order_service_pb2_grpc as ogrpc

    admin, _ = token(["admin"])
    access = agrpc.AccessServiceStub(secured)
    for end in ("revoke", "expire"):
        # Each token is issued right before its stream opens: the short-lived one must
        # still be valid at the stream's first message, however long the revoke pass took.
        issued_s = int(time.time())
        ttl_s = 600 if end == "revoke" else 5
        value, token_id = token(["oms"], ttl=ttl_s, now=issued_s)
        outbox: queue.Queue = queue.Queue()
        stream = ogrpc.OrderServiceStub(secured).AllocateStream(
            iter(outbox.get, None), metadata=(("authorization", f"Bearer {value}"),),
            timeout=30)

        def send(outbox: queue.Queue, n: int) -> None:
            outbox.put(opb.AllocateStreamRequest(request_id=rid(), order=opb.Order(
                order_id=f"o-{n}-{rid()}", channel_id="web",
                ship_to=opb.ShipTo(postal_code="10001"),
                lines=[opb.OrderLine(line_id="1", sku_id="NO-SUCH-SKU", quantity=1)])))

        send(outbox, 0)
        assert next(stream).request_id  # answered (a refusal, in band: the stream is open)
        if end == "revoke":
            access.RevokeToken(apb.RevokeTokenRequest(request_id=rid(), token_id=token_id),
                               metadata=(("authorization", f"Bearer {admin}"),),
                               timeout=RPC_TIMEOUT_S)
        else:  # until the token has expired (at issued_s + ttl_s, in whole seconds)
            time.sleep(max(0.0, issued_s + ttl_s + 0.5 - time.time()))
        send(outbox, 1)
        with pytest.raises(grpc.RpcError) as stopped:
            next(stream)
        assert stopped.value.code() == grpc.StatusCode.UNAUTHENTICATED, stopped.value
        assert f"token {end}d" in stopped.value.details()
        outbox.put(None)
