"""Fuzz every RPC of a running server: generated messages (from the descriptors, with
extreme numbers, NaN, control characters, unknown enum values, real and made-up ids) and
raw malformed bytes. No call may get INTERNAL or UNKNOWN, the server must stay up, and a
rejected call must leave the ledger's checksum unchanged."""

from __future__ import annotations

import math
import uuid

import grpc
import pytest
from allocd.v1 import inventory_service_pb2 as inv
from allocd.v1 import inventory_service_pb2_grpc as inv_grpc
from google.protobuf.descriptor import FieldDescriptor as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import RPC_TIMEOUT_S
from tests.e2e.test_auth_matrix import METHODS
from tests.unit.test_auth import MODULES

EXAMPLES_PER_METHOD = 180  # x ~60 RPCs: over 10,000 generated requests
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
IDS = ["SKU-1", "SKU-2", "A", "B", "web", "marketplace", "IND1", "O-1", "O-1-P1", "1", "2",
       "EX-1", "AP-1", "rma-1", "PO-1", "ground"]

INTS = st.one_of(st.integers(-3, 50), st.sampled_from([0, -1, 2**31 - 1, -(2**31), 2**31,
                                                       2**63 - 1, -(2**63)]))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, -0.0, 1.5, 1e308, math.nan, math.inf]))
TEXT = st.one_of(st.sampled_from(IDS), st.text(max_size=20),
                 st.text(alphabet=st.characters(max_codepoint=31), max_size=5),
                 st.just("x" * 300))


def _limits(field):
    if field.type in (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32):
        return -(2**31), 2**31 - 1
    if field.type in (F.TYPE_UINT32, F.TYPE_FIXED32):
        return 0, 2**32 - 1
    if field.type in (F.TYPE_UINT64, F.TYPE_FIXED64):
        return 0, 2**64 - 1
    return -(2**63), 2**63 - 1


def value_of(field, depth):
    kind = field.type
    if kind == F.TYPE_MESSAGE:
        if field.message_type.full_name == "google.protobuf.Timestamp":
            return st.builds(lambda s, n: {"seconds": s, "nanos": n},
                             st.integers(-(2**40), 2**40), st.integers(0, 999_999_999))
        return message_dict(field.message_type, depth + 1)
    if kind == F.TYPE_ENUM:
        return st.integers(-5, 40)
    if kind == F.TYPE_BOOL:
        return st.booleans()
    if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return FLOATS if kind == F.TYPE_DOUBLE else st.floats(width=32, allow_nan=True)
    if kind == F.TYPE_STRING:
        return TEXT
    if kind == F.TYPE_BYTES:
        return st.binary(max_size=30)
    low, high = _limits(field)
    return INTS.filter(lambda v: low <= v <= high)


def message_dict(descriptor, depth=0):
    if depth > 3:
        return st.just({})
    fields = {}
    for field in descriptor.fields:
        strategy = value_of(field, depth)
        if field.is_repeated:
            strategy = st.lists(strategy, max_size=4)
        fields[field.name] = strategy
    return st.fixed_dictionaries({}, optional=fields)


def build(message_class, values):
    message = message_class()
    for name, value in values.items():
        field = message.DESCRIPTOR.fields_by_name[name]
        _set(message, field, value)
    return message


def _set(message, field, value):
    if field.is_repeated:
        container = getattr(message, field.name)
        for item in value:
            if field.type == F.TYPE_MESSAGE:
                _fill(container.add(), item)
            else:
                container.append(item)
    elif field.type == F.TYPE_MESSAGE:
        _fill(getattr(message, field.name), value)
    else:
        setattr(message, field.name, value)


def _fill(message, values):
    if message.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
        message.seconds, message.nanos = values["seconds"], values["nanos"]
        return
    for name, value in values.items():
        _set(message, message.DESCRIPTOR.fields_by_name[name], value)


def _request_classes():
    classes = {}
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                full = method.input_type.full_name.split(".")[-1]
                classes[f"/{service.full_name}/{method.name}"] = getattr(module, full)
    return classes


REQUEST_CLASSES = _request_classes()


@pytest.fixture(scope="module")
def world(api, demo_world):
    """Some real ids for the generated requests to hit: a SKU with stock, an order."""
    sku = demo_world.sku()
    demo_world.stock(sku, "IND1", 20)
    IDS.extend([sku, demo_world.allocate(demo_world.order((sku, 1))).allocation.order_id])
    return api


def checksum(api):
    stub = inv_grpc.InventoryServiceStub(api.channel)
    return stub.GetLedgerSummary(inv.GetLedgerSummaryRequest(include_checksum=True),
                                 timeout=RPC_TIMEOUT_S).checksum


def invoke(channel, path, client_streaming, server_streaming, payloads):
    raw = {"request_serializer": lambda m: m, "response_deserializer": lambda b: b}
    try:
        if client_streaming:
            responses = channel.stream_stream(path, **raw)(iter(payloads),
                                                           timeout=RPC_TIMEOUT_S)
            for _ in responses:
                pass
        elif server_streaming:
            responses = channel.unary_stream(path, **raw)(payloads[0], timeout=0.5)
            next(iter(responses), None)
        else:
            channel.unary_unary(path, **raw)(payloads[0], timeout=RPC_TIMEOUT_S)
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


@pytest.mark.timeout(300)  # EXAMPLES_PER_METHOD generated calls: slow on a loaded machine
@pytest.mark.parametrize(("key", "path", "client_streaming", "server_streaming"), METHODS,
                         ids=[m[0] for m in METHODS])
def test_generated_requests_never_break_the_server(world, key, path, client_streaming,
                                                   server_streaming):
    api = world
    message_class = REQUEST_CLASSES[path]
    payload = st.one_of(
        message_dict(message_class.DESCRIPTOR).map(
            lambda values: build(message_class, values).SerializeToString()),
        st.binary(max_size=40),  # malformed bytes, sent raw
    )

    @settings(max_examples=EXAMPLES_PER_METHOD, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(payload, min_size=1, max_size=3), st.booleans())
    def run(payloads, fresh_request_id):
        if fresh_request_id:  # new ids, so mutations are not just idempotent replays
            message = message_class()
            try:
                message.ParseFromString(payloads[0])
            except Exception:
                pass
            else:
                if "request_id" in message.DESCRIPTOR.fields_by_name:
                    message.request_id = uuid.uuid4().hex
                    payloads = [message.SerializeToString(), *payloads[1:]]
        before = checksum(api)
        code, details = invoke(api.channel, path, client_streaming, server_streaming,
                               payloads)
        assert code not in FORBIDDEN, (key, code, details)
        if code not in (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED):
            assert checksum(api) == before, (key, code, details)

    run()
