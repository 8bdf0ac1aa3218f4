"""Tokens and the policy table."""

from __future__ import annotations

import pytest
from allocd.v1 import (
    access_service_pb2,
    catalog_service_pb2,
    diagnostics_service_pb2,
    finance_service_pb2,
    inventory_service_pb2,
    network_service_pb2,
    operations_service_pb2,
    order_service_pb2,
    returns_service_pb2,
)

from service.auth import POLICY, ROLES, AuthError, issue_token, method_key, verify_token

SECRET = b"0123456789abcdef0123456789abcdef"
NOW = 1_800_000_000
MODULES = (access_service_pb2, catalog_service_pb2, diagnostics_service_pb2,
           finance_service_pb2, inventory_service_pb2, network_service_pb2,
           order_service_pb2, returns_service_pb2, operations_service_pb2)


def all_methods() -> list[str]:
    return [f"{service.name}/{method.name}" for module in MODULES
            for service in module.DESCRIPTOR.services_by_name.values()
            for method in service.methods]


def test_every_rpc_has_a_rule_and_every_rule_an_rpc():
    assert sorted(all_methods()) == sorted(POLICY)
    assert all(roles <= ROLES and roles for roles in POLICY.values())


def test_a_token_carries_its_principal_and_roles_until_it_expires():
    token, token_id = issue_token(SECRET, "oms-prod", ["oms"], 60, NOW)
    identity = verify_token(SECRET, token, NOW + 59)
    assert (identity.principal, identity.roles, identity.token_id) == (
        "oms-prod", frozenset({"oms"}), token_id)
    with pytest.raises(AuthError, match="expired"):
        verify_token(SECRET, token, NOW + 60)


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature
    lambda t: ".".join([t.split(".")[0], t.split(".")[1][::-1], t.split(".")[2]]),  # claims
    lambda t: "not-a-token",
    lambda t: t + ".extra",
])
def test_a_changed_or_malformed_token_is_refused(mangle):
    token, _ = issue_token(SECRET, "p", ["admin"], 60, NOW)
    with pytest.raises(AuthError):
        verify_token(SECRET, mangle(token), NOW)


def test_a_token_signed_with_another_secret_or_revoked_is_refused():
    token, token_id = issue_token(SECRET, "p", ["admin"], 60, NOW)
    with pytest.raises(AuthError, match="signature"):
        verify_token(b"another-secret-of-enough-length", token, NOW)
    with pytest.raises(AuthError, match="revoked"):
        verify_token(SECRET, token, NOW, revoked={token_id})


def test_unknown_roles_are_not_issued():
    with pytest.raises(ValueError, match="unknown roles"):
        issue_token(SECRET, "p", ["superuser"], 60, NOW)


def test_the_policy_says_what_each_role_is_for():
    """The duties, as the operators know them."""
    def may(role: str, method: str) -> bool:
        return role in POLICY[method]

    assert may("oms", "OrderService/AllocateOrder") and may("oms", "OrderService/CancelOrder")
    assert may("oms", "OrderService/QuotePromise")
    assert not may("oms", "OrderService/ConfirmShipment")
    for step in ("ReleaseWave", "ConfirmPick", "ConfirmPack", "ConfirmShipment"):
        assert may("warehouse", f"OrderService/{step}")
        assert not may("customer_service", f"OrderService/{step}")
    assert may("warehouse", "InventoryService/SubmitCycleCount")
    assert may("customer_service", "ReturnsService/CreateReturn")
    assert not may("customer_service", "FinanceService/AllocateLandedCost")
    assert may("finance", "ReturnsService/DecideApproval")
    assert may("admin", "NetworkService/SetNetwork")
    assert not any(may(r, "NetworkService/SetNetwork") for r in ROLES - {"admin"})
    assert method_key("/allocd.v1.InventoryService/GetAvailability") == \
        "InventoryService/GetAvailability"


def test_json_logs_carry_the_request_id():
    import json
    import logging

    from service.logs import REQUEST_ID, JsonFormatter

    REQUEST_ID.set("req-42")
    record = logging.LogRecord("allocd.engine", logging.INFO, __file__, 1, "writes paused: %s",
                               ("store down",), None)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["request_id"] == "req-42" and entry["message"] == "writes paused: store down"
    assert entry["level"] == "info" and entry["logger"] == "allocd.engine"
