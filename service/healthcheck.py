"""`allocd health`: exit 0 when the server reports SERVING (for container health checks)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", timeout_s: float = 3.0,
          ca_file: str = "") -> bool:
    if ca_file:
        with open(ca_file, "rb") as fh:
            credentials = grpc.ssl_channel_credentials(root_certificates=fh.read())
        channel = grpc.secure_channel(address, credentials)
    else:
        channel = grpc.insecure_channel(address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
