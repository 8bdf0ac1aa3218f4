"""TLS and mutual TLS: the right certificates connect, the wrong ones do not; plaintext
is refused off loopback."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import time
import urllib.error
import urllib.request

import grpc
import pytest
from allocd.v1 import diagnostics_service_pb2 as dpb
from allocd.v1 import diagnostics_service_pb2_grpc as dgrpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from service.healthcheck import check
from service.server import check_metrics_transport, server_credentials
from tests.e2e.conftest import RPC_TIMEOUT_S, ServerThread, e2e_settings


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject, key, issuer=None, issuer_key=None, ca=False, server=False):
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                          issuer or subject)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem(obj):
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca = _cert("allocd test CA", ca_key, ca=True)
    server_key = _key()
    server = _cert("localhost", server_key, "allocd test CA", ca_key, server=True)
    client_key = _key()
    client = _cert("oms-client", client_key, "allocd test CA", ca_key)
    other_key = _key()
    other_ca = _cert("someone else", other_key, ca=True)
    files = {}
    for name, obj in (("ca.pem", ca), ("server.pem", server), ("server.key", server_key),
                      ("client.pem", client), ("client.key", client_key),
                      ("other-ca.pem", other_ca)):
        (root / name).write_bytes(_pem(obj))
        files[name] = root / name
    return files


def _serve(settings):
    handle = ServerThread(settings)
    handle.thread.start()
    future = asyncio.run_coroutine_threadsafe(handle._start(), handle.loop)
    handle.port = future.result(timeout=60)
    return handle


def _echo(channel):
    return dgrpc.DiagnosticsServiceStub(channel).Echo(dpb.EchoRequest(payload=b"hi"),
                                                      timeout=RPC_TIMEOUT_S).payload


def test_tls_connects_with_the_ca_and_not_in_plaintext(pki):
    handle = _serve(e2e_settings(tls_cert_file=str(pki["server.pem"]),
                                 tls_key_file=str(pki["server.key"])))
    try:
        address = f"127.0.0.1:{handle.port}"
        trusted = grpc.ssl_channel_credentials(pki["ca.pem"].read_bytes())
        with grpc.secure_channel(address, trusted) as channel:
            assert _echo(channel) == b"hi"
        assert check(address, ca_file=str(pki["ca.pem"]))
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError):
            _echo(channel)
        untrusted = grpc.ssl_channel_credentials(pki["other-ca.pem"].read_bytes())
        with grpc.secure_channel(address, untrusted) as channel, pytest.raises(grpc.RpcError):
            _echo(channel)
    finally:
        handle.stop()


def test_mutual_tls_needs_a_client_certificate_the_ca_signed(pki):
    handle = _serve(e2e_settings(tls_cert_file=str(pki["server.pem"]),
                                 tls_key_file=str(pki["server.key"]),
                                 tls_client_ca_file=str(pki["ca.pem"])))
    try:
        address = f"127.0.0.1:{handle.port}"
        with_cert = grpc.ssl_channel_credentials(
            pki["ca.pem"].read_bytes(), private_key=pki["client.key"].read_bytes(),
            certificate_chain=pki["client.pem"].read_bytes())
        with grpc.secure_channel(address, with_cert) as channel:
            assert _echo(channel) == b"hi"
        without = grpc.ssl_channel_credentials(pki["ca.pem"].read_bytes())
        with grpc.secure_channel(address, without) as channel, pytest.raises(grpc.RpcError):
            _echo(channel)
    finally:
        handle.stop()


def test_plaintext_is_refused_off_loopback_unless_allowed():
    with pytest.raises(ValueError, match="refusing plaintext"):
        server_credentials(e2e_settings(host="0.0.0.0"))
    assert server_credentials(e2e_settings(host="0.0.0.0", allow_plaintext=True)) is None
    assert server_credentials(e2e_settings(host="127.0.0.1")) is None


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(url, context=None):
    return urllib.request.urlopen(url, timeout=10, context=context).read().decode()


def test_metrics_are_served_over_https_when_tls_is_configured(pki):
    port = _free_port()
    handle = _serve(e2e_settings(tls_cert_file=str(pki["server.pem"]),
                                 tls_key_file=str(pki["server.key"]), metrics_port=port))
    try:
        trusted = ssl.create_default_context(cafile=str(pki["ca.pem"]))
        assert "allocd_store_writable 1.0" in _scrape(f"https://127.0.0.1:{port}/metrics",
                                                      trusted)
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            _scrape(f"http://127.0.0.1:{port}/metrics")
        untrusted = ssl.create_default_context(cafile=str(pki["other-ca.pem"]))
        with pytest.raises(urllib.error.URLError):
            _scrape(f"https://127.0.0.1:{port}/metrics", untrusted)
    finally:
        handle.stop()


def test_a_client_that_connects_and_says_nothing_holds_up_no_scrape(pki):
    """The TLS handshake ran on accept, in the one thread that accepts: a connection that
    sent nothing stopped every scrape behind it (monitoring down, no certificate needed)."""
    port = _free_port()
    handle = _serve(e2e_settings(tls_cert_file=str(pki["server.pem"]),
                                 tls_key_file=str(pki["server.key"]), metrics_port=port))
    try:
        trusted = ssl.create_default_context(cafile=str(pki["ca.pem"]))
        with socket.create_connection(("127.0.0.1", port)):
            time.sleep(0.2)  # accepted, its handshake waiting for bytes that never come
            assert "allocd_store_writable" in _scrape(f"https://127.0.0.1:{port}/metrics",
                                                      trusted)
    finally:
        handle.stop()


def test_metrics_under_mutual_tls_need_a_client_certificate(pki):
    port = _free_port()
    handle = _serve(e2e_settings(tls_cert_file=str(pki["server.pem"]),
                                 tls_key_file=str(pki["server.key"]),
                                 tls_client_ca_file=str(pki["ca.pem"]), metrics_port=port))
    try:
        url = f"https://127.0.0.1:{port}/metrics"
        with_cert = ssl.create_default_context(cafile=str(pki["ca.pem"]))
        with_cert.load_cert_chain(str(pki["client.pem"]), str(pki["client.key"]))
        assert "allocd_store_writable 1.0" in _scrape(url, with_cert)
        without = ssl.create_default_context(cafile=str(pki["ca.pem"]))
        with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
            _scrape(url, without)
    finally:
        handle.stop()


def test_plaintext_metrics_are_refused_off_loopback_unless_allowed():
    with pytest.raises(ValueError, match="refusing plaintext metrics"):
        check_metrics_transport(e2e_settings(metrics_host="0.0.0.0", metrics_port=9464))
    check_metrics_transport(e2e_settings(metrics_host="0.0.0.0", metrics_port=9464,
                                         allow_plaintext=True))
    check_metrics_transport(e2e_settings(metrics_host="127.0.0.1", metrics_port=9464))
    check_metrics_transport(e2e_settings(metrics_host="0.0.0.0", metrics_port=0))


def test_the_command_line_revokes_a_token_over_mutual_tls_and_never_sends_one_in_plaintext(
        pki, capsys):
    """`allocd token revoke` (and `allocd reopt`) spoke plaintext only: it could not reach a
    TLS server, and sent the admin token in the clear to whatever answered."""
    from service.auth import issue_token
    from service.cli import main

    secret = "tls-cli-secret-0123456789abcdef"
    handle = _serve(e2e_settings(tls_cert_file=str(pki["server.pem"]),
                                 tls_key_file=str(pki["server.key"]),
                                 tls_client_ca_file=str(pki["ca.pem"]),
                                 auth="token", auth_secret=secret))
    try:
        admin, _ = issue_token(secret.encode(), "ops", ["admin"], 600, int(time.time()))
        _, leaked = issue_token(secret.encode(), "oms-1", ["oms"], 600, int(time.time()))
        tls = ["--ca-file", str(pki["ca.pem"]), "--cert-file", str(pki["client.pem"]),
               "--key-file", str(pki["client.key"])]
        assert main(["token", "revoke", "--token-id", leaked, "--admin-token", admin,
                     "--address", f"localhost:{handle.port}", *tls]) == 0
        assert f"revoked {leaked}" in capsys.readouterr().out
        assert leaked in handle.server.engine.ledger.revoked_tokens
        for command in (["token", "revoke", "--token-id", leaked, "--admin-token", admin],
                        ["reopt", "--token", admin]):
            assert main([*command, "--address", "192.0.2.1:50051"]) == 2
            assert "refusing to send a token in plaintext" in capsys.readouterr().err
    finally:
        handle.stop()


def test_loopback_is_read_from_the_host_not_matched_by_its_start():
    """A host that only starts like loopback (localhost.example.com, 127.0.0.1.nip.io) is
    not: the server served plaintext on it, and the command line sent a token to it."""
    from service.healthcheck import is_loopback

    for address in ("127.0.0.1:50051", "localhost:50051", "[::1]:50051", "::1", "127.9.9.9",
                    "localhost"):
        assert is_loopback(address), address
    for address in ("localhost.attacker.example:50051", "127.0.0.1.nip.io:50051",
                    "10.0.0.5:50051", "0.0.0.0", "[::]:50051", "example.com"):
        assert not is_loopback(address), address
    with pytest.raises(ValueError, match="refusing plaintext"):
        server_credentials(e2e_settings(host="localhost.attacker.example"))
