"""`allocd health`: exit 0 when the server reports SERVING (for container health checks)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc


def is_loopback(address: str) -> bool:
    """Whether a host:port (or [v6]:port, or a bare host) names this machine: localhost, or
    a loopback IP address. Read, not matched by its start (127.0.0.1.example.com is not)."""
    import ipaddress  # noqa: PLC0415

    host = address
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def client_channel(address: str, ca_file: str = "", cert_file: str = "", key_file: str = "",
                   allow_plaintext: bool = False, carries_token: bool = False) -> grpc.Channel:
    """A channel for the command line: TLS when given the server's CA (and, for mutual
    TLS, this client's certificate and key); plaintext otherwise. A bearer token is not
    sent in plaintext off loopback unless `allow_plaintext` says so (anything answering
    there would receive it)."""
    import grpc  # noqa: PLC0415 (the command line loads gRPC only when it is used)

    if ca_file:
        with open(ca_file, "rb") as fh:
            root = fh.read()
        cert = key = None
        if cert_file:
            with open(cert_file, "rb") as fh:
                cert = fh.read()
            with open(key_file or cert_file, "rb") as fh:
                key = fh.read()
        credentials = grpc.ssl_channel_credentials(root_certificates=root, private_key=key,
                                                   certificate_chain=cert)
        return grpc.secure_channel(address, credentials)
    if carries_token and not is_loopback(address) and not allow_plaintext:
        raise ValueError(f"refusing to send a token in plaintext to {address}: give the "
                         "server's CA (--ca-file), or --allow-plaintext")
    return grpc.insecure_channel(address)


def add_tls_arguments(parser: Any) -> None:
    parser.add_argument("--ca-file", default="", help="CA certificate, for a TLS server")
    parser.add_argument("--cert-file", default="",
                        help="this client's certificate, for a server asking for one")
    parser.add_argument("--key-file", default="", help="this client's key")
    parser.add_argument("--allow-plaintext", action="store_true",
                        help="send the token in plaintext to an address off loopback")


def check(address: str, service: str = "", timeout_s: float = 3.0,
          ca_file: str = "", cert_file: str = "", key_file: str = "") -> bool:
    import grpc  # noqa: PLC0415
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415

    with client_channel(address, ca_file, cert_file, key_file) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
