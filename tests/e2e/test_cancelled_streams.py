"""Streams a client abandons do not take the server down. A mutating server-streaming
call (Reoptimize) was audited as its handler closed, after the call had ended: reading
the ended call's peer then touched freed memory, and a few dozen abandoned calls ended
the process (a segmentation fault). The server runs in a child process here, so that
such a crash fails the test rather than the test run."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from .test_cli_process import ROOT

pytestmark = pytest.mark.timeout(300)

CHILD = textwrap.dedent("""
    import gc, sys, uuid
    import grpc
    from allocd.v1 import order_service_pb2 as pb
    from tests.e2e.conftest import ServerThread, e2e_settings

    server = ServerThread(e2e_settings(demo=True, demo_skus=50))
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_stream("/allocd.v1.OrderService/Reoptimize",
                                request_serializer=pb.ReoptimizeRequest.SerializeToString,
                                response_deserializer=lambda b: b)
    for i in range(150):
        responses = call(pb.ReoptimizeRequest(request_id=f"r{uuid.uuid4()}"), timeout=0.5)
        try:
            next(iter(responses), None)  # the first answer, then the call is dropped
        except grpc.RpcError:
            pass
        del responses
        if i % 20 == 0:
            gc.collect()
    print("answered", flush=True)
    server.stop()
""")


def test_abandoned_reoptimize_streams_leave_the_server_running():
    child = subprocess.run([sys.executable, "-c", CHILD], check=False, cwd=ROOT,
                           capture_output=True,
                           text=True, timeout=240)
    assert child.returncode == 0, (child.returncode, child.stderr[-3000:])
    assert "answered" in child.stdout
